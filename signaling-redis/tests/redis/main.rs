//! Name leases and the bus between nodes against a real `redis-server` (one per test, on a free
//! port, nothing on disk).
//!
//! Needs `redis-server` on `PATH` (or `SIGNALING_REDIS_SERVER=/path/to/redis-server`); without it
//! every test here prints one `SKIPPED:` line and passes, except under `CI=true`, where it fails.

mod bus;
mod cluster_faults;
mod faults;
mod handover;
mod leases;
mod lookalikes;
mod nodes;
mod ops;
mod randomized;
mod scenarios;

use std::future::Future;
use std::time::{Duration, Instant};

use signaling_redis::lease::{LeaseConfig, LeaseError, Leases, NodeId};
use signaling_redis::testing::RedisServer;

/// Leases for node `node` on `redis`, with `ttl`.
async fn leases(redis: &RedisServer, node: &str, ttl: Duration) -> Leases {
    let mut config = LeaseConfig::default();
    config.ttl = ttl;
    Leases::connect(&redis.url(), NodeId::new(node), config)
        .await
        .expect("connect to the test redis-server")
}

/// Repeats `call` while Redis is unavailable (a connection still reconnecting after a restart),
/// for at most 10 s.
async fn until_available<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LeaseError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("Redis did not come back: {e}"),
        }
    }
}
