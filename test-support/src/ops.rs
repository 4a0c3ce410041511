//! What an operator watches: the health checks on the main port and the Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use signaling_core::driver::metrics::Metrics;
use signaling_core::driver::observe::Observer;

use crate::phases::eventually;
use crate::raw::{self, HttpAnswer, Upgrade};
use crate::{Client, Start, call, patiently, quiet_config};

/// A plain `GET path` to the server of `url`: its answer, or `None` when the connection was
/// refused or dropped without one.
pub async fn http_get(url: &str, path: &str) -> Option<HttpAnswer> {
    let (addr, _) = url
        .strip_prefix("ws://")
        .and_then(|r| r.split_once('/'))
        .expect("ws://host:port/path");
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        return None;
    }
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    match raw::send_head(url, &head).await {
        Upgrade::Refused(answer) => Some(answer),
        Upgrade::Dropped => None,
        Upgrade::Accepted(_) => panic!("GET {path} was upgraded"),
    }
}

fn status(answer: &Option<HttpAnswer>) -> Option<u16> {
    answer.as_ref().map(|a| a.status)
}

/// `/healthz` and `/readyz` on the main port: both 200 while running; during the shutdown's
/// drain (held open here by a client that never answers the close frame) `/readyz` says 503
/// with the reason, `/healthz` still 200, and an upgrade is refused with 503; once the
/// shutdown is over nothing answers.
pub async fn health_checks(start: Start) {
    let config = quiet_config()
        .with_close_timeout(Duration::from_secs(30))
        .with_shutdown_timeout(Duration::from_secs(3));
    let server = start(config).await;
    let healthz = http_get(&server.url, "/healthz").await.expect("an answer");
    assert_eq!((healthz.status, healthz.body.trim()), (200, "ok"));
    let readyz = http_get(&server.url, "/readyz").await.expect("an answer");
    assert_eq!((readyz.status, readyz.body.trim()), (200, "ready"));
    // Other paths are not health checks: not answered 200.
    let other = http_get(&server.url, "/readyz/more").await;
    assert_ne!(status(&other), Some(200), "{other:?}");

    // A client that never reads: it never answers the close frame, so the drain lasts until
    // the shutdown timeout.
    let _deaf = raw::upgraded_tcp(&server.url).await;
    eventually("the client to be registered", || {
        server.hub.connection_count() == 1
    })
    .await;
    let hub = server.hub.clone();
    let shutdown = tokio::spawn(async move { hub.shutdown().await });
    eventually("the shutdown to start", || server.hub.is_shutting_down()).await;
    assert!(!server.hub.is_ready());
    let readyz = http_get(&server.url, "/readyz")
        .await
        .expect("an answer while draining");
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(readyz.body.contains("shutting down"), "{readyz:?}");
    let healthz = http_get(&server.url, "/healthz")
        .await
        .expect("an answer while draining");
    assert_eq!(healthz.status, 200, "{healthz:?}");
    let refused = raw::upgrade(&server.url, &[], None).await.refused();
    assert_eq!(refused.status, 503, "{refused:?}");

    patiently("the shutdown", shutdown).await.expect("shutdown");
    patiently("the server task", server.task)
        .await
        .expect("server task");
    assert_eq!(status(&http_get(&server.url, "/readyz").await), None);
}

