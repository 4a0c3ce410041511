//! Sessions, ringing and redial back-off (issue 10), scenario by scenario: resumable login,
//! `seq`, resume and takeover, grace expiry, clean close, history bounds, refused resumes, ring
//! timeout and back-off, and the events beside the transmits.

use std::time::Duration;

use serde_json::json;
use signaling_core::{
    CallEnd, ConnectionId, Event, RouterConfig, SessionConfig, SessionEnd, Username,
};

use crate::common::{Harness, answer, candidate, offer};

fn config() -> RouterConfig {
    RouterConfig::default().with_rate_limit(None)
}

fn harness() -> Harness {
    Harness::with_tokens(config())
}

fn name(s: &str) -> Username {
    Username::new(s).unwrap()
}

const GRACE: Duration = Duration::from_secs(30);

/// The `seq` of every output since the last drain (`null` for none), in order.
fn drain_seqs(h: &mut Harness) -> Vec<serde_json::Value> {
    h.drain()
        .into_iter()
        .map(|(_, v)| v["seq"].clone())
        .collect()
}

/// alice (resumable) in an answered call with bob (plain): alice has been sent seq 1 (bob's
/// offer) and bob alice's answer.
fn resumable_call(h: &mut Harness) -> (ConnectionId, String, ConnectionId) {
    let (a, token) = h.resumable("alice");
    let b = h.user("bob");
    h.send(b, &offer("alice"));
    h.send(a, &answer("bob"));
    let out = h.drain();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!((out[0].0, out[0].1["seq"].clone()), (a, json!(1)));
    assert_eq!((out[1].0, out[1].1.get("seq")), (b, None));
    h.take_events();
    (a, token, b)
}

#[test]
fn resumable_login_reply_and_seq_numbering() {
    let mut h = harness();
    let a = h.connect();
    h.send(a, r#"{"type":"login","username":"alice","resumable":true}"#);
    assert_eq!(
        h.drain_raw(),
        vec![(
            a,
            r#"{"type":"login","success":true,"token":"tok1","graceMs":30000}"#.to_string()
        )]
    );
    let b = h.user("bob");
    // Every later message to alice carries seq as its last field, errors included; bob's
    // plain session sees none.
    h.send(b, &offer("alice"));
    h.send(a, &candidate("carol", 1));
    h.send(a, &answer("bob"));
    h.send(b, &candidate("alice", 7));
    let out = h.drain_raw();
    assert_eq!(
        out,
        vec![
            (
                a,
                r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0"},"username":"bob","seq":1}"#
                    .to_string()
            ),
            (
                a,
                r#"{"type":"error","code":"unknown_user","message":"user \"carol\" is not logged in","seq":2}"#
                    .to_string()
            ),
            (
                b,
                r#"{"type":"answer","answer":{"type":"answer","sdp":"v=0"},"username":"alice"}"#
                    .to_string()
            ),
            (
                a,
                r#"{"type":"candidate","candidate":{"candidate":"c7","sdpMid":"0"},"username":"bob","seq":3}"#
                    .to_string()
            ),
        ]
    );
    // A second session numbers from 1 and gets the next token.
    let (c, token) = h.resumable("carol");
    assert_eq!(token, "tok2");
    h.send(c, &offer("dave"));
    assert_eq!(h.drain()[0].1["seq"], 1);
}

#[test]
fn resume_mid_call_replays_the_gap_and_numbering_goes_on() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    h.lose(a);
    h.advance(Duration::from_secs(5));
    // bob notices nothing and goes on trickling; alice's messages are kept.
    h.send(b, &candidate("alice", 1));
    h.send(b, &candidate("alice", 2));
    assert_eq!(h.drain(), vec![]);
    assert!(h.router.is_suspended("alice"));
    assert_eq!(h.router.partner_of("bob"), Some(&name("alice")));

    let a2 = h.connect();
    h.resume(a2, &token, 1);
    let out = h.drain_raw();
    assert_eq!(
        out,
        vec![
            (
                a2,
                r#"{"type":"resume","success":true,"username":"alice","token":"tok2","graceMs":30000}"#
                    .to_string()
            ),
            (
                a2,
                r#"{"type":"candidate","candidate":{"candidate":"c1","sdpMid":"0"},"username":"bob","seq":2}"#
                    .to_string()
            ),
            (
                a2,
                r#"{"type":"candidate","candidate":{"candidate":"c2","sdpMid":"0"},"username":"bob","seq":3}"#
                    .to_string()
            ),
        ]
    );
    assert!(!h.router.is_suspended("alice"));
    assert_eq!(h.router.connection_of("alice"), Some(a2));
    assert_eq!(h.router.partner(a2), Some(b));
    assert!(h.router.is_answered(a2));
    assert_eq!(
        h.router.poll_timeout(),
        None,
        "the grace timer is cancelled"
    );
    // The call goes on, numbering from where it was.
    h.send(b, &candidate("alice", 3));
    h.send(a2, &candidate("bob", 4));
    let out = h.drain();
    assert_eq!(
        out[0],
        (
            a2,
            json!({"type":"candidate","candidate":{"candidate":"c3","sdpMid":"0"},"username":"bob","seq":4})
        )
    );
    assert_eq!(out[1].0, b);
    assert_eq!(out[1].1["username"], "alice");
}

