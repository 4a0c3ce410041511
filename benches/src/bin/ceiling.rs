//! `ceiling`: the least a WebSocket signaling relay can do, as a yardstick.
//!
//! A bare tokio-tungstenite server that remembers `login` name → sender,
//! answers `{"type":"login","success":true}` (or `false` for a taken name),
//! and forwards every frame that names an `otherUsername` (offer, answer,
//! candidate, close) to that user *as-is*: the same bytes, not re-serialized,
//! with no validation, no call state, no rate limits and no logging. The only
//! JSON work on a forwarded frame is a substring search for
//! `"otherUsername":"`; only frames without it (logins) are parsed.
//!
//! What it still does, so that the comparison stays fair to a real server:
//! - one reader task and one writer task per connection, joined by a
//!   bounded queue (`--queue`, default 256) whose back-pressure stalls the
//!   sender's reader rather than growing without limit;
//! - the writer feeds every queued frame before one flush (one `write` system
//!   call for a burst);
//! - `TCP_NODELAY` on every connection;
//! - small buffers, as a server tuned for many connections would use:
//!   tungstenite's read buffer `--read-buffer` (default 4 KiB instead of the
//!   library's eager 128 KiB), a 4 KiB write buffer, and 64 KiB message and
//!   frame limits.
//!
//! `--threads 1` (the default) runs a current-thread tokio runtime, the
//! fastest choice when the server is pinned to one core, as `scripts/bench.sh`
//! does. It binds loopback addresses only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::accept_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser, Debug)]
#[command(about = "Bare forwarding WebSocket server: the performance ceiling")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:18090")]
    addr: SocketAddr,
    /// Runtime worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// tungstenite read buffer per connection, in bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// Frames queued per connection before senders to it wait.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Exit cleanly after this many seconds (as on SIGINT or SIGTERM: a profile-guided
    /// build's profile is written at exit).
    #[arg(long)]
    exit_after: Option<u64>,
}

type Outbox = mpsc::Sender<Message>;
type Registry = Arc<Mutex<HashMap<Box<str>, Outbox>>>;

fn main() {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("ceiling: refusing to listen on non-loopback {}", args.addr);
        std::process::exit(2);
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let exit_after = args.exit_after;
    // Stops cleanly on SIGINT, SIGTERM or --exit-after, so that a profile-guided build's
    // profile is written at exit (scripts/pgo-build.sh); the relay path is the same.
    let served = runtime.block_on(async move {
        let deadline = async {
            match exit_after {
                Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = serve(args) => served,
            () = deadline => Ok(()),
            () = stop_signal() => Ok(()),
        }
    });
    if let Err(e) = served {
        eprintln!("ceiling: {e}");
        std::process::exit(1);
    }
}

/// SIGINT or SIGTERM (or never, where they cannot be listened to).
async fn stop_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    eprintln!("ceiling: listening on {}", listener.local_addr()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(args.read_buffer)
        .write_buffer_size(4096)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    let registry: Registry = Arc::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                eprintln!("ceiling: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            config,
            registry.clone(),
            args.queue.max(1),
        ));
    }
}

#[derive(Deserialize)]
struct Login<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    username: Option<&'a str>,
}

/// The `otherUsername` of a frame, found without parsing it (`None` when the
/// frame has none or the name has escapes).
fn other_username(text: &str) -> Option<&str> {
    const KEY: &str = r#""otherUsername":""#;
    let start = text.find(KEY)? + KEY.len();
    let len = text[start..].find('"')?;
    let name = &text[start..start + len];
    (!name.contains('\\')).then_some(name)
}

const LOGIN_OK: &str = r#"{"type":"login","success":true}"#;
const LOGIN_TAKEN: &str = r#"{"type":"login","success":false}"#;

async fn connection(stream: TcpStream, config: WebSocketConfig, registry: Registry, queue: usize) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (outbox, mut inbox) = mpsc::channel::<Message>(queue);
    let writer = tokio::spawn(async move {
        while let Some(msg) = inbox.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            while let Ok(msg) = inbox.try_recv() {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    let mut me: Option<Box<str>> = None;
    // The last target and its outbox, so a stream of candidates to one peer
    // takes the registry lock once.
    let mut last: Option<(Box<str>, Outbox)> = None;
    while let Some(Ok(msg)) = source.next().await {
        let text: Utf8Bytes = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        if let Some(to) = other_username(&text) {
            let target = match &last {
                Some((name, tx)) if **name == *to => Some(tx.clone()),
                _ => {
                    let found = registry.lock().expect("not poisoned").get(to).cloned();
                    if let Some(tx) = &found {
                        last = Some((to.into(), tx.clone()));
                    }
                    found
                }
            };
            if let Some(tx) = target {
                if tx.send(Message::Text(text)).await.is_err() {
                    last = None;
                }
            }
            continue;
        }
        let Ok(login) = serde_json::from_str::<Login>(&text) else {
            continue;
        };
        if login.kind != "login" || me.is_some() {
            continue;
        }
        let Some(name) = login.username else {
            continue;
        };
        let taken = {
            let mut users = registry.lock().expect("not poisoned");
            if users.contains_key(name) {
                true
            } else {
                users.insert(name.into(), outbox.clone());
                false
            }
        };
        if !taken {
            me = Some(name.into());
        }
        let reply = if taken { LOGIN_TAKEN } else { LOGIN_OK };
        if outbox.send(Message::text(reply)).await.is_err() {
            break;
        }
    }
    if let Some(name) = me {
        let mut users = registry.lock().expect("not poisoned");
        if users.get(&name).is_some_and(|tx| tx.same_channel(&outbox)) {
            users.remove(&name);
        }
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_other_username_without_parsing() {
        let c = r#"{"type":"candidate","candidate":{"candidate":"x"},"otherUsername":"bob"}"#;
        assert_eq!(other_username(c), Some("bob"));
        assert_eq!(other_username(r#"{"type":"login","username":"a"}"#), None);
        assert_eq!(other_username(r#"{"otherUsername":"b\"c"}"#), None);
    }
}
