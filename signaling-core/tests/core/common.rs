//! A small harness over the pure router: connections by number, frames in, JSON out.
#![allow(dead_code)]
// Tests play the driver's part: they read the clock the router may not.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::Value;
use signaling_core::{ConnectionId, Output, Router, RouterConfig};

pub struct Harness {
    pub router: Router,
    pub now: Instant,
    next: u64,
}

impl Harness {
    pub fn new(config: RouterConfig) -> Self {
        Harness {
            router: Router::new(config),
            now: Instant::now(),
            next: 1,
        }
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
                Output::Event(_) => {}
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