#[test]
fn resume_replays_what_the_dropped_socket_lost() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    for n in 1..=3 {
        h.send(b, &candidate("alice", n));
    }
    assert_eq!(h.drain().len(), 3); // seqs 2, 3, 4 written to alice's socket…
    h.lose(a); // …but the page only saw up to 2.
    let a2 = h.connect();
    h.resume(a2, &token, 2);
    let seqs = drain_seqs(&mut h);
    assert_eq!(seqs, vec![json!(null), json!(3), json!(4)]);
}

#[test]
fn takeover_closes_the_old_connection_with_4000_and_replays_on_the_new() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    h.send(b, &candidate("alice", 1));
    assert_eq!(h.drain().len(), 1); // seq 2, into a half-open socket
    let a2 = h.connect();
    h.resume(a2, &token, 1);
    let out = h.drain_raw();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], (a, "CLOSE 4000".to_string()));
    assert_eq!(out[1].0, a2);
    assert!(out[1].1.starts_with(r#"{"type":"resume","success":true"#));
    assert_eq!(out[2].0, a2);
    assert!(
        out[2].1.ends_with(r#""username":"bob","seq":2}"#),
        "{}",
        out[2].1
    );
    assert!(h.take_events().contains(&Event::SessionResumed {
        username: name("alice"),
        conn: a2,
        takeover: true
    }));
    // The old connection holds nothing now: its input is ignored, its end ends nothing.
    assert_eq!(h.router.username(a), None);
    h.send(a, &candidate("bob", 9));
    assert_eq!(h.drain(), vec![]);
    h.router.handle_disconnect(a).unwrap();
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.router.connection_of("alice"), Some(a2));
    assert_eq!(h.router.partner(b), Some(a2));
}

#[test]
fn grace_expiry_frees_the_name_and_tells_the_partner_close_once() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    h.lose(a);
    assert_eq!(h.drain(), vec![]);
    assert_eq!(
        h.take_events(),
        vec![Event::SessionSuspended {
            username: name("alice")
        }]
    );
    assert_eq!(h.router.poll_timeout(), Some(h.now + GRACE));
    assert!(h.router.is_logged_in("alice"));
    let c = h.connect();
    h.send(c, r#"{"type":"login","username":"alice"}"#);
    assert_eq!(h.drain()[0].1["code"], "name_taken", "the name is kept");
    h.take_events();

    h.tick(GRACE - Duration::from_millis(1));
    assert_eq!(h.drain(), vec![]);
    assert!(h.router.is_suspended("alice"));
    h.tick(Duration::from_millis(1));
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert_eq!(
        h.take_events(),
        vec![
            Event::CallEnded {
                caller: name("bob"),
                callee: name("alice"),
                reason: CallEnd::Disconnected
            },
            Event::SessionEnded {
                username: name("alice"),
                reason: SessionEnd::GraceExpired
            }
        ]
    );
    h.tick(GRACE * 10);
    assert_eq!(h.drain(), vec![], "close exactly once");
    assert_eq!(h.router.poll_timeout(), None);
    assert_eq!(h.router.partner(b), None);
    assert_eq!(h.router.retained_bytes(), 0);
    // The name is free, the token dead.
    h.send(c, r#"{"type":"login","username":"alice"}"#);
    assert_eq!(h.drain(), vec![(c, json!({"type":"login","success":true}))]);
    let d = h.connect();
    h.resume(d, &token, 1);
    assert_eq!(h.drain()[0].1["code"], "invalid_token");
}

#[test]
fn a_clean_close_ends_a_resumable_session_at_once() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    h.router.handle_disconnect(a).unwrap();
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert!(h.take_events().contains(&Event::SessionEnded {
        username: name("alice"),
        reason: SessionEnd::Closed
    }));
    assert!(!h.router.is_logged_in("alice"));
    assert_eq!(h.router.poll_timeout(), None);
    let a2 = h.connect();
    h.resume(a2, &token, 1);
    assert_eq!(h.drain()[0].1["code"], "invalid_token");
}

#[test]
fn plain_clients_are_unchanged() {
    let mut h = harness();
    let a = h.user("alice"); // checks the exact tutorial reply
    let b = h.user("bob");
    h.send(a, &offer("bob"));
    h.send(b, &answer("alice"));
    for (_, v) in h.drain() {
        assert_eq!(v.get("seq"), None);
        assert_eq!(v.get("token"), None);
    }
    // Even an abnormal end frees a plain session at once.
    h.lose(a);
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert!(h.take_events().contains(&Event::SessionEnded {
        username: name("alice"),
        reason: SessionEnd::ConnectionLost
    }));
    assert!(!h.router.is_logged_in("alice"));
    assert_eq!(h.router.poll_timeout(), None);
    // Without a token source, "resumable":true gets a plain session.
    let mut bare = Harness::new(config());
    let c = bare.connect();
    bare.send(c, r#"{"type":"login","username":"carol","resumable":true}"#);
    assert_eq!(
        bare.drain(),
        vec![(c, json!({"type":"login","success":true}))]
    );
}

#[test]
fn history_overflow_while_suspended_ends_the_session() {
    let mut h = Harness::with_tokens(
        config().with_sessions(SessionConfig::default().with_history(3, 1 << 20)),
    );
    let (a, _, b) = resumable_call(&mut h);
    h.lose(a);
    for n in 1..=3 {
        h.send(b, &candidate("alice", n));
    }
    assert_eq!(h.drain(), vec![], "three unsent messages fit");
    assert!(h.router.is_suspended("alice"));
    h.send(b, &candidate("alice", 4));
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert!(h.take_events().contains(&Event::SessionEnded {
        username: name("alice"),
        reason: SessionEnd::HistoryOverflow
    }));
    assert!(!h.router.is_logged_in("alice"));
    assert_eq!(h.router.retained_bytes(), 0);
    assert_eq!(h.router.poll_timeout(), None);
}

#[test]
fn history_overflow_in_bytes_while_suspended_ends_the_session() {
    let mut h = Harness::with_tokens(
        config().with_sessions(SessionConfig::default().with_history(100, 400)),
    );
    let (a, _, b) = resumable_call(&mut h);
    h.lose(a);
    let big = format!(
        r#"{{"type":"candidate","candidate":"{}","otherUsername":"alice"}}"#,
        "x".repeat(300)
    );
    h.send(b, &big);
    assert_eq!(h.drain(), vec![]);
    h.send(b, &big);
    assert_eq!(
        h.drain(),
        vec![(b, json!({"type":"close","username":"alice"}))]
    );
    assert!(!h.router.is_logged_in("alice"));
}

#[test]
fn history_lost_ends_the_session() {
    let mut h = Harness::with_tokens(
        config().with_sessions(SessionConfig::default().with_history(2, 1 << 20)),
    );
    let (a, token, b) = resumable_call(&mut h);
    for n in 1..=3 {
        h.send(b, &candidate("alice", n));
    }
    assert_eq!(h.drain().len(), 3); // seqs 2..=4; only 3 and 4 are kept
    h.lose(a);
    let a2 = h.connect();
    h.resume(a2, &token, 1);
    let out = h.drain();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, a2);
    assert_eq!(out[0].1["type"], "resume");
    assert_eq!(out[0].1["success"], false);
    assert_eq!(out[0].1["code"], "history_lost");
    assert_eq!(out[0].1.get("seq"), None);
    assert_eq!(out[1], (b, json!({"type":"close","username":"alice"})));
    assert!(h.take_events().contains(&Event::SessionEnded {
        username: name("alice"),
        reason: SessionEnd::HistoryLost
    }));
    assert!(!h.router.is_logged_in("alice"));
    assert_eq!(h.router.poll_timeout(), None);
    // lastSeq 2 would have been fine: a fresh session shows it.
    let (c, token) = h.resumable("carol");
    let d = h.user("dave");
    h.send(d, &offer("carol"));
    h.send(c, &answer("dave"));
    for n in 1..=3 {
        h.send(d, &candidate("carol", n));
    }
    h.drain();
    h.lose(c);
    let c2 = h.connect();
    h.resume(c2, &token, 2);
    let seqs = drain_seqs(&mut h);
    assert_eq!(seqs, vec![json!(null), json!(3), json!(4)]);
}

#[test]
fn acknowledged_messages_leave_the_history() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    for n in 1..=3 {
        h.send(b, &candidate("alice", n));
    }
    h.drain();
    let kept = h.router.retained_bytes();
    h.router.handle_acknowledged(a, 3).unwrap();
    assert!(h.router.retained_bytes() < kept);
    // A driver cannot acknowledge what was never sent: seq 4 stays.
    h.router.handle_acknowledged(a, 99).unwrap();
    assert!(h.router.retained_bytes() == 0);
    h.lose(a);
    h.send(b, &candidate("alice", 4)); // seq 5, kept while suspended
    let a2 = h.connect();
    h.resume(a2, &token, 4);
    let seqs = drain_seqs(&mut h);
    assert_eq!(seqs, vec![json!(null), json!(5)]);
    // lastSeq 2 was acknowledged past: history_lost.
    h.router.handle_acknowledged(a2, 5).unwrap();
    h.lose(a2);
    let a3 = h.connect();
    h.resume(a3, "tok2", 4);
    assert_eq!(h.drain()[0].1["code"], "history_lost");
}

