//! Issue 9, part A: names that look alike are the same name. Usernames are NFC-normalized,
//! invisible / private-use / unassigned characters and white space at the ends are refused, and
//! a login whose TR39 confusable skeleton is in use gets `name_taken`.

use crate::common::{Harness, offer};
use serde_json::{Value, json};
use signaling_core::{ClientMessage, ConnectionId, ErrorCode, ReplyType, Username, UsernameError};

/// Sends a login for `name` (JSON-escaped) and returns the one reply.
fn login(h: &mut Harness, conn: ConnectionId, name: &str) -> Value {
    let frame = json!({"type": "login", "username": name}).to_string();
    h.send(conn, &frame);
    let out = h.drain();
    assert_eq!(out.len(), 1, "{name:?}: {out:?}");
    assert_eq!(out[0].0, conn, "{name:?}: {out:?}");
    out[0].1.clone()
}

/// The failed login's code, or "ok".
fn outcome(reply: &Value) -> String {
    assert_eq!(reply["type"], "login", "{reply}");
    if reply["success"] == true {
        "ok".to_string()
    } else {
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        reply["code"].as_str().unwrap().to_string()
    }
}

#[test]
fn look_alikes_of_a_logged_in_name_are_refused() {
    let mut h = Harness::unlimited();
    let alice = h.user("alice");
    let cases = [
        ("\u{430}lice", "name_taken"), // Cyrillic а
        ("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", "name_taken"), // fullwidth ａｌｉｃｅ
        ("alice\u{34f}", "name_taken"), // combining grapheme joiner (Mn)
        ("alice\u{200d}", "invalid_username"), // zero-width joiner
        ("alice\u{200c}", "invalid_username"), // zero-width non-joiner
        ("\u{200b}alice", "invalid_username"), // zero-width space
        (" alice", "invalid_username"),
        ("alice ", "invalid_username"),
        ("alice\u{a0}", "invalid_username"),   // no-break space
        ("\u{3000}alice", "invalid_username"), // ideographic space
        ("\u{202e}alice", "invalid_username"), // right-to-left override
        ("\u{2066}alice\u{2069}", "invalid_username"), // bidi isolate
        ("\u{feff}alice", "invalid_username"), // byte order mark
        ("alice\u{e0061}\u{e006c}", "invalid_username"), // tag characters
        ("alice\u{e000}", "invalid_username"), // private use
        ("alice\u{378}", "invalid_username"),  // unassigned
        ("alice\u{ffff}", "invalid_username"), // noncharacter (Cn)
        ("alice\u{85}", "invalid_username"),   // NEL, a C1 control
    ];
    for (name, expected) in cases {
        let c = h.connect();
        let reply = login(&mut h, c, name);
        assert_eq!(outcome(&reply), expected, "{name:?}: {reply}");
        assert_eq!(h.router.username(c), None, "{name:?}");
    }
    assert_eq!(h.router.user_count(), 1);
    assert_eq!(h.router.connection_of("alice"), Some(alice));
}

#[test]
fn a_look_alike_refusal_does_not_say_whom_it_resembles() {
    let mut h = Harness::unlimited();
    h.user("alice");
    let c = h.connect();
    let reply = login(&mut h, c, "\u{430}lice");
    assert_eq!(reply["code"], "name_taken");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("looks like a name in use"), "{message}");
    assert!(!message.contains("\"alice\""), "{message}");
}

