//! The measurement behind the driver's choice of who owns the `Router`: a mutex locked around
//! the synchronous call (what `signaling_core::driver::Hub` does), or a router task that
//! connections message through a channel. 100 pairs are in a call; each caller relays 2,000
//! candidates to its callee through the router into per-connection bounded queues; the
//! callees encode what they get. Five interleaved runs of each, medians printed.
//!
//! ```text
//! cargo run --release --example router_ownership
//! ```
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use signaling_core::{ConnectionId, Output, Router, RouterConfig, ServerMessage};
use tokio::sync::mpsc;

const PAIRS: u64 = 100;
const N: usize = 2000;

struct State {
    router: Router,
    queues: HashMap<ConnectionId, mpsc::Sender<ServerMessage>>,
}

fn dispatch(state: &mut State) {
    while let Some(o) = state.router.poll_output() {
        if let Output::Transmit(t) = o {
            if let Some(q) = state.queues.get(&t.to) {
                let _ = q.try_send(t.message);
            }
        }
    }
}

fn setup() -> (State, Vec<mpsc::Receiver<ServerMessage>>) {
    let mut router = Router::new(RouterConfig::default().with_rate_limit(None));
    let now = tokio::time::Instant::now().into_std();
    let mut queues = HashMap::new();
    let mut rxs = Vec::new();
    for p in 0..PAIRS {
        for side in 0..2 {
            let id = ConnectionId(p * 2 + side);
            router.handle_connect(id).unwrap();
            router
                .handle_text(
                    id,
                    &format!(r#"{{"type":"login","username":"u{}"}}"#, id.0),
                    now,
                )
                .unwrap();
            let (tx, rx) = mpsc::channel(N + 16);
            queues.insert(id, tx);
            rxs.push(rx);
        }
        router
            .handle_text(
                ConnectionId(p * 2),
                &format!(
                    r#"{{"type":"offer","offer":{{}},"otherUsername":"u{}"}}"#,
                    p * 2 + 1
                ),
                now,
            )
            .unwrap();
    }
    while router.poll_output().is_some() {}
    (State { router, queues }, rxs)
}

fn messages(p: u64) -> Vec<String> {
    (0..N)
        .map(|i| format!(r#"{{"type":"candidate","candidate":{{"candidate":"candidate:{i} 1 udp 2122260223 192.0.2.{p} 5{i:04} typ host","sdpMid":"0","sdpMLineIndex":0}},"otherUsername":"u{}"}}"#, p * 2 + 1))
        .collect()
}

async fn receivers(rxs: Vec<mpsc::Receiver<ServerMessage>>) -> Vec<tokio::task::JoinHandle<()>> {
    rxs.into_iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, mut rx)| {
            tokio::spawn(async move {
                for _ in 0..N {
                    let m = rx.recv().await.unwrap();
                    std::hint::black_box(m.to_json());
                }
            })
        })
        .collect()
}

async fn with_lock() -> f64 {
    let (state, rxs) = setup();
    let state = Arc::new(Mutex::new(state));
    let inputs: Vec<_> = (0..PAIRS).map(messages).collect();
    let start = Instant::now();
    let recv = receivers(rxs).await;
    let mut senders = Vec::new();
    for (p, msgs) in inputs.into_iter().enumerate() {
        let state = Arc::clone(&state);
        senders.push(tokio::spawn(async move {
            let id = ConnectionId(p as u64 * 2);
            for (i, m) in msgs.iter().enumerate() {
                let now = tokio::time::Instant::now().into_std();
                {
                    let mut s = state.lock().unwrap();
                    s.router.handle_text(id, m, now).unwrap();
                    dispatch(&mut s);
                }
                if i % 32 == 31 {
                    tokio::task::yield_now().await; // a reader yields when its socket is drained
                }
            }
        }));
    }
    for t in senders.into_iter().chain(recv) {
        t.await.unwrap();
    }
    (PAIRS as f64 * N as f64) / start.elapsed().as_secs_f64()
}

async fn with_task() -> f64 {
    let (mut state, rxs) = setup();
    let (tx, mut rx) = mpsc::channel::<(ConnectionId, String)>(1024);
    let router_task = tokio::spawn(async move {
        while let Some((id, text)) = rx.recv().await {
            let now = tokio::time::Instant::now().into_std();
            state.router.handle_text(id, &text, now).unwrap();
            dispatch(&mut state);
        }
    });
    let inputs: Vec<_> = (0..PAIRS).map(messages).collect();
    let start = Instant::now();
    let recv = receivers(rxs).await;
    let mut senders = Vec::new();
    for (p, msgs) in inputs.into_iter().enumerate() {
        let tx = tx.clone();
        senders.push(tokio::spawn(async move {
            let id = ConnectionId(p as u64 * 2);
            for (i, m) in msgs.into_iter().enumerate() {
                tx.send((id, m)).await.unwrap();
                if i % 32 == 31 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    drop(tx);
    for t in senders.into_iter().chain(recv) {
        t.await.unwrap();
    }
    let rate = (PAIRS as f64 * N as f64) / start.elapsed().as_secs_f64();
    router_task.await.unwrap();
    rate
}

fn main() {
    // Two workers: the reference machine has 2 cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            a.push(with_lock().await);
            b.push(with_task().await);
        }
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        println!(
            "lock:        median {:.0} msg/s  all {:?}",
            a[2],
            a.iter().map(|x| *x as u64).collect::<Vec<_>>()
        );
        println!(
            "router task: median {:.0} msg/s  all {:?}",
            b[2],
            b.iter().map(|x| *x as u64).collect::<Vec<_>>()
        );
    });
}
