//! Scenario `heartbeat_timeout` (see `signaling_test_support::heartbeat_timeout`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_timeout() {
    signaling_test_support::heartbeat_timeout(common::start).await;
}
