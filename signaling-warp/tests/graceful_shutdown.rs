//! Scenario `graceful_shutdown` (see `signaling_test_support::graceful_shutdown`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown() {
    signaling_test_support::graceful_shutdown(common::start).await;
}