#[test]
fn each_refused_character_has_its_own_reason() {
    let cases = [
        ("", UsernameError::Empty),
        ("a\u{1}", UsernameError::ControlCharacter),
        ("a\u{9f}é", UsernameError::ControlCharacter),
        ("a\u{200d}", UsernameError::FormatCharacter('\u{200d}')),
        ("\u{202e}a", UsernameError::FormatCharacter('\u{202e}')),
        ("a\u{e0061}", UsernameError::FormatCharacter('\u{e0061}')),
        ("a\u{f8ff}", UsernameError::PrivateUse('\u{f8ff}')),
        ("a\u{10ffff}", UsernameError::Unassigned('\u{10ffff}')),
        (" a", UsernameError::LeadingWhitespace),
        ("\u{a0}é", UsernameError::LeadingWhitespace),
        ("a ", UsernameError::TrailingWhitespace),
        ("é\u{2003}", UsernameError::TrailingWhitespace),
    ];
    let mut messages = Vec::new();
    for (name, error) in cases {
        assert_eq!(Username::new(name), Err(error), "{name:?}");
        assert_eq!(Username::validate(name), Err(error), "{name:?}");
        messages.push(error.to_string());
    }
    assert!(messages[3].contains("U+200D"), "{}", messages[3]);
    assert!(messages[4].contains("U+202E"), "{}", messages[4]);
    // On the wire: a failed login, or an error for otherUsername, naming the field and reason.
    let e = ClientMessage::decode(r#"{"type":"login","username":"\u202ealice"}"#).unwrap_err();
    assert_eq!(
        (e.code, e.reply_type),
        (ErrorCode::InvalidUsername, ReplyType::Login)
    );
    assert!(e.message.contains("`username`") && e.message.contains("U+202E"));
    let e = ClientMessage::decode(r#"{"type":"close","otherUsername":"bob\u00a0"}"#).unwrap_err();
    assert_eq!(
        (e.code, e.reply_type),
        (ErrorCode::InvalidUsername, ReplyType::Error)
    );
    assert!(e.message.contains("`otherUsername`") && e.message.contains("end with white space"));
}

#[test]
fn ordinary_names_work_and_only_true_confusables_collide() {
    let mut h = Harness::unlimited();
    let ordinary = [
        "alice",
        "Alice", // case is significant
        "bob",
        "zoë-李-🦊",
        "Jean Dupont",
        "Jean  Dupont",
        "Ελένη",
        "__proto__",
        "constructor",
        "toString",
        "O'Brien",
        "user@example.com",
        "a b c",
        "m",
    ];
    for name in ordinary {
        let c = h.connect();
        assert_eq!(outcome(&login(&mut h, c, name)), "ok", "{name:?}");
        assert_eq!(h.router.username(c).unwrap().as_str(), name);
        let skeleton = Username::new(name).unwrap().skeleton();
        assert_eq!(
            h.router.connection_of_skeleton(&skeleton),
            Some(c),
            "{name:?}"
        );
    }
    // TR39 confusable pairs are one name: "rn" looks like "m", "AIice" (capital I) like "Alice".
    for name in [
        "rn",
        "AIice",
        "J\u{435}an Dupont",
        "zoe\u{308}-李-🦊\u{fe0f}",
    ] {
        let c = h.connect();
        assert_eq!(outcome(&login(&mut h, c, name)), "name_taken", "{name:?}");
    }
    assert_eq!(h.router.user_count(), ordinary.len());
}

#[test]
fn nfd_and_nfc_spellings_are_one_name() {
    let mut h = Harness::unlimited();
    let zoe = h.connect();
    assert_eq!(outcome(&login(&mut h, zoe, "zoe\u{308}")), "ok");
    // Stored, and stamped on the wire, in NFC.
    assert_eq!(h.router.username(zoe).unwrap().as_str(), "zo\u{eb}");
    let again = h.connect();
    let reply = login(&mut h, again, "zo\u{eb}");
    assert_eq!(reply["code"], "name_taken");
    assert_eq!(
        reply["message"], "the name \"zo\u{eb}\" is taken",
        "an exact match after NFC"
    );
    let bob = h.user("bob");
    h.send(zoe, &offer("bob"));
    assert_eq!(
        h.drain(),
        vec![(
            bob,
            json!({"type":"offer","offer":{"type":"offer","sdp":"v=0"},"username":"zo\u{eb}"})
        )]
    );
    assert_eq!(
        Username::new("zoe\u{308}").unwrap(),
        Username::new("zo\u{eb}").unwrap()
    );
}

#[test]
fn a_relay_to_the_nfd_spelling_reaches_the_nfc_user() {
    let mut h = Harness::unlimited();
    let zoe = h.user("zo\u{eb}");
    let bob = h.user("bob");
    let nfd = "zoe\u{308}";
    assert_eq!(h.router.connection_of(nfd), Some(zoe));
    h.send(
        bob,
        &json!({"type":"offer","offer":{},"otherUsername":nfd}).to_string(),
    );
    assert_eq!(
        h.drain(),
        vec![(zoe, json!({"type":"offer","offer":{},"username":"bob"}))]
    );
    h.send(
        zoe,
        &json!({"type":"answer","answer":{},"otherUsername":"bob"}).to_string(),
    );
    assert_eq!(h.drain()[0].0, bob);
    // Naming oneself in NFD is still naming oneself.
    h.expect_error(
        zoe,
        &json!({"type":"candidate","candidate":{},"otherUsername":nfd}).to_string(),
        "self_addressed",
    );
    h.send(
        bob,
        &json!({"type":"close","otherUsername":nfd}).to_string(),
    );
    assert_eq!(
        h.drain(),
        vec![(zoe, json!({"type":"close","username":"bob"}))]
    );
}

#[test]
fn a_freed_name_frees_its_look_alikes() {
    let mut h = Harness::unlimited();
    let alice = h.user("alice");
    let c = h.connect();
    assert_eq!(outcome(&login(&mut h, c, "\u{430}lice")), "name_taken");
    h.router.handle_disconnect(alice).unwrap();
    assert_eq!(h.router.connection_of_skeleton("alice"), None);
    assert_eq!(outcome(&login(&mut h, c, "\u{430}lice")), "ok");
    assert_eq!(h.router.connection_of_skeleton("alice"), Some(c));
    // Now the Latin spelling is the look-alike.
    let latin = h.connect();
    assert_eq!(outcome(&login(&mut h, latin, "alice")), "name_taken");
    h.router.handle_disconnect(c).unwrap();
    assert_eq!(outcome(&login(&mut h, latin, "alice")), "ok");
    assert_eq!(h.router.user_count(), 1);
}

#[test]
fn a_name_with_nothing_visible_is_refused() {
    let mut h = Harness::unlimited();
    for name in ["\u{3164}", "\u{3164}\u{3164}", "\u{fe0f}", "\u{34f}"] {
        let c = h.connect();
        assert_eq!(
            outcome(&login(&mut h, c, name)),
            "invalid_username",
            "{name:?}"
        );
    }
    assert_eq!(h.router.user_count(), 0);
}

#[test]
fn the_length_limit_counts_the_nfc_form() {
    // 64 × "e" + U+0301 is 128 scalar values as sent, 64 × "é" in NFC: accepted.
    let nfd: String = "e\u{301}".repeat(64);
    let name = Username::new(&nfd).unwrap();
    assert_eq!(name.as_str().chars().count(), 64);
    assert_eq!(
        Username::new(&"e\u{301}".repeat(65)),
        Err(UsernameError::TooLong)
    );
    assert_eq!(Username::new(&"é".repeat(65)), Err(UsernameError::TooLong));
    assert_eq!(Username::new(&"a".repeat(65)), Err(UsernameError::TooLong));
    assert!(Username::new(&"a".repeat(64)).is_ok());
    // A long run of combining marks is refused without being normalized at length.
    assert_eq!(
        Username::new(&format!("a{}", "\u{301}".repeat(10_000))),
        Err(UsernameError::TooLong)
    );
}
