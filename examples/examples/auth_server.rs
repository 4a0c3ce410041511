//! A signaling server that lets in only clients with a valid HMAC token, each bound to the
//! username its token names (raw tokio-tungstenite, any path).
//!
//! ```text
//! export SIGNALING_SECRET=$(openssl rand -hex 32)
//! cargo run --example auth_server -- --mint alice      # a token valid 5 min (--token-ttl) and a URL
//! cargo run --example auth_server                      # serves on 127.0.0.1:8083
//! ```
//!
//! A token is `user:expiry:signature`: `expiry` in Unix seconds, `signature` the hex
//! HMAC-SHA256 of `user:expiry` under the shared secret. Your app server mints one for its
//! logged-in user (the same few lines in any language) and the page connects with
//! `new WebSocket("wss://…/?token=" + encodeURIComponent(token))`; native clients may send
//! `Authorization: Bearer <token>` instead. A missing, malformed, forged or expired token is
//! refused with HTTP 401 before any WebSocket exists, and a client can only `login` as the
//! name in its token (any other gets `unauthorized`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signaling_core::Username;
use signaling_examples::{ServerArgs, base_url, ctrl_c, init_allocator, init_tracing};
use signaling_ws::auth::HmacTokenAuthenticator;

/// WebRTC signaling server with HMAC-token authentication (raw tokio-tungstenite).
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIGNALING_ADDR", default_value = "127.0.0.1:8083")]
    addr: SocketAddr,
    /// The secret shared with whatever mints tokens: at least 16 bytes, better 32 random ones
    /// (`openssl rand -hex 32`). Prefer the environment variable: other local users can read
    /// command lines.
    #[arg(long, env = "SIGNALING_SECRET", hide_env_values = true)]
    secret: String,
    /// Print a token (and a URL with it) for this username, then exit.
    #[arg(long, value_name = "NAME")]
    mint: Option<String>,
    /// How long minted tokens stay valid, in seconds. Default 5 minutes: a page opens its
    /// socket with the token at once, the token is only checked then (an open connection
    /// outlives it), and a leaked one (query strings end up in proxy logs) is soon useless.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    token_ttl: u64,
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> std::io::Result<ExitCode> {
    let cli = Cli::parse();
    signaling_examples::runtime(cli.server.worker_threads)?.block_on(run(cli))
}

async fn run(cli: Cli) -> std::io::Result<ExitCode> {
    let auth = match HmacTokenAuthenticator::new(&cli.secret) {
        Ok(auth) => auth,
        Err(e) => {
            eprintln!("auth_server: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(name) = &cli.mint {
        let name = match Username::new(name) {
            Ok(name) => name,
            Err(e) => {
                eprintln!("auth_server: --mint {name:?}: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let token = auth.mint_valid_for(&name, Duration::from_secs(cli.token_ttl));
        println!("{token}");
        let base = base_url(cli.addr, cli.server.tls.enabled(), true);
        println!("{base}/?token={}", percent_encode(&token));
        return Ok(ExitCode::SUCCESS);
    }

    init_tracing();
    init_allocator();
    let hub = cli
        .server
        .start_hub(|config| config.with_authenticator(auth))
        .await?;
    let tls = cli.server.tls.load_or_exit(cli.addr);
    let listener = tokio::net::TcpListener::bind(cli.addr).await?;
    let addr = listener.local_addr()?;
    let url = format!("{}/", base_url(addr, tls.is_some(), true));
    tracing::info!("signaling at {url}?token=… (mint one with --mint NAME)");
    let server = match tls {
        Some(tls) => {
            // Any path answers an https:// GET (with 400): enough to accept the certificate.
            tls.announce(&format!("{}/", base_url(addr, true, false)), &url);
            tokio::spawn(signaling_ws::serve_tls(listener, tls.acceptor, hub.clone()))
        }
        None => tokio::spawn(signaling_ws::serve(listener, hub.clone())),
    };
    ctrl_c().await;
    hub.shutdown().await;
    server.await??;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// What `encodeURIComponent` does: everything but `A–Z a–z 0–9 - _ . ! ~ * ' ( )` escaped.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
