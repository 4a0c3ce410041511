mod scan;
mod scan_old;
use std::hint::black_box;
use std::time::Instant;

const FRAME: &str = concat!(
    r#"{"type":"candidate","candidate":{"candidate":"#,
    r#""candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx "#,
    r#"raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999 "#,
    r#"x-seq 123456 x-ts 1234567890123","sdpMid":"0","sdpMLineIndex":0,"#,
    r#""usernameFragment":"sXYZ"},"otherUsername":"user42"}"#
);

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawFrameSonic<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    candidate: Option<sonic_rs::LazyValue<'a>>,
    #[serde(rename = "otherUsername", borrow)]
    other: Option<sonic_rs::LazyValue<'a>>,
}
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawFrameSerde<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    candidate: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "otherUsername", borrow)]
    other: Option<&'a serde_json::value::RawValue>,
}

fn time(label: &str, n: usize, mut f: impl FnMut() -> bool) {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        let mut ok = 0;
        for _ in 0..n { if f() { ok += 1; } }
        assert_eq!(ok, n, "{label}");
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{label:40} {best:7.1} ns");
}

fn main() {
    let n = 300_000;
    let which = std::env::args().nth(1).unwrap_or_default();
    if which.is_empty() || which == "scan" {
        time("our scanner (fill)", n, || { let mut f = scan::Fields::default(); scan::fill(black_box(FRAME), &mut f).is_some() });
    }
    if which.is_empty() || which == "old" {
        time("previous scanner (3d3dbb9, fields)", n, || scan_old::fields(black_box(FRAME)).is_some());
    }
    if which.is_empty() || which == "sonic" {
        time("sonic-rs from_str RawValue fields", n, || sonic_rs::from_str::<RawFrameSonic>(black_box(FRAME)).is_ok());
        time("sonic-rs from_str IgnoredAny", n, || sonic_rs::from_str::<serde::de::IgnoredAny>(black_box(FRAME)).is_ok());
    }
    if which.is_empty() || which == "simd" {
        let mut buf = Vec::with_capacity(FRAME.len() + 64);
        time("simd-json to_borrowed_value (copy+parse)", n, || {
            buf.clear();
            buf.extend_from_slice(black_box(FRAME).as_bytes());
            simd_json::to_borrowed_value(&mut buf).is_ok()
        });
        let mut buf2 = Vec::with_capacity(FRAME.len() + 64);
        let mut buffers = simd_json::Buffers::new(512);
        time("simd-json tape with reused buffers", n, || {
            buf2.clear();
            buf2.extend_from_slice(black_box(FRAME).as_bytes());
            simd_json::Deserializer::from_slice_with_buffers(&mut buf2, &mut buffers).is_ok()
        });
    }
    if which.is_empty() || which == "serde" {
        time("serde_json RawValue fields", n, || serde_json::from_str::<RawFrameSerde>(black_box(FRAME)).is_ok());
    }
}
