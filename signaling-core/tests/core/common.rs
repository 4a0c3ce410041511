//! A small harness over the pure router: connections by number, frames in, JSON out.
#![allow(dead_code)]
// Tests play the driver's part: they read the clock the router may not.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::Value;
use signaling_core::{ConnectionId, Event, Output, Router, RouterConfig, SessionToken};

pub struct Harness {
    pub router: Router,
    pub now: Instant,
    next: u64,
    /// Events drained so far (see [`Harness::take_events`]).
    pub events: Vec<Event>,
}

impl Harness {
    pub fn new(config: RouterConfig) -> Self {
        Harness {
            router: Router::new(config),
            now: Instant::now(),
            next: 1,
            events: Vec::new(),
        }
    }

    /// A router with a deterministic token source: `tok1`, `tok2`, …
    pub fn with_tokens(config: RouterConfig) -> Self {
        let mut h = Harness::new(config);
        let mut n = 0u64;
        let router = std::mem::take(&mut h.router);
        h.router = router.with_token_source(move || {
            n += 1;
            SessionToken::new(format!("tok{n}"))
        });
        h
    }

    /// Connects and logs in as `name` with a resumable session; returns the connection and
    /// its token.
    pub fn resumable(&mut self, name: &str) -> (ConnectionId, String) {
        let c = self.connect();
        self.send(
            c,
            &format!(r#"{{"type":"login","username":"{name}","resumable":true}}"#),
        );
        let out = self.drain();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, c);
        assert_eq!(out[0].1["success"], true, "{out:?}");
        let token = out[0].1["token"].as_str().expect("a token").to_string();
        (c, token)
    }

    /// The connection ends abnormally (no close frame) now.
    pub fn lose(&mut self, conn: ConnectionId) {
        self.router.handle_connection_lost(conn, self.now).unwrap();
    }

    /// Sends `resume` with `token` and `lastSeq`.
    pub fn resume(&mut self, conn: ConnectionId, token: &str, last_seq: u64) {
        self.send(
            conn,
            &format!(r#"{{"type":"resume","token":"{token}","lastSeq":{last_seq}}}"#),
        );
    }

    /// The clock moves on by `by`, then the router handles its timers.
    pub fn tick(&mut self, by: Duration) {
        self.now += by;
        self.router.handle_timeout(self.now);
    }

    /// The events drained since the last call (drain the outputs first).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// A router without rate limiting.
    pub fn unlimited() -> Self {
        Harness::new(RouterConfig::default().with_rate_limit(None))
    }

    pub fn connect(&mut self) -> ConnectionId {
        let id = ConnectionId(self.next);
        self.next += 1;
        self.router.handle_connect(id).unwrap();
        id
    }

    /// Connects and logs in as `name`, checking the success reply.
    pub fn user(&mut self, name: &str) -> ConnectionId {
        let c = self.connect();
        self.send(c, &format!(r#"{{"type":"login","username":"{name}"}}"#));
        assert_eq!(
            self.drain(),
            vec![(c, serde_json::json!({"type":"login","success":true}))]
        );
        c
    }

    /// alice and bob in an answered call, outputs drained.
    pub fn answered_call(&mut self) -> (ConnectionId, ConnectionId) {
        let a = self.user("alice");
        let b = self.user("bob");
        self.send(a, &offer("bob"));
        self.send(b, &answer("alice"));
        assert_eq!(self.drain().len(), 2);
        (a, b)
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub fn send(&mut self, conn: ConnectionId, text: &str) {
        self.router.handle_text(conn, text, self.now).unwrap();
    }

    /// Every output since the last drain, as (addressee, parsed JSON).
    pub fn drain(&mut self) -> Vec<(ConnectionId, Value)> {
        self.drain_raw()
            .into_iter()
            .map(|(to, text)| {
                (
                    to,
                    serde_json::from_str(&text).expect("server output is JSON"),
                )
            })
            .collect()
    }

    /// Every output since the last drain, as (addressee, frame text). Close instructions
    /// appear as the text `CLOSE <code>`.
    pub fn drain_raw(&mut self) -> Vec<(ConnectionId, String)> {
        let mut out = Vec::new();
        while let Some(o) = self.router.poll_output() {
            match o {
                Output::Transmit(t) => out.push((t.to, t.to_json())),
                Output::Disconnect { conn, reason } => {
                    out.push((conn, format!("CLOSE {}", reason.code())))
                }
                Output::Event(e) => self.events.push(e),
                other => panic!("unexpected output {other:?}"),
            }
        }
        out
    }

    /// Sends and expects exactly one error reply to the sender with `code`.
    pub fn expect_error(&mut self, conn: ConnectionId, text: &str, code: &str) {
        self.send(conn, text);
        let out = self.drain();
        assert_eq!(out.len(), 1, "{text}: {out:?}");
        assert_eq!(out[0].0, conn, "{text}: {out:?}");
        assert_eq!(out[0].1["type"], "error", "{text}: {out:?}");
        assert_eq!(out[0].1["code"], code, "{text}: {out:?}");
        assert!(out[0].1["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

pub fn offer(to: &str) -> String {
    format!(r#"{{"type":"offer","offer":{{"type":"offer","sdp":"v=0"}},"otherUsername":"{to}"}}"#)
}

pub fn answer(to: &str) -> String {
    format!(
        r#"{{"type":"answer","answer":{{"type":"answer","sdp":"v=0"}},"otherUsername":"{to}"}}"#
    )
}

pub fn candidate(to: &str, n: u32) -> String {
    format!(
        r#"{{"type":"candidate","candidate":{{"candidate":"c{n}","sdpMid":"0"}},"otherUsername":"{to}"}}"#
    )
}

/// Cases per property test: `PROPTEST_CASES`, default 1,000.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1_000)
}
