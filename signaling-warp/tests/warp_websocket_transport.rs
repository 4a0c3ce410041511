//! The `Warp` transport: a `warp::ws::WebSocket` from warp's own `Ws` upgrade, handed to the
//! hub with `serve_websocket` (the size limits through `configure`, the 1009 close through the
//! downcast of warp's error).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call() {
    signaling_test_support::full_call(common::start_warp_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message() {
    signaling_test_support::oversize_message(common::start_warp_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown() {
    signaling_test_support::graceful_shutdown(common::start_warp_ws).await;
}
