//! Scenario `transport_errors_isolated` (see `signaling_test_support::transport_errors_isolated`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_isolated() {
    signaling_test_support::transport_errors_isolated(common::start).await;
}
