//! Scenario `duplicate_login` (see `signaling_test_support::duplicate_login`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_login() {
    signaling_test_support::duplicate_login(common::start).await;
}
