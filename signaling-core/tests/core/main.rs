//! The core's tests in one binary (each extra test binary is one more link step): the wire
//! shapes, the call rules, the property tests on the pure router, and the connection driver
//! over an in-memory transport (with the `driver` feature).

mod common;
mod driver;
mod names;
mod properties;
mod router_rules;
mod sessions;
mod sessions_properties;
mod unanswered;
mod wire_shapes;
