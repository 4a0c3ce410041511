//! Scenario `rate_limit` (see `signaling_test_support::rate_limit`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit() {
    signaling_test_support::rate_limit(common::start).await;
}
