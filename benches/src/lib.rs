//! Tools that measure a signaling server from the outside (issue 6).
//!
//! Everything here is black-box: the binaries speak the tutorial's JSON wire
//! protocol over WebSocket text frames to a server on a loopback address and
//! never link the server's crates.
//!
//! - `loadgen` (in `src/bin/`): the load generator. Workloads `logins`, `relay`,
//!   `pingpong` and `hoard` (non-reading victims flooded: the server's memory),
//!   each printing one JSON line of results. Given several URLs (cluster nodes, issue 11) it
//!   spreads the clients over them, each pair on one node (`--spread same`) or across two
//!   (`--spread cross`).
//! - `ceiling`: a bare forwarding server with no validation and no call state,
//!   the upper bound a real server is compared against.
//! - `report`: turns the raw JSON lines of several rounds into medians, a
//!   markdown table and an SVG plot of relay latency against offered load.
//!
//! The modules below hold what those binaries share.

pub mod loopback;
pub mod procfs;
pub mod report;
pub mod summary;
pub mod wire;
