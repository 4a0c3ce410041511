//! Scenario `origin_allowlist` (see `signaling_test_support::origin_allowlist`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allowlist() {
    signaling_test_support::origin_allowlist(common::start).await;
}
