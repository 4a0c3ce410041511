//! Scenario `per_ip_connection_cap` (see `signaling_test_support::per_ip_connection_cap`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_connection_cap() {
    signaling_test_support::per_ip_connection_cap(common::start).await;
}
