//! Aggregation of raw `loadgen` JSON lines over rounds: medians, a markdown
//! table and the latency-against-offered-load plot.
//!
//! Each raw line carries `label` (the server under test) and `case` (the
//! measurement). Lines of one (label, case) from several rounds are folded
//! into the median, minimum and maximum of every numeric field, nested fields
//! flattened with dots (`latency_us.p99`). A line with an `error` field is
//! counted in `errors` and left out of the figures.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

/// Median, minimum and maximum of one metric over the rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest value seen.
    pub min: f64,
    /// Largest value seen.
    pub max: f64,
    /// Number of rounds that reported it.
    pub n: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
            n,
        }
    }
}

/// One measurement of one server, folded over its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The loadgen workload (`logins`, `relay`, `pingpong`, `hoard`).
    pub workload: String,
    /// Rounds whose line had an `error`.
    pub errors: usize,
    /// The first of those errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Every numeric field, by dotted name.
    pub metrics: BTreeMap<String, Spread>,
}

impl CaseResult {
    /// The median of `metric`, if any round reported it.
    pub fn median(&self, metric: &str) -> Option<f64> {
        self.metrics.get(metric).map(|s| s.median)
    }
}

/// All results: servers and cases in the order they were first seen.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Server labels, in run order.
    pub labels: Vec<String>,
    /// Case names, in run order.
    pub cases: Vec<String>,
    /// `results[label][case]`.
    pub results: BTreeMap<String, BTreeMap<String, CaseResult>>,
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_owned(), x));
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {}
    }
}

/// Reads every line of every `*.jsonl` file in `dir` (sorted by name).
/// Lines that are not JSON objects are skipped.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<Value>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f)?.lines() {
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(line) {
                lines.push(v);
            }
        }
    }
    Ok(lines)
}

/// Folds raw lines into [`Results`].
pub fn aggregate(lines: &[Value]) -> Results {
    let mut labels = Vec::new();
    let mut cases = Vec::new();
    let mut raw: BTreeMap<(String, String), (String, Vec<&Value>)> = BTreeMap::new();
    for line in lines {
        let field = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let (label, case, workload) = (field("label"), field("case"), field("workload"));
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        if !cases.contains(&case) {
            cases.push(case.clone());
        }
        raw.entry((label, case))
            .or_insert_with(|| (workload, Vec::new()))
            .1
            .push(line);
    }
    // Redis's own cases (a cluster run's reference) after the servers'.
    let redis_cases: Vec<&String> = raw
        .iter()
        .filter(|(_, (w, _))| w == "redis_publish")
        .map(|((_, c), _)| c)
        .collect();
    let (mut cases, last): (Vec<String>, Vec<String>) =
        cases.into_iter().partition(|c| !redis_cases.contains(&c));
    cases.extend(last);
    let mut results: BTreeMap<String, BTreeMap<String, CaseResult>> = BTreeMap::new();
    for ((label, case), (workload, rounds)) in raw {
        let mut errors = 0;
        let mut first_error = None;
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for line in rounds {
            if let Some(e) = line.get("error") {
                errors += 1;
                first_error.get_or_insert_with(|| e.as_str().unwrap_or("?").to_owned());
                continue;
            }
            let mut flat = Vec::new();
            flatten("", line, &mut flat);
            for (k, x) in flat {
                values.entry(k).or_default().push(x);
            }
        }
        let metrics = values
            .into_iter()
            .map(|(k, v)| (k, Spread::of(v)))
            .collect();
        results.entry(label).or_default().insert(
            case,
            CaseResult {
                workload,
                errors,
                first_error,
                metrics,
            },
        );
    }
    // A cluster run's labels in the order its ratios read; any other label keeps its place.
    let rank = |l: &String| {
        [
            CLUSTER_SINGLE,
            CLUSTER_ONE,
            CLUSTER_SAME,
            CLUSTER_CROSS,
            CLUSTER_REDIS,
        ]
        .iter()
        .position(|c| c == l)
    };
    let (mut known, other): (Vec<String>, Vec<String>) =
        labels.into_iter().partition(|l| rank(l).is_some());
    known.sort_by_key(rank);
    known.extend(other);
    Results {
        labels: known,
        cases,
        results,
    }
}

