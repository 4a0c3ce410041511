//! Replays fuzz inputs on stable with a trace of every op and output (run from `fuzz/`:
//! `cargo run --example replay -- artifacts/router/crash-…`).

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: replay FILE...");
        std::process::exit(2);
    }
    for path in paths {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        eprintln!("== {path} ({} bytes)", bytes.len());
        signaling_fuzz::run_traced(&bytes);
    }
}
