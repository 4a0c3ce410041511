//! Scenario `hundred_calls` (see `signaling_test_support::hundred_calls`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_calls() {
    signaling_test_support::hundred_calls(common::start).await;
}
