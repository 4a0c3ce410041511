//! Scenario `disconnect_mid_call` (see `signaling_test_support::disconnect_mid_call`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_call() {
    signaling_test_support::disconnect_mid_call(common::start).await;
}
