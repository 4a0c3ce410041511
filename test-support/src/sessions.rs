//! Sessions (issue 10): resume after a drop, takeover of a half-open connection, grace expiry,
//! clean close, ringing calls that expire.

use std::time::Duration;

use serde_json::{Value, json};
use signaling_core::RouterConfig;
use signaling_core::driver::Config;

use crate::{Client, Start, call, login_when_free, offer, quiet_config};

/// `quiet_config` with a router config changed by `f`.
fn with_router(f: impl FnOnce(RouterConfig) -> RouterConfig) -> Config {
    let config = quiet_config();
    let router = f(config.router.clone());
    config.with_router(router)
}

/// A grace period long enough for a loaded machine, short enough for the expiry scenario.
fn grace(secs: u64) -> Config {
    with_router(|r| {
        let sessions = r.sessions.with_grace(Duration::from_secs(secs));
        r.with_sessions(sessions)
    })
}

/// Logs in resumable as `name`; returns the client and its token.
async fn login_resumable(url: &str, name: &str) -> (Client, String) {
    let mut c = Client::connect(url).await;
    c.send(json!({"type": "login", "username": name, "resumable": true}))
        .await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "login", "{reply}");
    assert_eq!(reply["success"], true, "{reply}");
    assert!(
        reply.get("seq").is_none(),
        "the login reply has no seq: {reply}"
    );
    let token = reply["token"].as_str().expect("a token").to_string();
    assert!(token.len() >= 22, "128 bits at least: {token}");
    assert!(reply["graceMs"].as_u64().is_some(), "{reply}");
    (c, token)
}

/// Resumes on a new connection; returns it, the new token and the reply.
async fn resume(url: &str, token: &str, last_seq: u64) -> (Client, Value) {
    let mut c = Client::connect(url).await;
    c.send(json!({"type": "resume", "token": token, "lastSeq": last_seq}))
        .await;
    let reply = c.recv().await;
    (c, reply)
}

fn candidate(to: &str, n: u32) -> Value {
    json!({"type": "candidate", "candidate": {"candidate": format!("candidate:{n}"), "sdpMid": "0"}, "otherUsername": to})
}

/// `a` (plain) calls `b` (resumable) and `b` answers; returns the highest seq `b` received.
async fn call_resumable(a: &mut Client, a_name: &str, b: &mut Client, b_name: &str) -> u64 {
    a.send(offer(b_name, "v=0 offer")).await;
    let got = b.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["seq"].as_u64()),
        (Some("offer"), Some(1))
    );
    b.send(json!({"type": "answer", "answer": {"type": "answer", "sdp": "v=0 answer"}, "otherUsername": a_name}))
        .await;
    let got = a.recv().await;
    assert_eq!(got["type"], "answer");
    assert!(
        got.get("seq").is_none(),
        "a plain session gets no seq: {got}"
    );
    1
}

/// Mid-call, the resumable side's connection drops (no close frame); its partner keeps
/// sending. The partner is told nothing; a resume on a new connection gets the new token and
/// every message sent during the gap, in order, with their seqs; the call goes on and hangs
/// up normally.
pub async fn resume_mid_call(start: Start) {
    let server = start(grace(30)).await;
    let mut bob = Client::login(&server.url, "bob").await;
    let (mut alice, token) = login_resumable(&server.url, "alice").await;
    let last = call_resumable(&mut bob, "bob", &mut alice, "alice").await;

    drop(alice); // TCP goes away without a close frame
    crate::patiently("the session to be suspended", async {
        while !server.on_any_node(|r| r.is_suspended("alice")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    for n in 0..5 {
        bob.send(candidate("alice", n)).await;
    }
    // The partner is told nothing, and its candidates were accepted (no error).
    bob.idle(Duration::from_millis(300)).await;

    let (mut alice, reply) = resume(&server.url, &token, last).await;
    assert_eq!(reply["type"], "resume");
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["username"], "alice");
    let new_token = reply["token"].as_str().expect("a new token");
    assert_ne!(new_token, token, "tokens rotate");
    for n in 0..5u32 {
        let got = alice.recv().await;
        assert_eq!(got["type"], "candidate");
        assert_eq!(got["username"], "bob");
        assert_eq!(got["candidate"]["candidate"], format!("candidate:{n}"));
        assert_eq!(got["seq"], last + 1 + u64::from(n));
    }
    // The call goes on both ways; numbering continues.
    alice.send(candidate("bob", 99)).await;
    assert_eq!(bob.recv().await["candidate"]["candidate"], "candidate:99");
    bob.send(candidate("alice", 100)).await;
    assert_eq!(alice.recv().await["seq"], last + 6);
    // The old token is spent.
    let (_spent, reply) = resume(&server.url, &token, last).await;
    assert_eq!(
        (reply["success"].as_bool(), reply["code"].as_str()),
        (Some(false), Some("invalid_token"))
    );
    bob.send(json!({"type": "close", "otherUsername": "alice"}))
        .await;
    let got = alice.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["username"].as_str()),
        (Some("close"), Some("bob"))
    );
    server.hub.shutdown().await;
}