/// The metrics shown in the markdown table for a workload, with their titles.
fn headline(
    workload: &str,
    idle: bool,
    paced: bool,
    redis: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut m = match workload {
        "logins" => vec![
            ("logins_per_s", "logins/s"),
            ("total_us.p50", "connect+login p50 (µs)"),
            ("total_us.p99", "connect+login p99 (µs)"),
            ("failures", "failures"),
            (
                "server_rss_per_conn_bytes",
                "server RSS per connection (bytes)",
            ),
        ],
        "relay" => vec![
            ("msgs_per_s", "relayed msgs/s"),
            ("latency_us.p50", "one-way p50 (µs)"),
            ("latency_us.p99", "one-way p99 (µs)"),
            ("latency_us.p999", "one-way p99.9 (µs)"),
            ("lost", "lost"),
            ("order_errors", "out of order"),
            ("unexpected_messages", "unexpected frames (errors)"),
        ],
        "pingpong" => vec![
            ("round_trips_per_s", "round trips/s"),
            ("rtt_us.p50", "RTT p50 (µs)"),
            ("rtt_us.p99", "RTT p99 (µs)"),
            ("failed_pairs", "failed pairs"),
            ("unexpected_messages", "unexpected frames (errors)"),
        ],
        "hoard" => vec![
            ("server_rss_setup_kib", "server RSS after set-up (KiB)"),
            ("server_rss_peak_kib", "server RSS peak (KiB)"),
            (
                "server_rss_end_of_flood_kib",
                "server RSS at the end of the flood (KiB)",
            ),
            (
                "server_rss_after_close_kib",
                "server RSS after everyone left (KiB)",
            ),
            (
                "refused_recipient_overloaded",
                "refused: recipient_overloaded",
            ),
            ("refused_server_overloaded", "refused: server_overloaded"),
            ("victims_closed", "victims dropped by the server"),
            ("flooders_dropped", "flooders dropped by the server"),
        ],
        // `redis-benchmark` pipelining PUBLISH to one channel with one subscriber (the
        // reference of what Redis carries; `scripts/bench.sh --cluster`).
        "redis_publish" => {
            return vec![
                ("publish_per_s", "PUBLISH/s"),
                ("latency_ms.p50", "redis-benchmark p50 (ms)"),
                ("latency_ms.p99", "redis-benchmark p99 (ms)"),
                ("received", "messages the subscriber got"),
                ("lost", "lost"),
                ("redis_cpu_pct", "Redis CPU (% of a core)"),
                ("loadgen_cpu_pct", "redis-benchmark CPU (% of a core)"),
                ("other_cpu_pct", "other processes' CPU (% of a core)"),
                ("steal_pct", "the hypervisor's steal (% of a core)"),
            ];
        }
        // Synthetic lines (a server that did not start) have only errors.
        _ => return vec![],
    };
    if paced {
        m.push(("send_lag_us.p99", "loadgen send lag p99 (µs)"));
    }
    if idle {
        m.push(("idle_ok", "idle connections held"));
        m.push(("idle_dropped", "idle dropped"));
        // Not the per-connection delta: the server's heap has already grown
        // in earlier cases, so it understates; the logins case on a fresh
        // server gives RSS per connection.
        m.push(("server_rss_kib", "server RSS (KiB)"));
    }
    if workload != "logins" {
        m.push(("server_cpu_pct", "server CPU (% of a core)"));
        m.push(("loadgen_cpu_pct", "loadgen CPU (% of a core)"));
    }
    if workload == "relay" || workload == "pingpong" {
        m.push((
            "server_cpu_us_per_msg.total",
            "server CPU per relayed message (µs)",
        ));
        m.push(("server_cpu_us_per_msg.user", "… user (µs)"));
        m.push(("server_cpu_us_per_msg.system", "… system (µs)"));
    }
    if redis {
        m.push(("redis_cpu_pct", "Redis CPU (% of a core)"));
        m.push((
            "redis_commands",
            "Redis commands (whole case, set-up included)",
        ));
    }
    m.push(("other_cpu_pct", "other processes' CPU (% of a core)"));
    m.push(("steal_pct", "the hypervisor's steal (% of a core)"));
    m
}

/// The labels `scripts/bench.sh --cluster` measures: one node without Redis, one node in
/// cluster mode, two nodes with every pair on one node, two nodes with every pair across
/// them, and Redis alone.
pub const CLUSTER_SINGLE: &str = "ws_single";
/// See [`CLUSTER_SINGLE`].
pub const CLUSTER_ONE: &str = "ws_cluster_one";
/// See [`CLUSTER_SINGLE`].
pub const CLUSTER_SAME: &str = "ws_cluster_same";
/// See [`CLUSTER_SINGLE`].
pub const CLUSTER_CROSS: &str = "ws_cluster_cross";
/// See [`CLUSTER_SINGLE`].
pub const CLUSTER_REDIS: &str = "redis_publish";

