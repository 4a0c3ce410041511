//! Every shared loopback scenario of `signaling_test_support` against `signaling-ws`, in one test
//! binary (each extra binary links tokio and tungstenite again).

mod common;

signaling_test_support::all_scenarios!(common::start);
