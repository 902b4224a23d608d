//! The session rules, replayed from the scenarios the browser's
//! `web/js/session.js` replays too (tests/tests/protocol.rs): the two clients
//! cannot drift apart.

use serde_json::{Value, json};
use std::time::Duration;
use switchboard_client::{JoinRequest, ReconnectPolicy, Refusal, Session};
use switchboard_protocol::{ClientMessage, ErrorCode, Role, ServerMessage, Welcome};

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/session.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

fn server(message: &Value) -> ServerMessage {
    ServerMessage::from_json(&message.to_string()).unwrap_or_else(|| panic!("not a server message: {message}"))
}

fn client(message: &Value) -> ClientMessage {
    serde_json::from_value(message.clone()).unwrap_or_else(|e| panic!("not a client message: {message}: {e}"))
}

fn resend_ids(resend: Option<Vec<ClientMessage>>) -> Value {
    match resend {
        None => Value::Null,
        Some(list) => list
            .iter()
            .map(|m| match m {
                ClientMessage::Chat(c) => json!(c.client_id.as_str()),
                other => panic!("a resend of {other:?}"),
            })
            .collect(),
    }
}

fn refusal_name(r: Refusal) -> &'static str {
    match r {
        Refusal::JoinAfresh => "join_afresh",
        Refusal::Fatal => "fatal",
        Refusal::Retry => "retry",
    }
}

#[test]
fn every_session_scenario_holds() {
    let fixture = fixture();
    let template = fixture["welcome_template"].as_object().expect("template").clone();
    for scenario in fixture["scenarios"].as_array().expect("scenarios") {
        let name = scenario["name"].as_str().expect("name");
        let request = &scenario["request"];
        let mut session = Session::new(
            "ws://example.invalid/v1/ws",
            JoinRequest {
                room: request["room"].as_str().expect("room").into(),
                name: request["name"].as_str().expect("name").into(),
                token: request["token"].as_str().map(String::from),
                role: Role::Participant,
                reconnect: Some(ReconnectPolicy::default()),
                internal_key: None,
            },
        );
        for (i, step) in scenario["steps"].as_array().expect("steps").iter().enumerate() {
            let at = format!("{name}, step {i} ({step})");
            let expect = &step["expect"];
            match step["op"].as_str().expect("op") {
                "join_message" => {
                    let join = session.join_message(step["resume"].as_bool().expect("resume")).expect("join");
                    assert_eq!(serde_json::to_value(&join).expect("JSON"), *expect, "{at}");
                }
                "welcome" => {
                    let mut welcome = template.clone();
                    for (k, v) in step["set"].as_object().expect("set") {
                        welcome.insert(k.clone(), v.clone());
                    }
                    let welcome: Welcome = match server(&Value::Object(welcome)) {
                        ServerMessage::Welcome(w) => *w,
                        other => panic!("{at}: {other:?}"),
                    };
                    session.welcomed(&welcome);
                }
                "receive" => session.received(&server(&step["message"])),
                "receive_many" => {
                    let message = server(&step["message"]);
                    for _ in 0..step["count"].as_u64().expect("count") {
                        session.received(&message);
                    }
                }
                "send" => session.sending(&client(&step["message"])),
                "send_many" => {
                    let prefix = step["prefix"].as_str().expect("prefix");
                    for n in 0..step["count"].as_u64().expect("count") {
                        session.sending(&client(
                            &json!({"type": "chat", "client_id": format!("{prefix}{n}"), "text": "x"}),
                        ));
                    }
                }
                "take_resend" => assert_eq!(resend_ids(session.take_resend()), *expect, "{at}"),
                "resend_count" => {
                    let ids = resend_ids(session.take_resend());
                    let ids = ids.as_array().expect("a resend");
                    assert_eq!(ids.len() as u64, expect.as_u64().expect("count"), "{at}");
                    assert_eq!(ids.first(), Some(&step["first"]), "{at}");
                }
                "give_up_replay" => session.give_up_replay(),
                "ack_due" => assert_eq!(json!(session.ack_due()), *expect, "{at}"),
                "ping" => assert_eq!(serde_json::to_value(session.ping()).expect("JSON"), *expect, "{at}"),
                "refusal" => {
                    let code: ErrorCode = serde_json::from_value(step["code"].clone()).expect("code");
                    let got = refusal_name(Session::refusal(code, step["resumed"].as_bool().expect("resumed")));
                    assert_eq!(json!(got), *expect, "{at}");
                }
                "wait" => {
                    let floor = Duration::from_millis(step["floor_ms"].as_u64().expect("floor"));
                    let attempt = u32::try_from(step["attempt"].as_u64().expect("attempt")).expect("small");
                    let wait = ReconnectPolicy::default().wait(attempt, floor, step["unit"].as_f64().expect("unit"));
                    assert_eq!(json!(wait.as_millis() as u64), step["expect_ms"], "{at}");
                }
                other => panic!("unknown op {other} in {at}"),
            }
        }
    }
}
