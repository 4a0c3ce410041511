//! Scenario `global_connection_cap` (see `signaling_test_support::global_connection_cap`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_connection_cap() {
    signaling_test_support::global_connection_cap(common::start).await;
}
