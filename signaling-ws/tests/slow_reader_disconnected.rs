//! Scenario `slow_reader_disconnected` (see `signaling_test_support::slow_reader_disconnected`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_disconnected() {
    signaling_test_support::slow_reader_disconnected(common::start).await;
}
