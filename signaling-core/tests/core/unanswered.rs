//! Issue 9, part B: before the callee answers, what each side may send into the call is
//! bounded (offers, candidates, candidate size); over a bound the sender gets
//! `unanswered_limit` and nothing reaches the other side. The bounds lift with the answer.

use crate::common::{Harness, answer, candidate, offer};
use serde_json::json;
use signaling_core::{RouterConfig, UnansweredLimits};

/// A candidate whose `candidate` payload is exactly `bytes` long.
fn candidate_of(to: &str, bytes: usize) -> String {
    let filler = bytes - r#"{"candidate":""}"#.len();
    format!(
        r#"{{"type":"candidate","candidate":{{"candidate":"{}"}},"otherUsername":"{to}"}}"#,
        "x".repeat(filler)
    )
}

/// mallory has offered to carol, who never answers.
fn pending(h: &mut Harness) -> (signaling_core::ConnectionId, signaling_core::ConnectionId) {
    let m = h.user("mallory");
    let c = h.user("carol");
    h.send(m, &offer("carol"));
    assert_eq!(h.drain().len(), 1);
    (m, c)
}

#[test]
fn defaults_are_documented_values() {
    let limits = UnansweredLimits::default();
    assert_eq!(
        (
            limits.max_offers,
            limits.max_candidates,
            limits.max_candidate_bytes
        ),
        (4, 100, 2048)
    );
    assert_eq!(RouterConfig::default().unanswered, Some(limits));
}

#[test]
fn a_candidate_flood_into_an_unanswered_call_stops_at_the_bound() {
    let mut h = Harness::unlimited();
    let (m, c) = pending(&mut h);
    for n in 0..100 {
        h.send(m, &candidate("carol", n));
    }
    let out = h.drain();
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(|(to, _)| *to == c));
    for n in 100..150 {
        h.expect_error(m, &candidate("carol", n), "unanswered_limit");
    }
    h.send(m, &candidate("carol", 999));
    let out = h.drain();
    let message = out[0].1["message"].as_str().unwrap();
    assert!(
        message.contains("100 candidates") && message.contains("answered"),
        "{message}"
    );
    // The callee has its own allowance, untouched by the caller's flood.
    h.send(c, &candidate("mallory", 1));
    assert_eq!(h.drain()[0].0, m);
}

#[test]
fn an_oversized_candidate_before_the_answer_is_refused() {
    let mut h = Harness::unlimited();
    let (m, c) = pending(&mut h);
    h.expect_error(m, &candidate_of("carol", 64 * 1024), "unanswered_limit");
    h.send(m, &candidate_of("carol", 2049));
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, m);
    let message = out[0].1["message"].as_str().unwrap();
    assert!(
        message.contains("2048 bytes") && message.contains("2049"),
        "{message}"
    );
    h.send(m, &candidate_of("carol", 2048));
    assert_eq!(h.drain()[0].0, c);
    // The answer lifts it.
    h.send(c, &answer("mallory"));
    h.send(m, &candidate_of("carol", 64 * 1024));
    let to: Vec<_> = h.drain().into_iter().map(|(to, _)| to).collect();
    assert_eq!(to, vec![m, c]);
}

#[test]
fn re_offers_before_the_answer_are_bounded() {
    let mut h = Harness::unlimited();
    let (m, c) = pending(&mut h);
    // The opening offer and 3 renegotiations.
    for _ in 0..3 {
        h.send(m, &offer("carol"));
        assert_eq!(h.drain()[0].0, c);
    }
    h.expect_error(m, &offer("carol"), "unanswered_limit");
    h.send(m, &offer("carol"));
    let message = h.drain()[0].1["message"].as_str().unwrap().to_string();
    assert!(message.contains("4 offers"), "{message}");
    // The callee counts its own offers.
    for _ in 0..4 {
        h.send(c, &offer("mallory"));
        assert_eq!(h.drain()[0].0, m);
    }
    h.expect_error(c, &offer("mallory"), "unanswered_limit");
}

#[test]
fn nothing_is_bounded_once_the_call_is_answered() {
    let mut h = Harness::unlimited();
    let (a, b) = h.answered_call();
    for n in 0..300 {
        h.send(a, &candidate("bob", n));
    }
    for _ in 0..10 {
        h.send(a, &offer("bob"));
        h.send(b, &offer("alice"));
    }
    h.send(b, &candidate_of("alice", 10_000));
    let out = h.drain();
    assert_eq!(out.len(), 321);
    assert!(out.iter().all(|(_, m)| m["type"] != "error"), "{out:?}");
}

#[test]
fn each_call_starts_with_fresh_counters() {
    let mut h = Harness::unlimited();
    let (m, c) = pending(&mut h);
    for n in 0..100 {
        h.send(m, &candidate("carol", n));
    }
    assert_eq!(h.drain().len(), 100);
    h.expect_error(m, &candidate("carol", 100), "unanswered_limit");
    h.send(m, r#"{"type":"close"}"#);
    assert_eq!(
        h.drain(),
        vec![(c, json!({"type":"close","username":"mallory"}))]
    );
    h.send(m, &offer("carol"));
    h.send(m, &candidate("carol", 1));
    assert_eq!(h.drain().len(), 2);
}

#[test]
fn the_bounds_can_be_set_and_turned_off() {
    let limits = UnansweredLimits {
        max_offers: 1,
        max_candidates: 2,
        max_candidate_bytes: 40,
    };
    let mut h = Harness::new(
        RouterConfig::default()
            .with_rate_limit(None)
            .with_unanswered_limits(Some(limits)),
    );
    let (m, _) = pending(&mut h);
    h.expect_error(m, &offer("carol"), "unanswered_limit");
    h.send(m, &candidate("carol", 1));
    h.send(m, &candidate("carol", 2));
    assert_eq!(h.drain().len(), 2);
    h.expect_error(m, &candidate("carol", 3), "unanswered_limit");

    let mut h = Harness::new(
        RouterConfig::default()
            .with_rate_limit(None)
            .with_unanswered_limits(None),
    );
    let (m, c) = pending(&mut h);
    for n in 0..150 {
        h.send(m, &candidate("carol", n));
    }
    h.send(m, &candidate_of("carol", 64 * 1024));
    for _ in 0..10 {
        h.send(m, &offer("carol"));
    }
    let out = h.drain();
    assert_eq!(out.len(), 161);
    assert!(out.iter().all(|(to, _)| *to == c));
}
