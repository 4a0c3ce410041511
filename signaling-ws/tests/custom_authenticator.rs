//! Scenario `custom_authenticator` (see `signaling_test_support::custom_authenticator`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authenticator() {
    signaling_test_support::custom_authenticator(common::start).await;
}
