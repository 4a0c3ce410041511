//! Benches and the load generator (issue 6).