/// The figures compared in the cluster ratio table, per workload: (metric, title).
fn ratio_metrics(workload: &str) -> &'static [(&'static str, &'static str)] {
    match workload {
        "relay" => &[
            ("msgs_per_s", "msgs/s"),
            ("latency_us.p50", "p50"),
            ("latency_us.p99", "p99"),
        ],
        "pingpong" => &[
            ("round_trips_per_s", "round trips/s"),
            ("rtt_us.p50", "RTT p50"),
            ("rtt_us.p99", "RTT p99"),
        ],
        "logins" => &[
            ("logins_per_s", "logins/s"),
            ("total_us.p50", "connect+login p50"),
            ("total_us.p99", "connect+login p99"),
        ],
        _ => &[],
    }
}

/// With the labels of a cluster run, a table of ratios of medians: one node in cluster mode
/// and same-node pairs on two nodes against the single node, and pairs across nodes against
/// same-node pairs (all from one interleaved run). Empty otherwise.
pub fn cluster_ratios(r: &Results) -> String {
    let pairs = [
        (
            CLUSTER_ONE,
            CLUSTER_SINGLE,
            "1 node in cluster mode ÷ single",
        ),
        (
            CLUSTER_SAME,
            CLUSTER_SINGLE,
            "2 nodes, same-node pairs ÷ single",
        ),
        (CLUSTER_CROSS, CLUSTER_SAME, "cross-node ÷ same-node pairs"),
        (CLUSTER_CROSS, CLUSTER_SINGLE, "cross-node ÷ single"),
    ];
    let pairs: Vec<_> = pairs
        .into_iter()
        .filter(|(a, b, _)| r.results.contains_key(*a) && r.results.contains_key(*b))
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "### Cluster ratios (medians; > 1 means more throughput or a longer latency)\n\n| case | figure |",
    );
    for (_, _, title) in &pairs {
        md.push_str(&format!(" {title} |"));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---:|".repeat(pairs.len()));
    md.push('\n');
    for case in &r.cases {
        let get = |label: &str| r.results.get(label).and_then(|c| c.get(case));
        let Some(workload) = pairs
            .iter()
            .find_map(|(a, _, _)| get(a))
            .map(|c| c.workload.clone())
        else {
            continue;
        };
        for (metric, title) in ratio_metrics(&workload) {
            let mut row = format!("| {case} | {title} |");
            let mut any = false;
            for (a, b, _) in &pairs {
                let ratio = get(a)
                    .and_then(|c| c.median(metric))
                    .zip(get(b).and_then(|c| c.median(metric)))
                    .filter(|&(_, y)| y > 0.0)
                    .map(|(x, y)| x / y);
                match ratio {
                    Some(q) => {
                        any = true;
                        row.push_str(&format!(" {q:.2} |"));
                    }
                    None => row.push_str(" – |"),
                }
            }
            if any {
                md.push_str(&row);
                md.push('\n');
            }
        }
    }
    md.push('\n');
    md
}

