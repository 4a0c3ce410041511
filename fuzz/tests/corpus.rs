//! On stable, without libFuzzer: the seeds decode to the scenarios they were written as, the
//! committed seed files are current, and every file in `corpus/router` (the seeds plus whatever
//! a local fuzzing run added) and in `regressions/router` passes the target's checks.

use std::path::Path;

use signaling_fuzz::{decode, encode, run, run_ops, seeds::seeds};

#[test]
fn seeds_decode_to_what_they_encode() {
    for (name, config, ops) in seeds() {
        let bytes = encode(config, &ops);
        assert_eq!(decode(&bytes), (config, ops.clone()), "{name}");
        run_ops(config, &ops);
    }
}

#[test]
fn committed_seed_files_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/router");
    for (name, bytes) in signaling_fuzz::seeds::seed_files() {
        let on_disk = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run `cargo run --example gen_corpus`"));
        assert!(
            on_disk == bytes,
            "{name} is stale; run `cargo run --example gen_corpus`"
        );
    }
}

#[test]
fn every_corpus_and_regression_file_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["corpus/router", "regressions/router"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("readable");
                let result = std::panic::catch_unwind(|| run(&bytes));
                assert!(result.is_ok(), "{} fails", path.display());
                n += 1;
            }
        }
    }
    assert!(n >= 12, "only {n} inputs found");
}
