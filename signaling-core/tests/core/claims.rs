//! Cluster mode's first step in the pure router (`RouterConfig::claim_names`): a login is
//! granted only once the shared registry says so (`Output::Claim` → `handle_claimed`), and an
//! ended session gives its name back (`Output::Release`). See `docs/cluster.md`.

use std::sync::Arc;

use serde_json::json;
use signaling_core::{
    ClaimOutcome, ConnectionId, Event, Output, RouterConfig, ServerMessage, Username,
};

use crate::common::{Harness, offer};

fn harness() -> Harness {
    Harness::with_tokens(
        RouterConfig::default()
            .with_rate_limit(None)
            .with_claim_names(true),
    )
}

fn name(s: &str) -> Username {
    Username::new(s).unwrap()
}

/// Every output since the last look, events left out.
fn outputs(h: &mut Harness) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = h.router.poll_output() {
        if !matches!(o, Output::Event(_)) {
            out.push(o);
        }
    }
    out
}

fn login(h: &mut Harness, conn: ConnectionId, who: &str) {
    h.send(conn, &format!(r#"{{"type":"login","username":"{who}"}}"#));
}

/// A login that passes the local checks becomes a claim; the reply waits for the registry.
fn claimed(h: &mut Harness, who: &str) -> ConnectionId {
    let c = h.connect();
    login(h, c, who);
    let out = outputs(h);
    assert_eq!(
        out,
        vec![Output::Claim {
            conn: c,
            name: name(who),
            skeleton: Arc::from(name(who).skeleton().as_str()),
        }]
    );
    c
}

#[test]
fn a_won_claim_completes_the_login() {
    let mut h = harness();
    let a = claimed(&mut h, "alice");
    assert!(
        !h.router.is_logged_in("alice"),
        "not before the registry said so"
    );
    h.router
        .handle_claimed(a, &name("alice"), ClaimOutcome::Won)
        .unwrap();
    assert_eq!(h.drain(), vec![(a, json!({"type":"login","success":true}))]);
    let events = h.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::LoggedIn { conn, .. } if *conn == a))
    );
    assert_eq!(h.router.connection_of("alice"), Some(a));
}

#[test]
fn while_a_claim_is_pending_the_name_and_its_look_alikes_are_reserved_here() {
    let mut h = harness();
    let a = claimed(&mut h, "alice");
    let b = h.connect();
    login(&mut h, b, "alice");
    login(&mut h, b, "аlice"); // Cyrillic а
    let out = h.drain();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|(to, v)| *to == b && v["code"] == "name_taken")
    );
    // The claiming connection itself: no second login, no relay before the answer.
    login(&mut h, a, "alice2");
    h.send(a, &offer("bob"));
    let out = h.drain();
    assert_eq!(out[0].1["code"], "already_logged_in", "{out:?}");
    assert_eq!(out[1].1["code"], "not_logged_in", "{out:?}");
}

#[test]
fn a_taken_or_unavailable_claim_refuses_the_login_and_frees_the_reservation() {
    let mut h = harness();
    let a = claimed(&mut h, "alice");
    h.router
        .handle_claimed(a, &name("alice"), ClaimOutcome::Taken)
        .unwrap();
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].1["success"].as_bool(), out[0].1["code"].as_str()),
        (Some(false), Some("name_taken"))
    );
    // Free again here: another claim goes out (this time the registry is down).
    login(&mut h, a, "alice");
    assert!(matches!(outputs(&mut h)[..], [Output::Claim { .. }]));
    h.router
        .handle_claimed(a, &name("alice"), ClaimOutcome::Unavailable)
        .unwrap();
    let out = h.drain();
    assert_eq!(out[0].1["code"], "unavailable", "{out:?}");
    assert!(!h.router.is_logged_in("alice"));
}

#[test]
fn an_ended_session_releases_its_name_and_a_late_win_is_given_back() {
    let mut h = harness();
    let a = claimed(&mut h, "alice");
    h.router
        .handle_claimed(a, &name("alice"), ClaimOutcome::Won)
        .unwrap();
    h.drain();
    h.router.handle_disconnect(a).unwrap();
    assert_eq!(
        outputs(&mut h),
        vec![Output::Release {
            name: name("alice"),
            skeleton: Arc::from("alice"),
        }]
    );
    // A connection that leaves while its claim is in flight: the win is handed back.
    let b = claimed(&mut h, "bob");
    h.router.handle_disconnect(b).unwrap();
    assert!(outputs(&mut h).is_empty());
    h.router
        .handle_claimed(b, &name("bob"), ClaimOutcome::Won)
        .unwrap();
    assert_eq!(
        outputs(&mut h),
        vec![Output::Release {
            name: name("bob"),
            skeleton: Arc::from("bob"),
        }]
    );
    assert!(!h.router.is_logged_in("bob"));
    // A late answer for a claim another local connection has taken over since: ignored.
    let c = claimed(&mut h, "carol");
    h.router.handle_disconnect(c).unwrap();
    let d = claimed(&mut h, "carol");
    h.router
        .handle_claimed(c, &name("carol"), ClaimOutcome::Won)
        .unwrap();
    assert!(outputs(&mut h).is_empty(), "carol is still pending for d");
    h.router
        .handle_claimed(d, &name("carol"), ClaimOutcome::Won)
        .unwrap();
    assert_eq!(h.router.connection_of("carol"), Some(d));
}

#[test]
fn a_claim_not_yet_sent_leaves_with_its_connection() {
    let mut h = harness();
    let a = h.connect();
    login(&mut h, a, "alice");
    // The driver has not drained the claim yet when the connection goes.
    h.router.handle_disconnect(a).unwrap();
    assert!(outputs(&mut h).is_empty());
    let b = claimed(&mut h, "alice");
    assert_ne!(a, b);
}

#[test]
fn a_resumable_login_gets_its_token_once_the_claim_is_won() {
    let mut h = harness();
    let a = h.connect();
    h.send(a, r#"{"type":"login","username":"alice","resumable":true}"#);
    assert!(matches!(outputs(&mut h)[..], [Output::Claim { .. }]));
    h.router
        .handle_claimed(a, &name("alice"), ClaimOutcome::Won)
        .unwrap();
    let out = outputs(&mut h);
    let [Output::Transmit(t)] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(
        matches!(t.message, ServerMessage::SessionStarted { .. }),
        "{t:?}"
    );
}
