//! Scenario `no_injection` (see `signaling_test_support::no_injection`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_injection() {
    signaling_test_support::no_injection(common::start).await;
}
