//! Arbitrary frame sequences from several connections into `signaling_core::Router`; the
//! decoding and every check live in `src/lib.rs`. Run from the repository root:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run router -- -max_total_time=300
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    signaling_fuzz::run(data);
});
