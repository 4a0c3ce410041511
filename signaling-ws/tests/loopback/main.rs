//! Every shared loopback scenario of `signaling_test_support` against `signaling-ws`, in one test
//! binary (each extra binary links tokio and tungstenite again).

mod common;
mod turn;

signaling_test_support::all_scenarios!(common::start);

/// Over TLS (`serve_tls`): shared scenarios through rustls clients, and the TLS ones.
mod tls {
    use super::common;

    signaling_test_support::tls_scenarios!(common::start_tls);
}