/// The resumable client stops reading (its socket is half-open as far as the server can
/// tell) while its partner sends; a resume from a new connection takes the session over: the
/// old connection is closed with 4000 and the messages its page never read arrive on the new
/// one, in order, once each.
pub async fn takeover_of_a_half_open_connection(start: Start) {
    let server = start(grace(30)).await;
    let mut bob = Client::login(&server.url, "bob").await;
    let (mut alice, token) = login_resumable(&server.url, "alice").await;
    let last = call_resumable(&mut bob, "bob", &mut alice, "alice").await;

    // Written into alice's socket; her application never reads them.
    for n in 0..10 {
        bob.send(candidate("alice", n)).await;
    }
    bob.idle(Duration::from_millis(200)).await;

    let (mut fresh, reply) = resume(&server.url, &token, last).await;
    assert_eq!(reply["success"], true, "{reply}");
    for n in 0..10u32 {
        let got = fresh.recv().await;
        assert_eq!(got["candidate"]["candidate"], format!("candidate:{n}"));
        assert_eq!(got["seq"], last + 1 + u64::from(n));
    }
    // The old connection: what was already in its socket, then close 4000.
    let frame = alice.expect_close().await;
    assert_eq!(u16::from(frame.code), 4000);
    assert!(frame.reason.contains("resumed"), "{}", frame.reason);
    // Nothing was told to bob, and the call is intact.
    fresh.send(candidate("bob", 7)).await;
    let got = bob.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["username"].as_str()),
        (Some("candidate"), Some("alice"))
    );
    server.hub.shutdown().await;
}

/// A dropped resumable session that is not resumed: when the grace ends, the name is freed
/// and the partner gets `close` exactly once.
pub async fn grace_expiry(start: Start) {
    let server = start(grace(1)).await;
    let mut bob = Client::login(&server.url, "bob").await;
    let (mut alice, token) = login_resumable(&server.url, "alice").await;
    let last = call_resumable(&mut bob, "bob", &mut alice, "alice").await;
    drop(alice);
    assert_eq!(
        bob.recv().await,
        json!({"type": "close", "username": "alice"})
    );
    bob.idle(Duration::from_millis(500)).await; // exactly once
    let (_late, reply) = resume(&server.url, &token, last).await;
    assert_eq!(reply["code"], "invalid_token", "{reply}");
    let mut alice = login_when_free(&server.url, "alice").await;
    call(&mut bob, "bob", &mut alice, "alice").await;
    server.hub.shutdown().await;
}

/// A resumable client that closes cleanly (a close frame) ends its session at once: the
/// partner is told and the name is free, as for a plain client.
pub async fn clean_close_ends_the_session(start: Start) {
    let server = start(grace(30)).await;
    let mut bob = Client::login(&server.url, "bob").await;
    let (mut alice, token) = login_resumable(&server.url, "alice").await;
    call_resumable(&mut bob, "bob", &mut alice, "alice").await;
    crate::patiently("close", alice.ws.close(None))
        .await
        .expect("close");
    assert_eq!(
        bob.recv().await,
        json!({"type": "close", "username": "alice"})
    );
    let (_late, reply) = resume(&server.url, &token, 1).await;
    assert_eq!(reply["code"], "invalid_token", "{reply}");
    let mut again = Client::login(&server.url, "alice").await;
    call(&mut again, "alice", &mut bob, "bob").await;
    server.hub.shutdown().await;
}

/// An offer nobody answers ends after the ring timeout: both sides get `close` with
/// `"reason":"no_answer"`, and the callee can take calls again; the caller backs off from
/// that callee only.
pub async fn ring_timeout(start: Start) {
    let config = with_router(|r| r.with_ring_timeout(Some(Duration::from_secs(1))));
    let server = start(config).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    alice.send(offer("bob", "v=0 unanswered")).await;
    assert_eq!(bob.recv().await["type"], "offer");
    assert_eq!(
        bob.recv().await,
        json!({"type": "close", "username": "alice", "reason": "no_answer"})
    );
    assert_eq!(
        alice.recv().await,
        json!({"type": "close", "username": "bob", "reason": "no_answer"})
    );
    // bob is free: carol's call goes through.
    let mut carol = Client::login(&server.url, "carol").await;
    call(&mut carol, "carol", &mut bob, "bob").await;
    // alice may not ring bob again right away (he would be busy anyway, so hang up first).
    carol.send(json!({"type": "close"})).await;
    assert_eq!(bob.recv().await["type"], "close");
    alice.send(offer("bob", "v=0 again")).await;
    let got = alice.recv().await;
    assert_eq!(got["code"], "redial_too_soon", "{got}");
    server.hub.shutdown().await;
}

/// An answered call never rings out.
pub async fn answered_call_never_expires(start: Start) {
    let config = with_router(|r| r.with_ring_timeout(Some(Duration::from_millis(500))));
    let server = start(config).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;
    bob.idle(Duration::from_millis(1500)).await;
    alice.idle(Duration::from_millis(100)).await;
    alice.send(candidate("bob", 1)).await;
    assert_eq!(bob.recv().await["type"], "candidate");
    server.hub.shutdown().await;
}
