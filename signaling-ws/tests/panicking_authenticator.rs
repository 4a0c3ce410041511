//! Scenario `panicking_authenticator` (see `signaling_test_support::panicking_authenticator`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_authenticator() {
    signaling_test_support::panicking_authenticator(common::start).await;
}
