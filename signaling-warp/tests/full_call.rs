//! Scenario `full_call` (see `signaling_test_support::full_call`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call() {
    signaling_test_support::full_call(common::start).await;
}
