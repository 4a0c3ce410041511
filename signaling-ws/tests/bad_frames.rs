//! Scenario `bad_frames` (see `signaling_test_support::bad_frames`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames() {
    signaling_test_support::bad_frames(common::start).await;
}
