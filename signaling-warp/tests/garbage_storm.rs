//! Scenario `garbage_storm` (see `signaling_test_support::garbage_storm`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_storm() {
    signaling_test_support::garbage_storm(common::start).await;
}
