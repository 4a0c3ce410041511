//! The call rules of docs/protocol.md, one by one, on the pure router.

use std::time::Duration;

use crate::common::{Harness, answer, candidate, offer};
use serde_json::json;
use signaling_core::{ConnectionId, RateLimit, RouterConfig, RouterError};

#[test]
fn full_call_as_in_the_tutorial() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    h.send(a, &offer("bob"));
    assert_eq!(
        h.drain(),
        vec![(
            b,
            json!({"type":"offer","offer":{"type":"offer","sdp":"v=0"},"username":"alice"})
        )]
    );
    h.send(b, &answer("alice"));
    assert_eq!(
        h.drain(),
        vec![(
            a,
            json!({"type":"answer","answer":{"type":"answer","sdp":"v=0"},"username":"bob"})
        )]
    );
    h.send(a, &candidate("bob", 1));
    h.send(b, &candidate("alice", 2));
    assert_eq!(
        h.drain(),
        vec![
            (
                b,
                json!({"type":"candidate","candidate":{"candidate":"c1","sdpMid":"0"},"username":"alice"})
            ),
            (
                a,
                json!({"type":"candidate","candidate":{"candidate":"c2","sdpMid":"0"},"username":"bob"})
            ),
        ]
    );
    assert!(h.router.is_answered(a) && h.router.is_answered(b));
    h.send(a, r#"{"type":"close","otherUsername":"bob"}"#);
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert_eq!(h.router.partner(a), None);
    assert_eq!(h.router.partner(b), None);
}

#[test]
fn sender_name_is_stamped_by_the_server() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    h.send(
        a,
        r#"{"type":"offer","offer":{},"otherUsername":"bob","username":"mallory"}"#,
    );
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"offer","offer":{},"username":"alice"}))]
    );
}

#[test]
fn duplicate_login_is_refused_and_the_first_keeps_working() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let a2 = h.connect();
    h.send(a2, r#"{"type":"login","username":"alice"}"#);
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a2);
    assert_eq!(out[0].1["success"], false);
    assert_eq!(out[0].1["code"], "name_taken");
    assert_eq!(h.router.connection_of("alice"), Some(a));
    let b = h.user("bob");
    h.send(b, &offer("alice"));
    assert_eq!(h.drain()[0].0, a);
}

#[test]
fn second_login_on_a_logged_in_connection_is_refused() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    h.send(a, r#"{"type":"login","username":"alicia"}"#);
    let out = h.drain();
    assert_eq!(out[0].1["code"], "already_logged_in");
    assert_eq!(h.router.username(a).unwrap().as_str(), "alice");
    assert_eq!(h.router.connection_of("alicia"), None);
}

