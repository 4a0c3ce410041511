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
        (wall > 0.0).then(|| ((user + system) / wall * 1000.0).round() / 10.0)
    }

    /// User and system CPU seconds used since this mark, or `None` when the
    /// process could not be read.
    pub fn used_since(&self) -> Option<(f64, f64)> {
        let (user, system) = cpu_split_seconds(&self.pid)?;
        let (user0, system0) = self.cpu?;
        Some((user - user0, system - system0))
    }
}

/// Busy and total CPU time of the whole machine (all cores), in seconds,
/// from the first line of `/proc/stat`.
fn host_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(((total - idle) as f64 / USER_HZ, total as f64 / USER_HZ))
}

/// A reading of the machine's busy CPU time, to tell how much of it other
/// processes used while a measurement ran.
#[derive(Debug, Clone)]
pub struct HostMark {
    busy: Option<f64>,
    at: Instant,
}

impl HostMark {
    /// Reads the machine's busy time now.
    pub fn now() -> Self {
        Self {
            busy: host_cpu_seconds().map(|(busy, _)| busy),
            at: Instant::now(),
        }
    }

    /// Busy percent of one core since this mark, summed over all cores (200
    /// = two cores busy).
    pub fn percent_since(&self) -> Option<f64> {
        let wall = self.at.elapsed().as_secs_f64();
        let used = host_cpu_seconds()?.0 - self.busy?;
        (wall > 0.0).then(|| (used / wall * 1000.0).round() / 10.0)
    }
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
        assert!(HostMark::now().percent_since().is_some());
        assert!(rss_kib("999999999").is_none());
        assert!(tcp_buffers_kib().is_some());
    }
}
