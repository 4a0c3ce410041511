//! Scenario `login_deadline` (see `signaling_test_support::login_deadline`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_deadline() {
    signaling_test_support::login_deadline(common::start).await;
}