fn format_number(x: f64) -> String {
    if x.abs() >= 1000.0 {
        let s = format!("{:.0}", x.abs());
        let mut grouped = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if x < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn format_spread(s: &Spread) -> String {
    if s.n > 1 && s.min != s.max {
        format!(
            "{} ({}–{})",
            format_number(s.median),
            format_number(s.min),
            format_number(s.max)
        )
    } else {
        format_number(s.median)
    }
}

/// A markdown table per case: one row per headline metric, one column per
/// server, each cell `median (min–max)` over the rounds; then, for a cluster run, the
/// [`cluster_ratios`] table.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    for case in &r.cases {
        let present: Vec<&CaseResult> = r
            .labels
            .iter()
            .filter_map(|l| r.results.get(l).and_then(|c| c.get(case)))
            .collect();
        let Some(first) = present.first() else {
            continue;
        };
        let idle = present
            .iter()
            .any(|c| c.median("idle").is_some_and(|x| x > 0.0));
        let paced = present
            .iter()
            .any(|c| c.median("offered_rate").is_some_and(|x| x > 0.0));
        let redis = present
            .iter()
            .any(|c| c.metrics.contains_key("redis_cpu_pct"));
        md.push_str(&format!("### {case} ({})\n\n", first.workload));
        md.push_str("| metric |");
        for l in &r.labels {
            md.push_str(&format!(" {l} |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---:|".repeat(r.labels.len()));
        md.push('\n');
        let mut rounds_row = String::from("| rounds (failed) |");
        for l in &r.labels {
            let cell = match r.results.get(l).and_then(|c| c.get(case)) {
                Some(c) => {
                    let ok = c.metrics.values().map(|s| s.n).max().unwrap_or(0);
                    format!(" {} ({}) |", ok + c.errors, c.errors)
                }
                None => " – |".to_owned(),
            };
            rounds_row.push_str(&cell);
        }
        md.push_str(&rounds_row);
        md.push('\n');
        for (key, title) in headline(&first.workload, idle, paced, redis) {
            md.push_str(&format!("| {title} |"));
            for l in &r.labels {
                let cell = r
                    .results
                    .get(l)
                    .and_then(|c| c.get(case))
                    .and_then(|c| c.metrics.get(key))
                    .map(format_spread)
                    .unwrap_or_else(|| "–".to_owned());
                md.push_str(&format!(" {cell} |"));
            }
            md.push('\n');
        }
        for l in &r.labels {
            if let Some(e) = r
                .results
                .get(l)
                .and_then(|c| c.get(case))
                .and_then(|c| c.first_error.as_ref())
            {
                md.push_str(&format!("\n{l}: first error: `{e}`\n"));
            }
        }
        md.push('\n');
    }
    md.push_str(&cluster_ratios(r));
    md
}

/// One point of a latency curve: offered load, achieved load, p50 and p99
/// one-way latency in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Offered messages/s.
    pub offered: f64,
    /// Relayed messages/s.
    pub achieved: f64,
    /// Median one-way latency, ms.
    pub p50_ms: f64,
    /// 99th percentile one-way latency, ms.
    pub p99_ms: f64,
}

/// Per server, the paced relay cases without idle connections, by offered
/// load.
pub fn latency_curves(r: &Results) -> Vec<(String, Vec<CurvePoint>)> {
    let mut curves = Vec::new();
    for label in &r.labels {
        let Some(cases) = r.results.get(label) else {
            continue;
        };
        let mut points: Vec<CurvePoint> = cases
            .values()
            .filter(|c| c.workload == "relay" && c.median("idle").unwrap_or(0.0) == 0.0)
            .filter_map(|c| {
                Some(CurvePoint {
                    offered: c.median("offered_rate").filter(|&x| x > 0.0)?,
                    achieved: c.median("msgs_per_s")?,
                    p50_ms: c.median("latency_us.p50")? / 1000.0,
                    p99_ms: c.median("latency_us.p99")? / 1000.0,
                })
            })
            .collect();
        points.sort_by(|a, b| a.offered.total_cmp(&b.offered));
        if !points.is_empty() {
            curves.push((label.clone(), points));
        }
    }
    curves
}

/// Draws p50 (solid) and p99 (dashed) one-way relay latency against offered
/// load, one colour per server, both axes logarithmic. Points where the server
/// relayed less than 95% of the offered load are crossed.
pub fn plot_latency(r: &Results, path: &Path, title: &str) -> Result<(), String> {
    let curves = latency_curves(r);
    if curves.is_empty() {
        return Err("no paced relay cases to plot".into());
    }
    let all = curves.iter().flat_map(|(_, p)| p.iter());
    let x_min = all.clone().map(|p| p.offered).fold(f64::INFINITY, f64::min) * 0.8;
    let x_max = all.clone().map(|p| p.offered).fold(0.0, f64::max) * 1.25;
    // Ticks at the measured rates only: a log axis' own ticks crowd.
    let mut rates: Vec<f64> = all.clone().map(|p| p.offered).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let y_min = all
        .clone()
        .map(|p| p.p50_ms)
        .fold(f64::INFINITY, f64::min)
        .max(0.001)
        * 0.7;
    let y_max = all.map(|p| p.p99_ms).fold(0.0, f64::max).max(y_min * 10.0) * 1.5;

    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (960, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_bottom(36)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (x_min..x_max).log_scale().with_key_points(rates),
            (y_min..y_max).log_scale(),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_max_light_lines(0)
        .x_desc("offered load (candidate messages/s over all pairs, log scale)")
        .y_desc("one-way latency (ms, log scale)")
        .x_label_formatter(&|x| format_number(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let p50: Vec<(f64, f64)> = points.iter().map(|p| (p.offered, p.p50_ms)).collect();
        let p99: Vec<(f64, f64)> = points.iter().map(|p| (p.offered, p.p99_ms)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(format!("{label} p50"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                p99.clone(),
                7,
                5,
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(format!("{label} p99"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 7, y)], color.stroke_width(2)));
        chart
            .draw_series(
                p50.iter()
                    .chain(p99.iter())
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(|x| e(&x))?;
        let saturated = points
            .iter()
            .filter(|p| p.achieved < 0.95 * p.offered)
            .flat_map(|p| [(p.offered, p.p50_ms), (p.offered, p.p99_ms)]);
        chart
            .draw_series(saturated.map(|(x, y)| Cross::new((x, y), 7, color.stroke_width(2))))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.draw(&Text::new(
        "× = relayed under 95% of the offered load: saturated (latency is then bounded by the window of messages in flight per pair)",
        (90, 596),
        ("sans-serif", 14),
    ))
    .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(label: &str, case: &str, rate: f64, p50: f64, extra: Value) -> Value {
        let mut v = json!({
            "workload": "relay", "label": label, "case": case, "offered_rate": rate,
            "idle": 0, "msgs_per_s": rate, "latency_us": {"p50": p50, "p99": p50 * 4.0}
        });
        if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
            m.extend(x);
        }
        v
    }

    #[test]
    fn medians_over_rounds_and_errors_excluded() {
        let lines = vec![
            line("a", "r1", 1000.0, 100.0, json!({})),
            line("a", "r1", 1000.0, 300.0, json!({})),
            line("a", "r1", 1000.0, 200.0, json!({})),
            line("a", "r1", 1000.0, 9e9, json!({"error": "boom"})),
            line("b", "r1", 1000.0, 50.0, json!({})),
        ];
        let r = aggregate(&lines);
        assert_eq!(r.labels, ["a", "b"]);
        let a = &r.results["a"]["r1"];
        assert_eq!(a.errors, 1);
        assert_eq!(a.metrics["latency_us.p50"].median, 200.0);
        assert_eq!(a.metrics["latency_us.p50"].n, 3);
        let md = markdown(&r);
        assert!(
            md.contains("| one-way p50 (µs) | 200 (100–300) | 50 |"),
            "{md}"
        );
        assert!(md.contains("first error: `boom`"));
    }

    #[test]
    fn cluster_ratio_table() {
        let redis = json!({"redis_cpu_pct": 30.0});
        let lines = vec![
            line(
                CLUSTER_SINGLE,
                "relay_rate_10000",
                10000.0,
                100.0,
                json!({}),
            ),
            line(
                CLUSTER_SAME,
                "relay_rate_10000",
                10000.0,
                110.0,
                redis.clone(),
            ),
            line(CLUSTER_CROSS, "relay_rate_10000", 10000.0, 330.0, redis),
            json!({"workload": "redis_publish", "label": "redis_publish", "case": "publish_p32",
                   "publish_per_s": 200000.0, "redis_cpu_pct": 99.0}),
        ];
        let mut reversed = lines.clone();
        reversed.reverse();
        let r = aggregate(&reversed);
        assert_eq!(
            r.labels,
            [CLUSTER_SINGLE, CLUSTER_SAME, CLUSTER_CROSS, CLUSTER_REDIS]
        );
        assert_eq!(r.cases, ["relay_rate_10000", "publish_p32"]);
        let md = markdown(&aggregate(&lines));
        assert!(
            md.contains("| Redis CPU (% of a core) | – | 30 | 30 | – |"),
            "{md}"
        );
        assert!(md.contains("| PUBLISH/s |"), "{md}");
        assert!(
            md.contains("| relay_rate_10000 | p50 | 1.10 | 3.00 | 3.30 |"),
            "{md}"
        );
        assert!(!markdown(&aggregate(&lines[..1])).contains("Cluster ratios"));
    }

    #[test]
    fn plots_curves_to_svg() {
        let mut lines = Vec::new();
        for (i, rate) in [1000.0, 5000.0, 20000.0].into_iter().enumerate() {
            let case = format!("rate{i}");
            lines.push(line("a", &case, rate, 100.0 * (i + 1) as f64, json!({})));
            lines.push(line(
                "b",
                &case,
                rate,
                80.0,
                json!({"msgs_per_s": rate / 2.0}),
            ));
        }
        let r = aggregate(&lines);
        let curves = latency_curves(&r);
        assert_eq!(curves.len(), 2);
        assert_eq!(curves[0].1.len(), 3);
        let path = std::env::temp_dir().join(format!("plot-{}.svg", std::process::id()));
        plot_latency(&r, &path, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(
            svg.starts_with("<svg") && svg.contains("a p50"),
            "{}",
            &svg[..200]
        );
    }
}
