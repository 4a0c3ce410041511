//! A resumable session moves between nodes (issue 11): a `resume` with another node's token
//! (`Output::Fetch`), the issuing node's `handle_handover`, the asking node's
//! `handle_imported`; and a node that shuts down hands all its resumable sessions over
//! (`handle_evacuate`). Routers joined by hand here, each test one rule; the property test in
//! `cluster.rs` checks the whole against one router.

// Tests play the driver's part: they read the clock the router may not.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signaling_core::cluster::{Envelope, Remote, SessionExport};
use signaling_core::{
    CallEnd, ClaimOutcome, ConnectionId, ErrorCode, HangUpReason, IceServerList, Output, Payload,
    RelayKind, Router, RouterConfig, ServerMessage, SessionConfig, SessionToken, Username,
};

use crate::common::{answer, candidate, offer};

fn name(s: &str) -> Username {
    Username::new(s).unwrap()
}

fn config() -> RouterConfig {
    RouterConfig::default()
        .with_rate_limit(None)
        .with_ring_timeout(Some(Duration::from_secs(30)))
        .with_sessions(SessionConfig::default().with_grace(Duration::from_secs(60)))
}

/// A node of a cluster: tokens `<id>.<n>`, as the driver's name their node.
fn node(id: &'static str) -> Router {
    let mut n = 0u64;
    Router::new(config().with_claim_names(true)).with_token_source(move || {
        n += 1;
        SessionToken::new(format!("{id}.{n}"))
    })
}

/// What came out of a router, claims answered `Won` on the way.
#[derive(Debug, Default)]
struct Out {
    frames: Vec<(ConnectionId, Value)>,
    closes: Vec<(ConnectionId, u16)>,
    forwards: Vec<Envelope>,
    fetches: Vec<(ConnectionId, SessionToken, u64, Option<Username>)>,
    releases: Vec<Username>,
}

