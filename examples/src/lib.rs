//! What the example servers in `examples/examples/` share: their command line and logging.
//!
//! Run them from the repository root:
//!
//! ```text
//! cargo run --example basic_server   # warp: demo page at /, signaling at /ws (127.0.0.1:8080)
//! cargo run --example ws_server      # raw tokio-tungstenite, any path (127.0.0.1:8081)
//! cargo run --example embed_warp     # signaling beside other routes of a warp app (127.0.0.1:8082)
//! ```

use clap::Args;
use signaling_core::driver::Config;
use signaling_core::{RateLimit, RouterConfig};

/// Flags every example server takes.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Messages per second allowed per connection (token bucket, bursts of 10 seconds' worth
    /// and at least 2,000); 0 turns the limit off.
    #[arg(long, env = "SIGNALING_RATE_LIMIT", default_value_t = RateLimit::default().per_second)]
    pub rate_limit: u32,
}

impl ServerArgs {
    /// The driver configuration these flags ask for (everything else at its default).
    pub fn config(&self) -> Config {
        let rate_limit = (self.rate_limit > 0).then(|| {
            let default = RateLimit::default();
            RateLimit {
                per_second: self.rate_limit,
                burst: default.burst.max(self.rate_limit.saturating_mul(10)),
                max_strikes: default.max_strikes,
            }
        });
        Config::default().with_router(RouterConfig::default().with_rate_limit(rate_limit))
    }
}

/// `{"iceServers":[{"urls":"…"},…]}`, the body of `/config.json` that the demo page reads.
pub fn ice_config_json(ice_servers: &[String]) -> String {
    let servers: Vec<_> = ice_servers
        .iter()
        .map(|url| serde_json::json!({ "urls": url }))
        .collect();
    serde_json::json!({ "iceServers": servers }).to_string()
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// Resolves on Ctrl-C (or if the signal handler cannot be installed, never).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    tracing::info!("Ctrl-C: shutting down gracefully");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_config() {
        assert_eq!(ice_config_json(&[]), r#"{"iceServers":[]}"#);
        assert_eq!(
            ice_config_json(&["stun:stun.example.org:3478".into()]),
            r#"{"iceServers":[{"urls":"stun:stun.example.org:3478"}]}"#
        );
    }

    #[test]
    fn rate_limit_zero_is_off() {
        let args = ServerArgs { rate_limit: 0 };
        assert_eq!(args.config().router.rate_limit, None);
        let args = ServerArgs { rate_limit: 50 };
        assert_eq!(
            args.config().router.rate_limit.map(|r| r.per_second),
            Some(50)
        );
    }
}
