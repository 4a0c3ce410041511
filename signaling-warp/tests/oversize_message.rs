//! Scenario `oversize_message` (see `signaling_test_support::oversize_message`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message() {
    signaling_test_support::oversize_message(common::start).await;
}