impl Out {
    fn frames_to(&self, conn: ConnectionId) -> Vec<Value> {
        self.frames
            .iter()
            .filter(|(to, _)| *to == conn)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn drain(r: &mut Router) -> Out {
    let mut out = Out::default();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Transmit(t) => out
                .frames
                .push((t.to, serde_json::from_str(&t.to_json()).unwrap())),
            Output::Disconnect { conn, reason } => out.closes.push((conn, reason.code())),
            Output::Claim { conn, name, .. } => {
                r.handle_claimed(conn, &name, ClaimOutcome::Won).unwrap();
            }
            Output::Release { name, .. } => out.releases.push(name),
            Output::Forward(e) => out.forwards.push(e),
            Output::Fetch {
                conn,
                token,
                last_seq,
                verified,
            } => out.fetches.push((conn, token, last_seq, verified)),
            Output::Event(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn text(r: &mut Router, conn: ConnectionId, text: &str, now: Instant) {
    r.handle_text(conn, text, now).unwrap();
}

/// Logs `who` in on `r` (resumable or not) on connection `conn`; returns its token.
fn login(r: &mut Router, conn: ConnectionId, who: &str, resumable: bool, now: Instant) -> String {
    r.handle_connect(conn).unwrap();
    let login = json!({"type": "login", "username": who, "resumable": resumable});
    text(r, conn, &login.to_string(), now);
    let out = drain(r);
    let reply = out.frames_to(conn);
    assert_eq!(reply[0]["success"], true, "{reply:?}");
    reply[0]["token"].as_str().unwrap_or_default().to_string()
}

fn resume(token: &str, last_seq: u64) -> String {
    json!({"type": "resume", "token": token, "lastSeq": last_seq}).to_string()
}

/// `from` on another node sends `to` (here) a relay.
fn remote(from: &str, to: &str, kind: RelayKind, payload: &str, opens_call: bool) -> Envelope {
    Envelope {
        from: name(from),
        to: name(to),
        body: Remote::Relay {
            kind,
            payload: Payload::from_json(payload).unwrap(),
            opens_call,
        },
    }
}

/// A resume on `to` of a session `from` issued: the fetch, the hand-over, the import (the
/// export encoded and decoded on the way). Returns what each router put out.
fn hand_over(
    from: &mut Router,
    to: &mut Router,
    conn: ConnectionId,
    token: &str,
    last_seq: u64,
    now: Instant,
) -> (Out, Out) {
    text(to, conn, &resume(token, last_seq), now);
    let asked = drain(to);
    assert_eq!(asked.frames, vec![], "nothing before the session arrives");
    let [(c, t, l, verified)] = &asked.fetches[..] else {
        panic!("one fetch expected: {asked:?}");
    };
    assert_eq!((*c, t.as_str(), *l), (conn, token, last_seq));
    match from.handle_handover(t.as_str(), *l, verified.as_ref(), now) {
        Ok(export) => {
            let bytes = export.encode();
            let decoded = SessionExport::decode(&bytes).unwrap();
            assert_eq!(decoded, export, "the export survives its encoding");
            let gave = drain(from);
            to.handle_imported(Some(conn), decoded, *l, now);
            (gave, drain(to))
        }
        Err((code, message)) => {
            let gave = drain(from);
            to.handle_fetch_refused(conn, code, message);
            (gave, drain(to))
        }
    }
}

/// alice (resumable) on `o`, in an answered call with bob of another node, then her
/// connection drops and bob sends three candidates (seq 2, 3, 4; the answer was 1).
fn alice_suspended_mid_call(o: &mut Router, now: Instant) -> String {
    let a = ConnectionId(1);
    let token = login(o, a, "alice", true, now);
    text(o, a, &offer("bob"), now);
    let out = drain(o);
    assert!(matches!(
        out.forwards[..],
        [Envelope {
            body: Remote::Relay {
                opens_call: true,
                ..
            },
            ..
        }]
    ));
    let answer = remote("bob", "alice", RelayKind::Answer, r#"{"sdp":"a"}"#, false);
    o.handle_remote(answer, now);
    assert_eq!(drain(o).frames_to(a)[0]["seq"], 1);
    o.handle_connection_lost(a, now).unwrap();
    drain(o);
    for n in 0..3 {
        let payload = format!(r#"{{"candidate":"c{n}"}}"#);
        o.handle_remote(
            remote("bob", "alice", RelayKind::Candidate, &payload, false),
            now,
        );
    }
    assert!(drain(o).frames.is_empty(), "kept while suspended");
    token
}

#[test]
fn a_session_resumes_on_another_node_with_its_history_and_its_call() {
    let now = Instant::now();
    let (mut o, mut i) = (node("o"), node("i"));
    let token = alice_suspended_mid_call(&mut o, now);
    let fresh = ConnectionId(7);
    i.handle_connect(fresh).unwrap();
    let (gave, got) = hand_over(&mut o, &mut i, fresh, &token, 1, now);

    // The old node let go without a word: no close to bob, no release, no timer left.
    assert!(
        gave.frames.is_empty() && gave.forwards.is_empty(),
        "{gave:?}"
    );
    assert_eq!(gave.releases, vec![], "the lease moves, it is not released");
    assert!(!o.is_logged_in("alice"));
    assert_eq!(o.remote_peers().count(), 0);
    assert_eq!(
        o.poll_timeout(),
        None,
        "the grace timer went with the session"
    );

    // The new node: a new token, then every message after lastSeq with its seq.
    let frames = got.frames_to(fresh);
    assert_eq!(frames[0]["type"], "resume");
    assert_eq!(frames[0]["success"], true);
    assert_eq!(frames[0]["username"], "alice");
    let new_token = frames[0]["token"].as_str().unwrap();
    assert!(
        new_token.starts_with("i."),
        "issued by the new node: {new_token}"
    );
    let replayed: Vec<(Value, Value)> = frames[1..]
        .iter()
        .map(|f| (f["seq"].clone(), f["candidate"]["candidate"].clone()))
        .collect();
    assert_eq!(
        replayed,
        vec![
            (json!(2), json!("c0")),
            (json!(3), json!("c1")),
            (json!(4), json!("c2")),
        ]
    );
    // bob's node is asked whether the call is still on.
    assert_eq!(
        got.forwards,
        vec![Envelope {
            from: name("alice"),
            to: name("bob"),
            body: Remote::CallCheck,
        }]
    );

    // The call goes on from here, both ways, numbering on.
    assert!(i.is_answered(fresh));
    assert_eq!(i.remote_peers().collect::<Vec<_>>(), vec![&name("bob")]);
    text(&mut i, fresh, &candidate("bob", 9), now);
    let out = drain(&mut i);
    assert!(matches!(
        &out.forwards[..],
        [Envelope { to, body: Remote::Relay { kind: RelayKind::Candidate, .. }, .. }] if *to == name("bob")
    ));
    i.handle_remote(
        remote("bob", "alice", RelayKind::Candidate, "{}", false),
        now,
    );
    assert_eq!(drain(&mut i).frames_to(fresh)[0]["seq"], 5);

    // The token used is spent on both nodes.
    let spent = |r: &mut Router| r.handle_handover(&token, 4, None, now).unwrap_err().0;
    assert_eq!(spent(&mut o), ErrorCode::InvalidToken);
    assert_eq!(spent(&mut i), ErrorCode::InvalidToken);
    // The new one resumes locally on the new node (no fetch).
    let again = ConnectionId(8);
    i.handle_connect(again).unwrap();
    text(&mut i, again, &resume(new_token, 5), now);
    let out = drain(&mut i);
    assert!(out.fetches.is_empty());
    assert_eq!(out.frames_to(again)[0]["success"], true);
    assert_eq!(out.closes, vec![(fresh, 4000)]);
}

#[test]
fn a_ringing_callers_timer_moves_with_it_with_the_time_it_had_left() {
    let t0 = Instant::now();
    let (mut o, mut i) = (node("o"), node("i"));
    let a = ConnectionId(1);
    let token = login(&mut o, a, "alice", true, t0);
    text(&mut o, a, &offer("bob"), t0);
    drain(&mut o);
    assert_eq!(o.poll_timeout(), Some(t0 + Duration::from_secs(30)));

    let later = t0 + Duration::from_secs(10);
    let fresh = ConnectionId(2);
    i.handle_connect(fresh).unwrap();
    let (gave, got) = hand_over(&mut o, &mut i, fresh, &token, 0, later);
    assert_eq!(
        gave.closes,
        vec![(a, 4000)],
        "takeover of the open connection"
    );
    assert_eq!(got.frames_to(fresh)[0]["success"], true);
    assert_eq!(o.poll_timeout(), None, "the ring timer left the old node");
    assert_eq!(
        i.poll_timeout(),
        Some(later + Duration::from_secs(20)),
        "re-created with the 20 s it had left"
    );

    // Ringing: a renegotiation still counts as before the answer, and nothing is answered.
    assert!(!i.is_answered(fresh));
    i.handle_timeout(t0 + Duration::from_secs(30));
    let out = drain(&mut i);
    assert_eq!(
        out.frames_to(fresh),
        vec![json!({"type": "close", "username": "bob", "reason": "no_answer", "seq": 1})]
    );
    assert_eq!(
        out.forwards,
        vec![Envelope {
            from: name("alice"),
            to: name("bob"),
            body: Remote::HangUp {
                end: CallEnd::NoAnswer
            },
        }]
    );
    // The back-off of a rung-out call lives with the caller, on its new node.
    text(&mut i, fresh, &offer("bob"), t0 + Duration::from_secs(31));
    let out = drain(&mut i);
    assert_eq!(out.forwards.len(), 1, "the refusal is probed at bob's node");
    assert!(matches!(
        &out.forwards[0].body,
        Remote::Probe {
            code: ErrorCode::RedialTooSoon,
            ..
        }
    ));
}

#[test]
fn a_back_off_and_a_ring_timer_age_while_an_export_waits() {
    let t0 = Instant::now();
    let (mut o, mut i) = (node("o"), node("i"));
    let a = ConnectionId(1);
    let token = login(&mut o, a, "alice", true, t0);
    text(&mut o, a, &offer("bob"), t0);
    drain(&mut o);
    let mut export = o.handle_handover(&token, 0, None, t0).unwrap();
    export.age(Duration::from_secs(25));
    i.handle_imported(None, export, 0, t0 + Duration::from_secs(25));
    let timers = t0 + Duration::from_secs(25) + Duration::from_secs(5);
    assert_eq!(
        i.poll_timeout(),
        Some(timers),
        "30 s ring, 25 s spent waiting"
    );
}

/// The refusal a resume gets, from a local resume on the issuing node and through a
/// hand-over to another node: the same frame, and the same effects on the issuing node.
#[test]
fn refusals_across_nodes_are_those_of_a_local_resume() {
    struct Case {
        what: &'static str,
        last_seq: u64,
        /// The resuming connection is verified as this user.
        verified: Option<&'static str>,
        /// Resume with this token instead of alice's.
        token: Option<&'static str>,
        code: &'static str,
    }
    let cases = [
        Case {
            what: "lastSeq past the end",
            last_seq: 9,
            verified: None,
            token: None,
            code: "invalid_last_seq",
        },
        Case {
            what: "another user's session",
            last_seq: 1,
            verified: Some("mallory"),
            token: None,
            code: "unauthorized",
        },
        Case {
            what: "an unknown token",
            last_seq: 1,
            verified: None,
            token: Some("o.999"),
            code: "invalid_token",
        },
        Case {
            what: "messages no longer kept",
            last_seq: 0,
            verified: None,
            token: None,
            code: "history_lost",
        },
    ];
    for case in cases {
        let now = Instant::now();
        let mut frames = Vec::new();
        let mut effects = Vec::new();
        for across in [false, true] {
            let (mut o, mut i) = (node("o"), node("i"));
            let token = alice_suspended_mid_call(&mut o, now);
            let token = if case.code == "history_lost" {
                // alice is back on a connection that got seq 2-4 and acknowledged them: a
                // resume from 0 (another tab) asks for messages no longer kept.
                let token = local_resume(&mut o, ConnectionId(5), &token, 1, now);
                o.handle_acknowledged(ConnectionId(5), 4).unwrap();
                token
            } else {
                token
            };
            let token = case.token.map_or(token, str::to_string);
            let conn = ConnectionId(9);
            let r = if across { &mut i } else { &mut o };
            match case.verified {
                Some(v) => r.handle_connect_verified(conn, name(v)).unwrap(),
                None => r.handle_connect(conn).unwrap(),
            }
            let (gave, reply) = if across {
                let (gave, got) = hand_over(&mut o, &mut i, conn, &token, case.last_seq, now);
                (gave, got.frames_to(conn))
            } else {
                text(&mut o, conn, &resume(&token, case.last_seq), now);
                let mut gave = drain(&mut o);
                if let [(c, t, l, v)] = &gave.fetches[..] {
                    // A token nobody here knows is asked of the cluster even on its own
                    // node; its backend refuses it as the node would.
                    let refusal = o.handle_handover(t.as_str(), *l, v.as_ref(), now);
                    let (code, message) = refusal.unwrap_err();
                    o.handle_fetch_refused(*c, code, message);
                    gave = drain(&mut o);
                }
                let reply = gave.frames_to(conn);
                (gave, reply)
            };
            assert_eq!(reply.len(), 1, "{}: {reply:?}", case.what);
            frames.push(reply[0].clone());
            // What the refusal did on the issuing node: nothing, or (history_lost) the
            // session ended there, the connection still holding it closed with 4001 and
            // bob's node told.
            let hang_ups = gave
                .forwards
                .iter()
                .filter(|e| matches!(e.body, Remote::HangUp { .. }))
                .count();
            effects.push((
                o.is_logged_in("alice"),
                gave.closes.clone(),
                hang_ups,
                gave.releases.clone(),
            ));
        }
        assert_eq!(frames[0], frames[1], "{}", case.what);
        assert_eq!(frames[0]["type"], "resume", "{}", case.what);
        assert_eq!(frames[0]["code"], case.code, "{}", case.what);
        assert_eq!(effects[0], effects[1], "{}", case.what);
        if case.code == "history_lost" {
            assert_eq!(
                effects[0],
                (false, vec![(ConnectionId(5), 4001)], 1, vec![name("alice")])
            );
        } else {
            assert_eq!(effects[0], (true, vec![], 0, vec![]), "{}", case.what);
        }
    }
}

/// Resumes `token` on `r` itself from a new connection `conn`; returns the new token.
fn local_resume(
    r: &mut Router,
    conn: ConnectionId,
    token: &str,
    last_seq: u64,
    now: Instant,
) -> String {
    r.handle_connect(conn).unwrap();
    text(r, conn, &resume(token, last_seq), now);
    let out = drain(r);
    assert!(out.fetches.is_empty(), "a local token");
    let reply = &out.frames_to(conn)[0];
    assert_eq!(reply["success"], true, "{reply}");
    reply["token"].as_str().unwrap().to_string()
}

/// A partner on the node the session leaves stays in the call, with a user of another node
/// now; a partner on the node it arrives at has it local again.
#[test]
fn a_partner_on_either_node_keeps_the_call() {
    let now = Instant::now();
    // bob on the old node.
    let (mut o, mut i) = (node("o"), node("i"));
    let (a, b) = (ConnectionId(1), ConnectionId(2));
    let token = login(&mut o, a, "alice", true, now);
    login(&mut o, b, "bob", false, now);
    text(&mut o, a, &offer("bob"), now);
    text(&mut o, b, &answer("alice"), now);
    drain(&mut o);
    let fresh = ConnectionId(3);
    i.handle_connect(fresh).unwrap();
    let (gave, got) = hand_over(&mut o, &mut i, fresh, &token, 1, now);
    assert_eq!(gave.closes, vec![(a, 4000)]);
    assert!(gave.frames_to(b).is_empty(), "bob is told nothing");
    assert_eq!(got.frames_to(fresh).len(), 1, "nothing missed after seq 1");
    assert_eq!(o.remote_peers().collect::<Vec<_>>(), vec![&name("alice")]);
    assert_eq!(o.partner_of("bob"), Some(&name("alice")));
    // bob's candidate goes to alice's new node, and her answer to his.
    text(&mut o, b, &candidate("alice", 1), now);
    let out = drain(&mut o);
    assert_eq!(out.forwards.len(), 1);
    i.handle_remote(out.forwards[0].clone(), now);
    let out = drain(&mut i);
    assert_eq!(out.frames_to(fresh)[0]["candidate"]["candidate"], "c1");
    // alice hangs up on the new node: bob hears it once, from the old one.
    text(&mut i, fresh, r#"{"type":"close"}"#, now);
    let out = drain(&mut i);
    assert_eq!(out.forwards.len(), 1);
    o.handle_remote(out.forwards[0].clone(), now);
    assert_eq!(
        drain(&mut o).frames_to(b),
        vec![json!({"type": "close", "username": "alice"})]
    );
    assert_eq!(o.remote_peers().count(), 0);

    // bob on the new node, ringing alice (he called): both local there afterwards, on his
    // ring timer.
    let (mut o, mut i) = (node("o"), node("i"));
    let token = login(&mut o, a, "alice", true, now);
    login(&mut i, b, "bob", false, now);
    text(&mut i, b, &offer("alice"), now);
    let out = drain(&mut i);
    o.handle_remote(out.forwards[0].clone(), now);
    assert_eq!(drain(&mut o).frames_to(a)[0]["type"], "offer");
    o.handle_connection_lost(a, now).unwrap();
    drain(&mut o);
    let fresh = ConnectionId(3);
    i.handle_connect(fresh).unwrap();
    let (_, got) = hand_over(&mut o, &mut i, fresh, &token, 0, now);
    assert_eq!(
        got.frames_to(fresh)[1]["type"],
        "offer",
        "the offer is replayed"
    );
    assert!(got.forwards.is_empty(), "no call check for a local partner");
    assert_eq!(i.remote_peers().count(), 0, "both local now");
    assert_eq!(i.partner(fresh), Some(b));
    // alice answers: a local answer now; the ring timer stops for both.
    text(&mut i, fresh, &answer("bob"), now);
    let out = drain(&mut i);
    assert!(out.forwards.is_empty());
    assert_eq!(out.frames_to(b)[0]["type"], "answer");
    assert!(i.is_answered(b) && i.is_answered(fresh));
    i.handle_timeout(now + Duration::from_secs(31));
    assert!(
        drain(&mut i).frames.is_empty(),
        "an answered call never rings out"
    );
}

/// An export whose connection stopped waiting (or that comes back after a failed
/// hand-over) is kept suspended, with the token it had, rather than lost.
#[test]
fn a_late_session_is_kept_suspended_with_its_token() {
    let now = Instant::now();
    let (mut o, mut i) = (node("o"), node("i"));
    let token = alice_suspended_mid_call(&mut o, now);
    let export = o.handle_handover(&token, 1, None, now).unwrap();
    // The resuming connection was refused meanwhile (timed out): not waiting any more.
    let gone = ConnectionId(4);
    i.handle_connect(gone).unwrap();
    text(&mut i, gone, &resume(&token, 1), now);
    drain(&mut i);
    i.handle_fetch_refused(gone, ErrorCode::Unavailable, "retry later".into());
    assert_eq!(drain(&mut i).frames_to(gone)[0]["code"], "unavailable");
    i.handle_imported(Some(gone), export, 1, now);
    let out = drain(&mut i);
    assert!(out.frames.is_empty(), "{out:?}");
    assert!(i.is_suspended("alice"));
    assert_eq!(
        i.poll_timeout(),
        Some(now + Duration::from_secs(60)),
        "a grace period"
    );
    // Its client retries with the same token, on this node: a local resume.
    let retry = ConnectionId(5);
    assert!(local_resume(&mut i, retry, &token, 1, now).starts_with("i."));
}

/// A graceful shutdown: plain sessions end (their partners told `close` first), resumable
/// ones leave without a word, connected or suspended, with the grace they have left.
#[test]
fn evacuation_ends_plain_sessions_and_hands_resumable_ones_over() {
    let t0 = Instant::now();
    let mut o = node("o");
    let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
    let alice = login(&mut o, a, "alice", true, t0);
    login(&mut o, b, "bob", false, t0);
    login(&mut o, c, "carol", true, t0);
    text(&mut o, b, &offer("alice"), t0);
    text(&mut o, a, &answer("bob"), t0);
    // carol, in a call with dave of another node, is suspended.
    text(&mut o, c, &offer("dave"), t0);
    o.handle_connection_lost(c, t0).unwrap();
    drain(&mut o);

    let later = t0 + Duration::from_secs(20);
    let evacuated = o.handle_evacuate(later);
    let out = drain(&mut o);
    assert_eq!(
        out.releases,
        vec![name("bob")],
        "only the plain session ends"
    );
    assert!(out.forwards.is_empty(), "dave's node is told nothing");
    assert_eq!(
        out.frames_to(a),
        vec![json!({"type": "close", "username": "bob", "seq": 2})],
        "alice hears of bob before she leaves"
    );
    let left: Vec<(String, Option<ConnectionId>, Duration)> = evacuated
        .iter()
        .map(|e| (e.export.name().to_string(), e.conn, e.grace_left))
        .collect();
    assert_eq!(
        left,
        vec![
            ("alice".into(), Some(a), Duration::from_secs(60)),
            ("carol".into(), None, Duration::from_secs(40)),
        ]
    );
    assert_eq!(o.user_count(), 0);
    assert_eq!(o.poll_timeout(), None, "no grace, no ring timer left");
    // Every connection is being closed: their input is ignored.
    text(&mut o, b, r#"{"type":"login","username":"bob"}"#, later);
    assert!(drain(&mut o).frames.is_empty());
    // dave's messages to carol meanwhile are refused with `unavailable`, not
    // `unknown_user`: she is on her way elsewhere.
    o.handle_remote(
        remote("dave", "carol", RelayKind::Candidate, "{}", false),
        later,
    );
    let out = drain(&mut o);
    assert!(matches!(
        &out.forwards[..],
        [Envelope { to, body: Remote::Refused { code: ErrorCode::Unavailable, .. }, .. }] if *to == name("dave")
    ));

    // alice resumes on another node: bob's close is replayed, she is in no call.
    let mut i = node("i");
    let fresh = ConnectionId(9);
    i.handle_connect(fresh).unwrap();
    text(&mut i, fresh, &resume(&alice, 1), later);
    drain(&mut i);
    let export = evacuated[0].export.clone();
    i.handle_imported(Some(fresh), export, 1, later);
    let frames = drain(&mut i).frames_to(fresh);
    assert_eq!(frames[0]["success"], true);
    assert_eq!(
        frames[1],
        json!({"type": "close", "username": "bob", "seq": 2})
    );
    assert_eq!(i.partner(fresh), None);
}

/// A partner's hang-up lost while the session was on its way (its node was shutting down) is
/// said again once the session arrives: the importing node asks ([`Remote::CallCheck`]).
#[test]
fn a_hang_up_lost_on_the_way_is_said_again() {
    let now = Instant::now();
    let (mut o, mut i, mut x) = (node("o"), node("i"), node("x"));
    let (a, b) = (ConnectionId(1), ConnectionId(2));
    let token = login(&mut o, a, "alice", true, now);
    login(&mut x, b, "bob", false, now);
    text(&mut x, b, &offer("alice"), now);
    let offer = drain(&mut x).forwards.remove(0);
    o.handle_remote(offer, now);
    text(&mut o, a, &answer("bob"), now);
    let answer = drain(&mut o).forwards.remove(0);
    x.handle_remote(answer, now);
    drain(&mut x);
    let evacuated = o.handle_evacuate(now);
    drain(&mut o);
    // bob hangs up; the envelope reaches nobody (alice's node is gone).
    text(&mut x, b, r#"{"type":"close"}"#, now);
    assert_eq!(drain(&mut x).forwards.len(), 1, "lost on the way");
    // alice resumes on i; her call with bob is checked at bob's node.
    let fresh = ConnectionId(3);
    i.handle_connect(fresh).unwrap();
    text(&mut i, fresh, &resume(&token, 0), now);
    drain(&mut i);
    let export = evacuated.into_iter().next().unwrap().export;
    i.handle_imported(Some(fresh), export, 0, now);
    let out = drain(&mut i);
    assert_eq!(out.frames_to(fresh)[0]["success"], true);
    let [check] = &out.forwards[..] else {
        panic!("{out:?}")
    };
    assert_eq!(check.body, Remote::CallCheck);
    x.handle_remote(check.clone(), now);
    let reply = drain(&mut x).forwards;
    assert_eq!(
        reply,
        vec![Envelope {
            from: name("bob"),
            to: name("alice"),
            body: Remote::HangUp {
                end: CallEnd::Disconnected
            },
        }]
    );
    i.handle_remote(reply[0].clone(), now);
    assert_eq!(
        drain(&mut i).frames_to(fresh),
        vec![json!({"type": "close", "username": "bob", "seq": 2})]
    );
    assert_eq!(i.partner(fresh), None);
    // Had the call been on, the check changes nothing.
    let check = Envelope {
        from: name("alice"),
        to: name("bob"),
        body: Remote::CallCheck,
    };
    let mut y = node("y");
    login(&mut y, ConnectionId(1), "bob", false, now);
    y.handle_remote(remote("alice", "bob", RelayKind::Offer, "{}", true), now);
    drain(&mut y);
    y.handle_remote(check, now);
    assert!(drain(&mut y).forwards.is_empty());
}

/// The history travels as frames: every shape the server sends decodes back to itself.
#[test]
fn server_frames_decode_to_the_messages_that_made_them() {
    let ice = IceServerList::from_json(
        r#"[{"urls":["stun:127.0.0.1:3478"]},{"urls":["turn:127.0.0.1:3478"],"username":"9:alice","credential":"x"}]"#,
    )
    .unwrap();
    let messages = [
        ServerMessage::Relay {
            kind: RelayKind::Offer,
            payload: Payload::from_json(r#"{ "sdp" : "v=0\r\n", "x":[1,2.50] }"#).unwrap(),
            from: name("zo\u{eb} \"q\""),
        },
        ServerMessage::Relay {
            kind: RelayKind::Candidate,
            payload: Payload::from_json("null").unwrap(),
            from: name("bob"),
        },
        ServerMessage::Relay {
            kind: RelayKind::Answer,
            payload: Payload::from_json("{}").unwrap(),
            from: name("bob"),
        },
        ServerMessage::HangUp {
            from: name("bob"),
            reason: None,
        },
        ServerMessage::HangUp {
            from: name("bob"),
            reason: Some(HangUpReason::NoAnswer),
        },
        ServerMessage::error(ErrorCode::NotInCall, "not in a call\n\u{1}"),
        ServerMessage::Login {
            success: false,
            error: Some((ErrorCode::AlreadyLoggedIn, "already".into())),
            ice_servers: None,
        },
        ServerMessage::Login {
            success: true,
            error: None,
            ice_servers: None,
        },
        ServerMessage::SessionStarted {
            token: SessionToken::new("n.tok"),
            grace_ms: 30_000,
            ice_servers: None,
        },
        ServerMessage::Resumed {
            username: name("alice"),
            token: SessionToken::new("n.tok"),
            grace_ms: 1,
            ice_servers: None,
        },
        ServerMessage::ResumeFailed {
            code: ErrorCode::HistoryLost,
            message: "gone".into(),
        },
        ServerMessage::Login {
            success: true,
            error: None,
            ice_servers: Some(ice.clone()),
        },
        ServerMessage::SessionStarted {
            token: SessionToken::new("n.tok"),
            grace_ms: 30_000,
            ice_servers: Some(ice.clone()),
        },
        ServerMessage::Resumed {
            username: name("alice"),
            token: SessionToken::new("n.tok"),
            grace_ms: 1,
            ice_servers: Some(ice),
        },
    ];
    for message in messages {
        for seq in [None, Some(7)] {
            let text = message.to_json_with_seq(seq);
            assert_eq!(
                ServerMessage::from_json(&text).unwrap(),
                (message.clone(), seq),
                "{text}"
            );
        }
    }
    for garbage in [
        "",
        "{}",
        r#"{"type":"offer","username":"bob"}"#,
        r#"{"type":"close"}"#,
        r#"{"type":"close","username":"bob","reason":"bored"}"#,
        r#"{"type":"error","code":"nope","message":"x"}"#,
        r#"{"type":"login"}"#,
        r#"{"type":"dance","username":"bob"}"#,
    ] {
        assert!(ServerMessage::from_json(garbage).is_err(), "{garbage}");
    }
    assert!(SessionExport::decode(b"{}").is_err());
    assert!(SessionExport::decode(b"\xff").is_err());
}