#[test]
fn failed_login_can_be_retried_with_another_name() {
    let mut h = Harness::unlimited();
    h.user("alice");
    let c = h.connect();
    h.send(c, r#"{"type":"login","username":"alice"}"#);
    assert_eq!(h.drain()[0].1["code"], "name_taken");
    h.send(c, r#"{"type":"login","username":""}"#);
    let out = h.drain();
    assert_eq!(out[0].1["type"], "login");
    assert_eq!(out[0].1["success"], false);
    assert_eq!(out[0].1["code"], "invalid_username");
    h.send(c, r#"{"type":"login","username":5}"#);
    assert_eq!(
        h.drain()[0].1,
        json!({"type":"login","success":false,"code":"invalid_field","message":"field `username` must be a string"})
    );
    h.send(c, r#"{"type":"login","username":"alice2"}"#);
    assert_eq!(h.drain(), vec![(c, json!({"type":"login","success":true}))]);
}

#[test]
fn prototype_names_are_ordinary_names() {
    let mut h = Harness::unlimited();
    let p = h.user("__proto__");
    let c = h.user("constructor");
    h.user("toString");
    h.send(p, &offer("constructor"));
    assert_eq!(h.drain()[0].0, c);
    h.send(c, &offer("hasOwnProperty"));
    // c is now in a call with __proto__, so the error is about the unknown user first.
    assert_eq!(h.drain()[0].1["code"], "unknown_user");
}

#[test]
fn messages_before_login_are_refused() {
    let mut h = Harness::unlimited();
    h.user("bob");
    let c = h.connect();
    for text in [
        offer("bob"),
        answer("bob"),
        candidate("bob", 1),
        r#"{"type":"close"}"#.to_string(),
    ] {
        h.expect_error(c, &text, "not_logged_in");
    }
}

#[test]
fn unknown_and_offline_users_get_an_error() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    h.expect_error(a, &offer("nobody"), "unknown_user");
    let b = h.user("bob");
    h.router.handle_disconnect(b).unwrap();
    let _ = h.drain();
    h.expect_error(a, &offer("bob"), "unknown_user");
}

#[test]
fn messages_to_oneself_are_refused() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    h.expect_error(a, &offer("alice"), "self_addressed");
    h.expect_error(a, &candidate("alice", 1), "self_addressed");
}

#[test]
fn offer_to_a_user_in_another_call_is_busy() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    let c = h.user("carol");
    h.send(a, &offer("bob"));
    let _ = h.drain();
    // Pending call: bob is being called, so he is busy for carol.
    h.expect_error(c, &offer("bob"), "busy");
    h.expect_error(c, &offer("alice"), "busy");
    h.send(b, &answer("alice"));
    let _ = h.drain();
    h.expect_error(c, &offer("bob"), "busy");
    // And alice, in a call, cannot call carol before hanging up.
    h.expect_error(a, &offer("carol"), "in_call");
    h.send(a, r#"{"type":"close"}"#);
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    h.send(c, &offer("bob"));
    assert_eq!(h.drain()[0].0, b);
}

#[test]
fn renegotiation_inside_a_call_is_relayed_both_ways() {
    let mut h = Harness::unlimited();
    let (a, b) = h.answered_call();
    h.send(b, &offer("alice"));
    assert_eq!(
        h.drain()[0],
        (
            a,
            json!({"type":"offer","offer":{"type":"offer","sdp":"v=0"},"username":"bob"})
        )
    );
    h.send(a, &answer("bob"));
    assert_eq!(h.drain()[0].0, b);
    h.send(a, &offer("bob"));
    assert_eq!(h.drain()[0].0, b);
    assert_eq!(h.router.partner(a), Some(b));
}

#[test]
fn answers_and_candidates_cannot_be_injected_into_other_calls() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    let m = h.user("mallory");
    h.send(a, &offer("bob"));
    let _ = h.drain();
    h.expect_error(m, &answer("alice"), "not_in_call");
    h.expect_error(m, &candidate("bob", 9), "not_in_call");
    h.expect_error(m, &candidate("alice", 9), "not_in_call");
    // The real callee's answer still works.
    h.send(b, &answer("alice"));
    assert_eq!(h.drain()[0].0, a);
}

#[test]
fn candidates_flow_before_the_answer() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    h.send(a, &offer("bob"));
    h.send(a, &candidate("bob", 1));
    h.send(b, &candidate("alice", 2));
    let to: Vec<_> = h.drain().into_iter().map(|(c, _)| c).collect();
    assert_eq!(to, vec![b, b, a]);
}