/// The metrics a scripted session moves, by exactly how much, read through the Prometheus
/// text the hub's [`Metrics`] renders (parsed with a Prometheus parser): logins by result,
/// a call ringing, answered and hung up, relays by kind, an error reply by code, a refused
/// upgrade, connections opened and closed by cause, the gauges.
pub async fn metrics_count_a_scripted_call(start: Start) {
    let metrics = Arc::new(Metrics::new());
    let observer: Arc<dyn Observer> = metrics.clone();
    let server = start(quiet_config().with_observer(Some(observer))).await;
    let before = scrape(&metrics.render(&server.hub));

    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    let mut carol = Client::connect(&server.url).await;
    carol
        .send(json!({"type": "login", "username": "alice"}))
        .await;
    assert_eq!(carol.recv().await["code"], "name_taken");
    call(&mut alice, "alice", &mut bob, "bob").await;
    let candidate = |to: &str| json!({"type": "candidate", "candidate": {"candidate": "c"}, "otherUsername": to});
    for _ in 0..2 {
        alice.send(candidate("bob")).await;
        assert_eq!(bob.recv().await["type"], "candidate");
    }
    bob.send(candidate("alice")).await;
    assert_eq!(alice.recv().await["type"], "candidate");
    alice
        .send(json!({"type": "offer", "offer": {"sdp": "x"}, "otherUsername": "nobody"}))
        .await;
    assert_eq!(alice.recv().await["code"], "unknown_user");
    alice
        .send(json!({"type": "close", "otherUsername": "bob"}))
        .await;
    assert_eq!(bob.recv().await["type"], "close");
    // A refused upgrade: no Sec-WebSocket-Key.
    let (host, path) = server
        .url
        .trim_start_matches("ws://")
        .split_once('/')
        .expect("ws://host:port/path");
    let head = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(
        raw::send_head(&server.url, &head).await.refused().status,
        400
    );
    // bob closes cleanly, carol's TCP connection just goes.
    patiently("bob's close", bob.ws.close(None))
        .await
        .expect("close");
    while let Some(Ok(_)) = patiently(
        "the end of bob's stream",
        futures_util::StreamExt::next(&mut bob.ws),
    )
    .await
    {}
    drop(carol);
    eventually("bob and carol to be gone", || {
        server.hub.connection_count() == 1
    })
    .await;
    // The hub's books close after the teardown: wait for the disconnect counts.
    let counted = || {
        let now = scrape(&metrics.render(&server.hub));
        delta(
            &before,
            &now,
            "signaling_disconnects_total{cause=\"clean\"}",
        ) == 1.0
            && delta(&before, &now, "signaling_disconnects_total{cause=\"lost\"}") == 1.0
    };
    eventually("both disconnects counted", counted).await;
    let after = scrape(&metrics.render(&server.hub));

    let expected: &[(&str, f64)] = &[
        ("signaling_connections_opened_total", 3.0),
        ("signaling_connections_open", 1.0),
        ("signaling_users_logged_in", 1.0),
        ("signaling_logins_total{result=\"success\"}", 2.0),
        ("signaling_logins_total{result=\"name_taken\"}", 1.0),
        ("signaling_calls_ringing_total", 1.0),
        ("signaling_calls_answered_total", 1.0),
        ("signaling_calls_ended_total{reason=\"hung_up\"}", 1.0),
        ("signaling_messages_relayed_total{kind=\"offer\"}", 1.0),
        ("signaling_messages_relayed_total{kind=\"answer\"}", 1.0),
        ("signaling_messages_relayed_total{kind=\"candidate\"}", 3.0),
        ("signaling_error_replies_total{code=\"unknown_user\"}", 1.0),
        (
            "signaling_upgrades_refused_total{reason=\"bad_handshake\"}",
            1.0,
        ),
        ("signaling_disconnects_total{cause=\"clean\"}", 1.0),
        ("signaling_disconnects_total{cause=\"lost\"}", 1.0),
        ("signaling_sessions_ended_total{reason=\"closed\"}", 1.0),
    ];
    let mut moved: BTreeMap<String, f64> = BTreeMap::new();
    for (series, value) in &after {
        let d = value - before.get(series).copied().unwrap_or(0.0);
        if d != 0.0 && series != "signaling_queued_bytes" {
            moved.insert(series.clone(), d);
        }
    }
    let want: BTreeMap<String, f64> = expected.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    // Exactly these moved, by exactly these amounts; nothing else did.
    assert_eq!(moved, want);
    drop(alice);
    server.hub.shutdown().await;
}

/// Every sample of a Prometheus text exposition, keyed `name{label="value",…}` (labels
/// sorted), parsed with `prometheus-parse`. Panics on text it cannot parse.
pub fn scrape(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    // The parser skips what it does not understand: every sample line must have become one.
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(scrape.samples.len(), lines, "unparsed lines in\n{text}");
    scrape
        .samples
        .into_iter()
        .map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected sample {other:?}"),
            };
            let mut labels: Vec<_> = sample.labels.iter().collect();
            labels.sort();
            let labels: Vec<String> = labels
                .into_iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let key = if labels.is_empty() {
                sample.metric
            } else {
                format!("{}{{{}}}", sample.metric, labels.join(","))
            };
            (key, value)
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}