#[test]
fn invalid_token_and_invalid_last_seq_change_nothing() {
    let mut h = harness();
    let (a, token, b) = resumable_call(&mut h);
    h.lose(a);
    h.take_events();
    let c = h.connect();
    let before = (
        h.router.poll_timeout(),
        h.router.retained_bytes(),
        h.router.user_count(),
    );
    for (tok, last, code) in [
        ("nope", 0, "invalid_token"),
        ("", 0, "invalid_token"),
        (token.as_str(), 2, "invalid_last_seq"),
        (token.as_str(), u64::MAX, "invalid_last_seq"),
    ] {
        h.resume(c, tok, last);
        let out = h.drain();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, c);
        assert_eq!(out[0].1["success"], false);
        assert_eq!(out[0].1["code"], code);
        assert!(h.router.is_suspended("alice"));
        assert_eq!(h.router.username(c), None);
        assert_eq!(h.router.partner_of("bob"), Some(&name("alice")));
        assert_eq!(
            (
                h.router.poll_timeout(),
                h.router.retained_bytes(),
                h.router.user_count()
            ),
            before
        );
    }
    // The right token still works, once.
    h.resume(c, &token, 1);
    assert_eq!(h.drain()[0].1["success"], true);
    let d = h.connect();
    h.resume(d, &token, 1);
    assert_eq!(
        h.drain(),
        vec![(
            d,
            json!({"type":"resume","success":false,"code":"invalid_token","message":"unknown, spent or expired session token; log in afresh"})
        )]
    );
    assert_eq!(h.router.connection_of("alice"), Some(c));
    let _ = b;
    // A connection that holds a session cannot resume another.
    h.resume(c, "tok2", 0);
    assert_eq!(h.drain()[0].1["code"], "already_logged_in");
}

