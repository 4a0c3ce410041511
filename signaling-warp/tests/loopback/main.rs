//! Every shared loopback scenario of `signaling_test_support` against `signaling-warp` (its `routes`), in one test
//! binary (each extra binary links tokio and tungstenite again).

mod common;

signaling_test_support::all_scenarios!(common::start);

/// The `Warp` transport: a `warp::ws::WebSocket` from warp's own `Ws` upgrade, handed to the
/// hub with `serve_websocket` (the size limits through `configure`, the 1009 close through the
/// downcast of warp's error).
mod warp_websocket {
    use super::common;

    signaling_test_support::scenarios!(common::start_warp_ws:
        full_call,
        oversize_message,
        graceful_shutdown,
    );
}

/// Over TLS (`serve_tls`): shared scenarios through rustls clients, and the TLS ones.
mod tls {
    use super::common;

    signaling_test_support::tls_scenarios!(common::start_tls);
}