#[test]
fn other_username_may_be_left_out_inside_a_call() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    h.send(a, &offer("bob"));
    let _ = h.drain();
    h.send(b, r#"{"type":"answer","answer":{"sdp":"x"}}"#);
    h.send(
        a,
        r#"{"type":"candidate","candidate":{"c":1},"otherUsername":null}"#,
    );
    let to: Vec<_> = h.drain().into_iter().map(|(c, _)| c).collect();
    assert_eq!(to, vec![a, b]);
    let c = h.user("carol");
    h.expect_error(c, r#"{"type":"offer","offer":{}}"#, "missing_field");
}

#[test]
fn close_outside_a_call_or_to_the_wrong_user_is_an_error() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    h.user("bob");
    h.user("carol");
    h.expect_error(a, r#"{"type":"close"}"#, "not_in_call");
    h.expect_error(
        a,
        r#"{"type":"close","otherUsername":"bob"}"#,
        "not_in_call",
    );
    h.send(a, &offer("bob"));
    let _ = h.drain();
    h.expect_error(
        a,
        r#"{"type":"close","otherUsername":"carol"}"#,
        "not_in_call",
    );
    assert!(h.router.partner(a).is_some());
}

#[test]
fn simultaneous_hang_ups_tell_each_side_once() {
    let mut h = Harness::unlimited();
    let (a, b) = h.answered_call();
    h.send(a, r#"{"type":"close"}"#);
    h.send(b, r#"{"type":"close"}"#);
    let out = h.drain();
    assert_eq!(out[0], (b, json!({"type":"close","username":"alice"})));
    assert_eq!(out[1].0, b);
    assert_eq!(out[1].1["code"], "not_in_call");
    assert_eq!(out.len(), 2);
}

#[test]
fn disconnect_mid_call_frees_the_name_and_tells_the_partner_once() {
    let mut h = Harness::unlimited();
    let (a, b) = h.answered_call();
    h.router.handle_disconnect(a).unwrap();
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert_eq!(h.router.connection_of("alice"), None);
    assert_eq!(h.router.partner(b), None);
    let a2 = h.user("alice");
    h.send(b, &offer("alice"));
    assert_eq!(h.drain()[0].0, a2);
}

#[test]
fn outputs_queued_for_a_closed_connection_are_dropped() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    let b = h.user("bob");
    h.send(a, &offer("bob"));
    // The driver has not drained yet when bob's transport dies.
    h.router.handle_disconnect(b).unwrap();
    let out = h.drain();
    assert_eq!(out, vec![(a, json!({"type":"close","username":"bob"}))]);
}

#[test]
fn caller_bugs_are_errors_not_panics() {
    let mut h = Harness::unlimited();
    let a = h.connect();
    assert_eq!(
        h.router.handle_connect(a),
        Err(RouterError::AlreadyConnected(a))
    );
    let ghost = ConnectionId(999);
    assert_eq!(
        h.router.handle_text(ghost, "{}", h.now),
        Err(RouterError::UnknownConnection(ghost))
    );
    assert_eq!(
        h.router.handle_disconnect(ghost),
        Err(RouterError::UnknownConnection(ghost))
    );
    h.router.handle_disconnect(a).unwrap();
    assert_eq!(
        h.router.handle_disconnect(a),
        Err(RouterError::UnknownConnection(a))
    );
    assert_eq!(h.router.connection_count(), 0);
}

#[test]
fn binary_frames_get_an_error_and_the_connection_stays_usable() {
    let mut h = Harness::unlimited();
    let a = h.user("alice");
    h.router.handle_binary(a, 12, h.now).unwrap();
    let out = h.drain();
    assert_eq!(out[0].1["code"], "binary_not_supported");
    h.user("bob");
    h.send(a, &offer("bob"));
    assert_eq!(h.drain().len(), 1);
}

#[test]
fn verified_connection_may_only_log_in_as_its_name() {
    let mut h = Harness::unlimited();
    let c = ConnectionId(77);
    h.router
        .handle_connect_verified(c, signaling_core::Username::new("alice").unwrap())
        .unwrap();
    h.send(c, r#"{"type":"login","username":"bob"}"#);
    assert_eq!(h.drain()[0].1["code"], "unauthorized");
    h.send(c, r#"{"type":"login","username":"alice"}"#);
    assert_eq!(h.drain(), vec![(c, json!({"type":"login","success":true}))]);
}

#[test]
fn rate_limit_answers_then_closes_and_refills_with_time() {
    let limit = RateLimit {
        per_second: 10,
        burst: 5,
        max_strikes: 3,
    };
    let mut h = Harness::new(RouterConfig::default().with_rate_limit(Some(limit)));
    let a = h.user("alice"); // uses 1 token
    for _ in 0..4 {
        h.expect_error(a, r#"{"type":"close"}"#, "not_in_call");
    }
    // Bucket empty: rate_limited, twice, then the third strike closes.
    h.expect_error(a, r#"{"type":"close"}"#, "rate_limited");
    h.expect_error(a, r#"{"type":"close"}"#, "rate_limited");
    // Time refills the bucket and resets the strikes.
    h.advance(Duration::from_millis(100));
    h.expect_error(a, r#"{"type":"close"}"#, "not_in_call");
    h.expect_error(a, r#"{"type":"close"}"#, "rate_limited");
    h.expect_error(a, r#"{"type":"close"}"#, "rate_limited");
    h.send(a, r#"{"type":"close"}"#);
    assert_eq!(h.drain_raw(), vec![(a, "CLOSE 1008".to_string())]);
    // Input after the close instruction is ignored until the driver disconnects.
    h.send(a, r#"{"type":"close"}"#);
    assert!(h.drain().is_empty());
    h.router.handle_disconnect(a).unwrap();
    assert_eq!(h.router.user_count(), 0);
}

#[test]
fn default_rate_limit_lets_a_burst_of_1000_candidates_through() {
    let mut h = Harness::new(RouterConfig::default());
    let (a, b) = h.answered_call();
    for n in 0..1000 {
        h.send(a, &candidate("bob", n));
    }
    let out = h.drain();
    assert_eq!(out.len(), 1000);
    assert!(
        out.iter()
            .all(|(to, m)| *to == b && m["type"] == "candidate")
    );
}

#[test]
fn time_going_backwards_does_not_panic() {
    let limit = RateLimit {
        per_second: 1,
        burst: 1,
        max_strikes: 0,
    };
    let mut h = Harness::new(RouterConfig::default().with_rate_limit(Some(limit)));
    let a = h.user("alice");
    h.now -= Duration::from_secs(5);
    h.expect_error(a, r#"{"type":"close"}"#, "rate_limited");
}

#[test]
fn a_limit_that_never_refills_says_so() {
    let limit = RateLimit {
        per_second: 0,
        burst: 2,
        max_strikes: 0,
    };
    let mut h = Harness::new(RouterConfig::default().with_rate_limit(Some(limit)));
    let a = h.user("alice");
    h.expect_error(a, r#"{"type":"close"}"#, "not_in_call");
    h.advance(Duration::from_secs(3600));
    h.send(a, r#"{"type":"close"}"#);
    let out = h.drain();
    assert_eq!(out[0].1["code"], "rate_limited");
    let message = out[0].1["message"].as_str().unwrap();
    assert!(message.contains("does not refill"), "{message}");
}