#[test]
fn a_call_nobody_answers_rings_out_for_both_sides() {
    let mut h = harness();
    let a = h.user("alice");
    let (b, _) = h.resumable("bob");
    h.send(a, &offer("bob"));
    h.drain();
    assert_eq!(
        h.router.poll_timeout(),
        Some(h.now + Duration::from_secs(45))
    );
    h.tick(Duration::from_secs(44));
    assert_eq!(h.drain(), vec![]);
    h.tick(Duration::from_secs(1));
    assert_eq!(
        h.drain(),
        vec![
            (
                a,
                json!({"type":"close","username":"bob","reason":"no_answer"})
            ),
            (
                b,
                json!({"type":"close","username":"alice","reason":"no_answer","seq":2})
            ),
        ]
    );
    assert!(h.take_events().contains(&Event::CallEnded {
        caller: name("alice"),
        callee: name("bob"),
        reason: CallEnd::NoAnswer
    }));
    assert_eq!(h.router.partner(a), None);
    assert_eq!(h.router.partner(b), None);
    assert_eq!(h.router.poll_timeout(), None);
    // Either can take other calls at once.
    let c = h.user("carol");
    h.send(c, &offer("bob"));
    assert_eq!(h.drain()[0].0, b);
}

#[test]
fn an_answered_call_never_rings_out() {
    let mut h = harness();
    let (a, b) = h.answered_call();
    assert_eq!(h.router.poll_timeout(), None);
    h.tick(Duration::from_secs(3600));
    assert_eq!(h.drain(), vec![]);
    assert!(h.router.is_answered(a));
    assert_eq!(h.router.partner(b), Some(a));
}

