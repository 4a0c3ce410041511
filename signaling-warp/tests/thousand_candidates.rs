//! Scenario `thousand_candidates` (see `signaling_test_support::thousand_candidates`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_candidates() {
    signaling_test_support::thousand_candidates(common::start).await;
}
