//! Scenario `large_sdp` (see `signaling_test_support::large_sdp`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sdp() {
    signaling_test_support::large_sdp(common::start).await;
}
