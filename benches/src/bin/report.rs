//! `report`: folds the raw `loadgen` lines of a benchmark run into medians.
//!
//! ```text
//! report --raw OUT/raw [--out OUT] [--svg docs/perf-latency.svg]
//! ```
//!
//! Writes `results.json` (median, min, max and count of every metric per
//! server and case) and `results.md` (headline metrics as tables) into
//! `--out`, and with `--svg` the plot of relay latency (p50, p99) against
//! offered load.

use std::path::PathBuf;

use clap::Parser;
use signaling_benches::report;

#[derive(Parser, Debug)]
#[command(about = "Median tables and the latency plot from raw loadgen lines")]
struct Args {
    /// Directory of `*.jsonl` files, one loadgen JSON line per run.
    #[arg(long)]
    raw: PathBuf,
    /// Where results.json and results.md go (default: the parent of --raw).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the relay latency against offered load plot here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Title of the plot.
    #[arg(
        long,
        default_value = "Relay latency against offered load (server and loadgen pinned to one core each)"
    )]
    title: String,
}

fn main() {
    let args = Args::parse();
    let out = args
        .out
        .clone()
        .or_else(|| args.raw.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let lines = match report::load_dir(&args.raw) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("report: cannot read {}: {e}", args.raw.display());
            std::process::exit(1);
        }
    };
    let results = report::aggregate(&lines);
    let json = serde_json::to_string_pretty(&results).expect("serializable");
    let md = report::markdown(&results);
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("report: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("report: wrote {}", path.display());
    };
    write("results.json", &json);
    write("results.md", &md);
    if let Some(svg) = &args.svg {
        match report::plot_latency(&results, svg, &args.title) {
            Ok(()) => eprintln!("report: wrote {}", svg.display()),
            Err(e) => eprintln!("report: no plot: {e}"),
        }
    }
    print!("{md}");
}
