//! Readings of `/proc`: resident memory and CPU time of a process.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`), 100 on every
/// Linux architecture this runs on.
const USER_HZ: f64 = 100.0;

/// `VmRSS` of `pid` (or `"self"`) in KiB, if the process exists.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Memory of the whole machine's TCP socket buffers in KiB (the `mem` pages
/// of `/proc/net/sockstat`): what a flood holds in the kernel rather than in
/// the server's RSS.
pub fn tcp_buffers_kib() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find_map(|l| l.strip_prefix("TCP: "))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            let pages: u64 = words.next()?.parse().ok()?;
            return Some(pages * 4);
        }
    }
    None
}

/// User plus system CPU time of all threads of `pid` (or `"self"`), in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    cpu_split_seconds(pid).map(|(user, system)| user + system)
}

/// User and system CPU time of all threads of `pid` (or `"self"`), in seconds.
pub fn cpu_split_seconds(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime as f64 / USER_HZ, stime as f64 / USER_HZ))
}

/// A CPU-time reading of a process taken at a known instant, to compute the
/// share of one core it used over an interval.
#[derive(Debug, Clone)]
pub struct CpuMark {
    pid: String,
    cpu: Option<(f64, f64)>,
    at: Instant,
}

impl CpuMark {
    /// Reads the CPU time of `pid` now.
    pub fn now(pid: &str) -> Self {
        Self {
            pid: pid.to_owned(),
            cpu: cpu_split_seconds(pid),
            at: Instant::now(),
        }
    }

    /// Percent of one core used since this mark (100 = one core busy), or
    /// `None` when the process could not be read.
    pub fn percent_since(&self) -> Option<f64> {
        let wall = self.at.elapsed().as_secs_f64();
        let (user, system) = self.used_since()?;
        (wall > 0.0).then(|| percent(user + system, wall))
    }

    /// User and system CPU seconds used since this mark, or `None` when the
    /// process could not be read.
    pub fn used_since(&self) -> Option<(f64, f64)> {
        let (user, system) = cpu_split_seconds(&self.pid)?;
        let (user0, system0) = self.cpu?;
        Some((user - user0, system - system0))
    }
}

/// Busy time of the whole machine (all cores, the hypervisor's steal excluded) and the steal
/// of each core, in seconds, from `/proc/stat`.
fn host_cpu_seconds() -> Option<(f64, Vec<f64>)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let ticks = |line: &str| -> Vec<u64> {
        line.split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect()
    };
    let all = ticks(lines.next().filter(|l| l.starts_with("cpu "))?);
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy: u64 = all.iter().take(7).sum::<u64>() - all.get(3)? - all.get(4)?;
    let steal = lines
        .take_while(|l| l.starts_with("cpu"))
        .map(|l| ticks(l).get(7).map_or(0.0, |&t| t as f64 / USER_HZ))
        .collect();
    Some((busy as f64 / USER_HZ, steal))
}

/// A reading of the machine's busy CPU time, to tell how much of it other
/// processes used while a measurement ran, and of the time the hypervisor took
/// from each core (its *steal*: on a shared virtual machine the server's core
/// may be stopped for milliseconds at a time, which shows in every latency
/// tail and throughput figure).
#[derive(Debug, Clone)]
pub struct HostMark {
    cpu: Option<(f64, Vec<f64>)>,
    at: Instant,
}

impl HostMark {
    /// Reads the machine's busy time now.
    pub fn now() -> Self {
        Self {
            cpu: host_cpu_seconds(),
            at: Instant::now(),
        }
    }

    /// Busy percent of one core since this mark, summed over all cores (200
    /// = two cores busy), the hypervisor's steal not included.
    pub fn percent_since(&self) -> Option<f64> {
        let wall = self.at.elapsed().as_secs_f64();
        let used = host_cpu_seconds()?.0 - self.cpu.as_ref()?.0;
        (wall > 0.0).then(|| percent(used, wall))
    }

    /// The hypervisor's steal since this mark, per core, in percent of that
    /// core's time (empty when `/proc/stat` has no per-core lines).
    pub fn steal_since(&self) -> Option<Vec<f64>> {
        let wall = self.at.elapsed().as_secs_f64();
        let (_, now) = host_cpu_seconds()?;
        let (_, then) = self.cpu.as_ref()?;
        (wall > 0.0).then(|| {
            now.iter()
                .zip(then)
                .map(|(now, then)| percent(now - then, wall))
                .collect()
        })
    }
}

/// `used` seconds of `wall` in percent of one core, to a tenth.
fn percent(used: f64, wall: f64) -> f64 {
    (used / wall * 1000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(rss_kib("self").unwrap() > 0);
        let mark = CpuMark::now("self");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(mark.percent_since().is_some());
        let host = HostMark::now();
        assert!(host.percent_since().is_some());
        // One reading per core.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(host.steal_since().unwrap().len() >= cores);
        assert!(rss_kib("999999999").is_none());
        assert!(tcp_buffers_kib().is_some());
    }
}
