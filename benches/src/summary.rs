//! Latency histograms and their JSON summaries.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in nanoseconds, 1 ns to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns` into `h`, saturating at the histogram's upper bound.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// Percentiles of `h` in microseconds (one decimal): `n`, `mean`, `p50`,
/// `p90`, `p99`, `p999` and `max`.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let us = |ns: f64| (ns / 100.0).round() / 10.0;
    if h.is_empty() {
        return json!({ "n": 0 });
    }
    json!({
        "n": h.len(),
        "mean": us(h.mean()),
        "p50": us(h.value_at_quantile(0.50) as f64),
        "p90": us(h.value_at_quantile(0.90) as f64),
        "p99": us(h.value_at_quantile(0.99) as f64),
        "p999": us(h.value_at_quantile(0.999) as f64),
        "max": us(h.max() as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_microseconds() {
        let mut h = latency_histogram();
        for i in 1..=1000u64 {
            record(&mut h, i * 1000);
        }
        let v = latency_json(&h);
        assert_eq!(v["n"], 1000);
        let p50 = v["p50"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        assert_eq!(latency_json(&latency_histogram())["n"], 0);
    }
}
