//! Every shared loopback scenario of `signaling_test_support` against `signaling-warp` (its `routes`), in one test
//! binary (each extra binary links tokio and tungstenite again).

mod common;

signaling_test_support::scenarios!(common::start:
    bad_frames,
    bad_handshakes,
    custom_authenticator,
    disconnect_mid_call,
    duplicate_login,
    full_call,
    garbage_storm,
    global_connection_cap,
    graceful_shutdown,
    heartbeat_timeout,
    hundred_calls,
    large_sdp,
    login_deadline,
    no_injection,
    origin_allowlist,
    oversize_message,
    panicking_authenticator,
    per_ip_connection_cap,
    rate_limit,
    slow_reader_keeps_its_name,
    non_reader_dropped_after_write_stall,
    queued_bytes_stay_within_the_budget,
    phase_timeouts,
    phase_caps,
    per_user_cap,
    control_frame_flood,
    unanswered_call_is_bounded,
    look_alike_names,
    thousand_candidates,
    token_auth,
    transport_errors_isolated,
    trusted_proxy_chain,
);

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
