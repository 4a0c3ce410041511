//! Writes the seed corpus `corpus/router/seed-*` (run from `fuzz/`:
//! `cargo run --example gen_corpus`).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/router");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in signaling_fuzz::seeds::seed_files() {
        std::fs::write(dir.join(name), &bytes)?;
        println!("{name}: {} bytes", bytes.len());
    }
    Ok(())
}
