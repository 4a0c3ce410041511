//! Scenario `token_auth` (see `signaling_test_support::token_auth`) against this adapter.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth() {
    signaling_test_support::token_auth(common::start).await;
}