#[test]
fn a_declined_caller_backs_off_doubling() {
    let mut h = harness();
    let a = h.user("alice");
    let b = h.user("bob");
    let c = h.user("carol");
    let decline = r#"{"type":"close","otherUsername":"alice"}"#;
    h.send(a, &offer("bob"));
    h.send(b, decline);
    assert_eq!(h.drain()[1], (a, json!({"type":"close","username":"bob"})));
    assert!(h.take_events().contains(&Event::CallEnded {
        caller: name("alice"),
        callee: name("bob"),
        reason: CallEnd::Declined
    }));
    h.advance(Duration::from_secs(29));
    h.send(a, &offer("bob"));
    let out = h.drain();
    assert_eq!(out.len(), 1, "bob sees nothing");
    assert_eq!(out[0].1["code"], "redial_too_soon");
    assert!(
        out[0].1["message"]
            .as_str()
            .unwrap()
            .contains("retry in 1 s")
    );
    assert_eq!(h.router.partner(a), None);
    // Other callees are not affected.
    h.send(a, &offer("carol"));
    h.send(a, r#"{"type":"close"}"#);
    assert_eq!(h.drain().len(), 2);
    let _ = c;
    h.advance(Duration::from_secs(1));
    h.send(a, &offer("bob"));
    assert_eq!(h.drain()[0].0, b, "after 30 s the offer goes through");
    h.send(b, decline);
    h.drain();
    // The second decline doubles it: 60 s.
    h.advance(Duration::from_secs(59));
    h.send(a, &offer("bob"));
    let out = h.drain();
    assert_eq!(out[0].1["code"], "redial_too_soon");
    assert!(
        out[0].1["message"]
            .as_str()
            .unwrap()
            .contains("retry in 1 s")
    );
    h.advance(Duration::from_secs(1));
    h.send(a, &offer("bob"));
    assert_eq!(h.drain()[0].0, b);
    // A ring-out counts as well: 120 s.
    h.tick(Duration::from_secs(45));
    assert_eq!(h.drain().len(), 2);
    h.advance(Duration::from_secs(119));
    h.send(a, &offer("bob"));
    assert_eq!(h.drain()[0].1["code"], "redial_too_soon");
    // A cancel by the caller is no decline: no back-off for carol.
    h.send(a, &offer("carol"));
    h.send(a, r#"{"type":"close"}"#);
    h.send(a, &offer("carol"));
    assert_eq!(h.drain()[2].1["type"], "offer");
}

#[test]
fn events_say_what_happened() {
    let mut h = harness();
    let (a, token) = h.resumable("alice");
    let b = h.user("bob");
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![
            Event::LoggedIn {
                conn: a,
                username: name("alice"),
                resumable: true
            },
            Event::LoggedIn {
                conn: b,
                username: name("bob"),
                resumable: false
            },
        ]
    );
    h.send(a, &offer("bob"));
    h.send(b, &answer("alice"));
    h.send(b, r#"{"type":"close"}"#);
    h.drain();
    let (alice, bob) = (name("alice"), name("bob"));
    assert_eq!(
        h.take_events(),
        vec![
            Event::CallRinging {
                caller: alice.clone(),
                callee: bob.clone()
            },
            Event::CallAnswered {
                caller: alice.clone(),
                callee: bob.clone()
            },
            Event::CallEnded {
                caller: alice.clone(),
                callee: bob.clone(),
                reason: CallEnd::HungUp
            },
        ]
    );
    h.send(a, &offer("bob"));
    h.send(a, r#"{"type":"close"}"#);
    h.drain();
    assert_eq!(
        h.take_events()[1],
        Event::CallEnded {
            caller: alice.clone(),
            callee: bob.clone(),
            reason: CallEnd::Cancelled
        }
    );
    h.lose(a);
    let a2 = h.connect();
    h.resume(a2, &token, 0);
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![
            Event::SessionSuspended {
                username: alice.clone()
            },
            Event::SessionResumed {
                username: alice.clone(),
                conn: a2,
                takeover: false
            },
        ]
    );
    h.router.handle_disconnect(b).unwrap();
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![Event::SessionEnded {
            username: bob,
            reason: SessionEnd::Closed
        }]
    );
}

#[test]
fn replayed_messages_count_as_sent() {
    // Three messages kept while suspended, replayed on resume: they are sent now, so a
    // second drop keeps only what comes after, and the bound counts them as droppable.
    let mut h = Harness::with_tokens(
        config().with_sessions(SessionConfig::default().with_history(3, 1 << 20)),
    );
    let (a, token, b) = resumable_call(&mut h);
    h.lose(a);
    for n in 1..=3 {
        h.send(b, &candidate("alice", n));
    }
    let a2 = h.connect();
    h.resume(a2, &token, 1);
    assert_eq!(h.drain().len(), 4);
    h.lose(a2);
    for n in 4..=6 {
        h.send(b, &candidate("alice", n));
    }
    assert_eq!(
        h.drain(),
        vec![],
        "three unsent messages fit beside the replayed ones"
    );
    assert!(h.router.is_suspended("alice"));
    let a3 = h.connect();
    h.resume(a3, "tok2", 4);
    let seqs = drain_seqs(&mut h);
    assert_eq!(seqs, vec![json!(null), json!(5), json!(6), json!(7)]);
}

#[test]
fn a_session_closed_for_its_rate_limit_cannot_be_resumed_elsewhere() {
    // Found by the fuzz target's seed 22: the takeover of a connection the router was already
    // closing (1008) asked for a second close (4000) and let the session escape its end.
    let limit = signaling_core::RateLimit {
        per_second: 0,
        burst: 1,
        max_strikes: 2,
    };
    let mut h = Harness::with_tokens(config().with_rate_limit(Some(limit)));
    let (a, token) = h.resumable("alice");
    h.send(a, "x");
    assert_eq!(h.drain()[0].1["code"], "rate_limited");
    h.send(a, "x");
    assert_eq!(h.drain_raw(), vec![(a, "CLOSE 1008".to_string())]);
    let a2 = h.connect();
    h.resume(a2, &token, 0);
    let out = h.drain_raw();
    assert_eq!(out.len(), 1, "no second close for {a}: {out:?}");
    assert_eq!(out[0].0, a2);
    assert!(out[0].1.contains(r#""code":"invalid_token""#), "{out:?}");
    assert_eq!(h.router.connection_of("alice"), Some(a));
    // The transport goes: the session ends, as for any server-side close.
    h.router.handle_connection_lost(a, h.now).unwrap();
    h.drain();
    assert!(!h.router.is_logged_in("alice"));
}

/// A resume with a `lastSeq` whose successors are gone, while the session's connection is still
/// open (a second tab with a stale `lastSeq`): the session ends, and the open connection is told
/// so with 4001 rather than left logged out without a word.
#[test]
fn history_lost_closes_a_still_open_connection_with_4001() {
    let mut h = Harness::with_tokens(
        config().with_sessions(SessionConfig::default().with_history(2, 1 << 20)),
    );
    let (a, token, b) = resumable_call(&mut h);
    for n in 1..=3 {
        h.send(b, &candidate("alice", n));
    }
    assert_eq!(h.drain().len(), 3);
    let tab = h.connect();
    h.resume(tab, &token, 1);
    let out = h.drain_raw();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0].0, tab);
    assert!(out[0].1.contains(r#""code":"history_lost""#), "{out:?}");
    assert_eq!(out[1], (a, "CLOSE 4001".to_string()));
    assert_eq!(out[2].0, b);
    assert!(
        out[2]
            .1
            .starts_with(r#"{"type":"close","username":"alice""#)
    );
    assert!(!h.router.is_logged_in("alice"));
    // The closed connection's input is ignored until the driver reports it gone.
    h.send(a, &candidate("bob", 9));
    assert!(h.drain().is_empty());
    h.router.handle_disconnect(a).unwrap();
}
