//! Every message's JSON shape against the tutorial's exact JSON text
//! (`shared/reference/webrtc-tutorial.md` and its server, `shared/peers/tutorial-server/server.js`).

use signaling_core::{
    ClientMessage, ErrorCode, IceServerList, Payload, RelayKind, ReplyType, ServerMessage,
    SessionToken, Username,
};

fn name(s: &str) -> Username {
    Username::new(s).unwrap()
}

fn payload(s: &str) -> Payload {
    Payload::from_json(s).unwrap()
}

// What a tutorial page sends (`JSON.stringify` of the objects in the tutorial).

#[test]
fn login_from_tutorial_page() {
    let m = ClientMessage::decode(r#"{"type":"login","username":"alice"}"#).unwrap();
    assert_eq!(
        m,
        ClientMessage::Login {
            username: name("alice"),
            resumable: false,
        }
    );
    assert_eq!(m.to_json(), r#"{"type":"login","username":"alice"}"#);
}

#[test]
fn offer_from_tutorial_page_keeps_payload_text() {
    let text = r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n"},"otherUsername":"bob"}"#;
    let m = ClientMessage::decode(text).unwrap();
    let ClientMessage::Relay { kind, payload, to } = &m else {
        panic!("not a relay: {m:?}")
    };
    assert_eq!(*kind, RelayKind::Offer);
    assert_eq!(
        payload.get(),
        r#"{"type":"offer","sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n"}"#
    );
    assert_eq!(to.as_ref(), Some(&name("bob")));
    assert_eq!(m.to_json(), text);
}

#[test]
fn answer_and_candidate_from_tutorial_page() {
    for (kind, text) in [
        (
            RelayKind::Answer,
            r#"{"type":"answer","answer":{"type":"answer","sdp":"v=0"},"otherUsername":"alice"}"#,
        ),
        (
            RelayKind::Candidate,
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.168.1.2 56143 typ host","sdpMid":"0","sdpMLineIndex":0},"otherUsername":"alice"}"#,
        ),
    ] {
        let m = ClientMessage::decode(text).unwrap();
        assert!(
            matches!(&m, ClientMessage::Relay { kind: k, .. } if *k == kind),
            "{m:?}"
        );
        assert_eq!(m.to_json(), text);
    }
}

#[test]
fn close_with_and_without_other_username() {
    assert_eq!(
        ClientMessage::decode(r#"{"type":"close"}"#).unwrap(),
        ClientMessage::HangUp { to: None }
    );
    assert_eq!(
        ClientMessage::decode(r#"{"type":"close","otherUsername":"bob"}"#).unwrap(),
        ClientMessage::HangUp {
            to: Some(name("bob"))
        }
    );
}

#[test]
fn payload_is_relayed_byte_for_byte() {
    // Odd spacing, key order, escapes and number forms survive untouched.
    let raw = r#"{ "sdp" : "a\u0041\n\/", "type":"offer" ,"x":1.0e3 }"#;
    let text = format!(r#"{{"type":"offer","offer":{raw},"otherUsername":"bob"}}"#);
    let ClientMessage::Relay { payload, .. } = ClientMessage::decode(&text).unwrap() else {
        panic!()
    };
    assert_eq!(payload.get(), raw);
    let out = ServerMessage::Relay {
        kind: RelayKind::Offer,
        payload,
        from: name("alice"),
    };
    assert_eq!(
        out.to_json(),
        format!(r#"{{"type":"offer","offer":{raw},"username":"alice"}}"#)
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let m = ClientMessage::decode(
        r#"{"type":"login","username":"alice","client":"v2","extra":[1,{}]}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        ClientMessage::Login {
            username: name("alice"),
            resumable: false,
        }
    );
}

// What the tutorial server sends, and ours with its additive fields.

#[test]
fn login_replies_match_the_tutorial() {
    let ok = ServerMessage::Login {
        success: true,
        error: None,
        ice_servers: None,
    };
    assert_eq!(ok.to_json(), r#"{"type":"login","success":true}"#);
    let bare_failure = ServerMessage::Login {
        success: false,
        error: None,
        ice_servers: None,
    };
    assert_eq!(
        bare_failure.to_json(),
        r#"{"type":"login","success":false}"#
    );
    let failure = ServerMessage::Login {
        success: false,
        error: Some((ErrorCode::NameTaken, "the name \"alice\" is taken".into())),
        ice_servers: None,
    };
    assert_eq!(
        failure.to_json(),
        r#"{"type":"login","success":false,"code":"name_taken","message":"the name \"alice\" is taken"}"#
    );
}

/// `iceServers` (issue 12) is one more field at the end of a successful login or resume reply,
/// its array spliced in as the driver made it; without it the replies are the tutorial's.
#[test]
fn ice_servers_extend_the_success_replies() {
    let list = r#"[{"urls":["stun:127.0.0.1:3478"]},{"urls":["turn:127.0.0.1:3478"],"username":"1700003600:alice","credential":"c2VjcmV0"}]"#;
    let ice = IceServerList::from_json(list).unwrap();
    let login = ServerMessage::Login {
        success: true,
        error: None,
        ice_servers: Some(ice.clone()),
    };
    assert_eq!(
        login.to_json(),
        format!(r#"{{"type":"login","success":true,"iceServers":{list}}}"#)
    );
    let started = ServerMessage::SessionStarted {
        token: SessionToken::new("tok"),
        grace_ms: 30_000,
        ice_servers: Some(ice.clone()),
    };
    assert_eq!(
        started.to_json(),
        format!(
            r#"{{"type":"login","success":true,"token":"tok","graceMs":30000,"iceServers":{list}}}"#
        )
    );
    let resumed = ServerMessage::Resumed {
        username: name("alice"),
        token: SessionToken::new("tok"),
        grace_ms: 1,
        ice_servers: Some(ice.clone()),
    };
    assert_eq!(
        resumed.to_json(),
        format!(
            r#"{{"type":"resume","success":true,"username":"alice","token":"tok","graceMs":1,"iceServers":{list}}}"#
        )
    );
    assert!(login.size_hint() >= login.to_json().len());
    // The credentials stay out of logs.
    assert!(!format!("{login:?}").contains("c2VjcmV0"), "{login:?}");
    for not_an_array in ["{}", "null", "\"stun:x\"", "[", ""] {
        assert!(
            IceServerList::from_json(not_an_array).is_err(),
            "{not_an_array}"
        );
    }
}

#[test]
fn relayed_offer_matches_the_tutorial_exactly() {
    // Tutorial: sendTo(users[data.otherUsername], { type: 'offer', offer: data.offer, username: ws.username })
    let m = ServerMessage::Relay {
        kind: RelayKind::Offer,
        payload: payload(r#"{"type":"offer","sdp":"v=0"}"#),
        from: name("alice"),
    };
    assert_eq!(
        m.to_json(),
        r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0"},"username":"alice"}"#
    );
}

#[test]
fn relayed_answer_candidate_close_extend_the_tutorial_with_username() {
    // Tutorial: { type: 'answer', answer }, { type: 'candidate', candidate }, { type: 'close' }.
    // Ours: the same fields in the same order, plus the sender's username.
    let cases = [
        (
            ServerMessage::Relay {
                kind: RelayKind::Answer,
                payload: payload(r#"{"type":"answer","sdp":"v=0"}"#),
                from: name("bob"),
            },
            r#"{"type":"answer","answer":{"type":"answer","sdp":"v=0"}"#,
            r#","username":"bob"}"#,
        ),
        (
            ServerMessage::Relay {
                kind: RelayKind::Candidate,
                payload: payload(
                    r#"{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
                ),
                from: name("bob"),
            },
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
            r#","username":"bob"}"#,
        ),
        (
            ServerMessage::HangUp {
                from: name("bob"),
                reason: None,
            },
            r#"{"type":"close""#,
            r#","username":"bob"}"#,
        ),
    ];
    for (message, tutorial_prefix, our_suffix) in cases {
        assert_eq!(message.to_json(), format!("{tutorial_prefix}{our_suffix}"));
        // A tutorial client parses it and finds every field it knows with the tutorial's value.
        let ours: serde_json::Value = serde_json::from_str(&message.to_json()).unwrap();
        let tutorial: serde_json::Value =
            serde_json::from_str(&format!("{tutorial_prefix}}}")).unwrap();
        for (k, v) in tutorial.as_object().unwrap() {
            assert_eq!(&ours[k], v, "field {k}");
        }
    }
}

#[test]
fn unknown_type_error_keeps_the_tutorial_message() {
    // Tutorial: sendTo(ws, { type: 'error', message: 'Command not found: ' + data.type })
    let err = ClientMessage::decode(r#"{"type":"dance"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownType);
    let m = ServerMessage::error(err.code, err.message);
    assert_eq!(
        m.to_json(),
        r#"{"type":"error","code":"unknown_type","message":"Command not found: dance"}"#
    );
}

#[test]
fn a_huge_unknown_type_is_echoed_to_64_characters() {
    // Issue 9: a 60 KB `type` was echoed in full into the sender's own queue.
    let long = "é".repeat(30_000);
    let err = ClientMessage::decode(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownType);
    let expected = format!("Command not found: {}…", "é".repeat(64));
    assert_eq!(err.message, expected);
    // Exactly 64 characters pass unchanged.
    let edge = "x".repeat(64);
    let err = ClientMessage::decode(&format!(r#"{{"type":"{edge}"}}"#)).unwrap_err();
    assert_eq!(err.message, format!("Command not found: {edge}"));
}

#[test]
fn names_are_escaped_as_json() {
    let m = ServerMessage::HangUp {
        from: name("a\"b\\c/é"),
        reason: None,
    };
    assert_eq!(m.to_json(), r#"{"type":"close","username":"a\"b\\c/é"}"#);
    let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(v["username"], "a\"b\\c/é");
}

#[test]
fn error_messages_with_control_characters_stay_valid_json() {
    let m = ServerMessage::error(ErrorCode::InvalidJson, "bad \u{1} \n \t \u{1f} end");
    let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(v["message"], "bad \u{1} \n \t \u{1f} end");
    assert_eq!(v["code"], "invalid_json");
}

#[test]
fn every_error_code_round_trips_and_is_snake_case() {
    for &code in ErrorCode::ALL {
        let s = code.as_str();
        assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
        assert_eq!(ErrorCode::from_wire(s), Some(code));
    }
    let mut all: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), ErrorCode::ALL.len());
}

#[test]
fn every_error_code_is_documented_in_protocol_md() {
    let doc = include_str!("../../../docs/protocol.md");
    for &code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("`{}`", code.as_str())),
            "docs/protocol.md lacks `{code}`"
        );
    }
}

// Bad frames: each gets a precise code and names the field.

#[test]
fn bad_frames_get_precise_errors() {
    let cases: &[(&str, ErrorCode, &str)] = &[
        ("", ErrorCode::InvalidJson, "empty"),
        ("   ", ErrorCode::InvalidJson, "empty"),
        ("{", ErrorCode::InvalidJson, "invalid JSON"),
        ("not json", ErrorCode::InvalidJson, "invalid JSON"),
        ("null", ErrorCode::NotAnObject, "object"),
        ("[]", ErrorCode::NotAnObject, "object"),
        ("42", ErrorCode::NotAnObject, "object"),
        (r#""x""#, ErrorCode::NotAnObject, "object"),
        ("{}", ErrorCode::MissingField, "`type`"),
        (r#"{"type":7}"#, ErrorCode::InvalidField, "`type`"),
        (r#"{"type":null}"#, ErrorCode::MissingField, "`type`"),
        (r#"{"type":"login"}"#, ErrorCode::MissingField, "`username`"),
        (
            r#"{"type":"login","username":null}"#,
            ErrorCode::MissingField,
            "`username`",
        ),
        (
            r#"{"type":"login","username":{}}"#,
            ErrorCode::InvalidField,
            "`username`",
        ),
        (
            r#"{"type":"login","username":""}"#,
            ErrorCode::InvalidUsername,
            "empty",
        ),
        (
            r#"{"type":"login","username":"a\u0000b"}"#,
            ErrorCode::InvalidUsername,
            "control",
        ),
        (
            r#"{"type":"offer","otherUsername":"bob"}"#,
            ErrorCode::MissingField,
            "`offer`",
        ),
        (
            r#"{"type":"answer","otherUsername":"bob"}"#,
            ErrorCode::MissingField,
            "`answer`",
        ),
        (
            r#"{"type":"candidate","otherUsername":"bob"}"#,
            ErrorCode::MissingField,
            "`candidate`",
        ),
        (
            r#"{"type":"offer","offer":{},"otherUsername":5}"#,
            ErrorCode::InvalidField,
            "`otherUsername`",
        ),
        (
            r#"{"type":"close","otherUsername":[]}"#,
            ErrorCode::InvalidField,
            "`otherUsername`",
        ),
        (
            r#"{"type":"login","username":"a","username":"b"}"#,
            ErrorCode::InvalidMessage,
            "duplicate",
        ),
        (
            r#"{"type":"login","username":"a"} trailing"#,
            ErrorCode::InvalidJson,
            "invalid JSON",
        ),
        (
            r#"{"type":"__proto__"}"#,
            ErrorCode::UnknownType,
            "Command not found: __proto__",
        ),
    ];
    for (text, code, needle) in cases {
        let err = ClientMessage::decode(text).unwrap_err();
        assert_eq!(err.code, *code, "{text:?}: {err:?}");
        assert!(
            err.message.contains(needle),
            "{text:?}: {:?} lacks {needle:?}",
            err.message
        );
        // A bad `login` is answered as a failed login, which is what a tutorial page waits for.
        let is_login = text.contains(r#""type":"login""#)
            && !text.contains("trailing")
            && !text.contains(r#""username":"a","username""#);
        assert_eq!(err.reply_type == ReplyType::Login, is_login, "{text:?}");
    }
}

#[test]
fn username_rules() {
    assert!(Username::new("__proto__").is_ok());
    assert!(Username::new("constructor").is_ok());
    assert!(Username::new("toString").is_ok());
    assert!(Username::new("José 👋").is_ok());
    assert!(Username::new(&"x".repeat(64)).is_ok());
    assert!(Username::new(&"é".repeat(64)).is_ok());
    assert!(Username::new(&"x".repeat(65)).is_err());
    assert!(Username::new("").is_err());
    assert!(Username::new("a\nb").is_err());
    assert!(Username::new("a\u{7f}").is_err());
    assert!(Username::new("a\u{85}").is_err());
}

#[test]
fn deep_nesting_neither_overflows_nor_is_rebuilt() {
    // The payload is opaque: a deeply nested value is carried as text (the transport's size limit
    // bounds it), and decoding it must not recurse into a stack overflow.
    let inner = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep = format!(r#"{{"type":"offer","offer":{inner},"otherUsername":"b"}}"#);
    let ClientMessage::Relay { payload, .. } = ClientMessage::decode(&deep).unwrap() else {
        panic!("not a relay")
    };
    assert_eq!(payload.get().len(), inner.len());
    // Unbalanced deep nesting is invalid JSON, reported without a crash.
    let broken = format!(r#"{{"type":"offer","offer":{}}}"#, "[".repeat(100_000));
    assert_eq!(
        ClientMessage::decode(&broken).unwrap_err().code,
        ErrorCode::InvalidJson
    );
}
