//! The core's tests in one binary (each extra test binary is one more link step): the wire
//! shapes, the call rules, the property tests on the pure router, and the connection driver
//! over its in-memory transport (`driver::memory`: the crate's dev-dependency on itself turns
//! the `memory` feature on for this binary).

mod claims;
mod cluster;
mod common;
mod driver;
mod handover;
mod names;
mod properties;
mod router_rules;
mod sessions;
mod sessions_properties;
mod unanswered;
mod wire_shapes;
