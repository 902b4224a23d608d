//! Golden fixtures: one JSON file per message type, the shared contract of the
//! Rust types, the browser client and `docs/protocol.md`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use switchboard_protocol::{ClientKind, ClientMessage, ServerKind, ServerMessage, parse_client};

fn dir(side: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(side)
}

fn read(side: &str, kind: &str) -> String {
    let path = dir(side).join(format!("{kind}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()))
}

fn files(side: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir(side))
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().trim_end_matches(".json").to_owned())
        .collect()
}

#[test]
fn every_client_message_round_trips_its_fixture() {
    for kind in ClientKind::ALL {
        let text = read("client", kind.as_str());
        let msg = parse_client(&text).unwrap_or_else(|e| panic!("{}: {e:?}", kind.as_str()));
        assert_eq!(msg.kind(), kind);
        let back: Value = serde_json::to_value(&msg).expect("serialize");
        let original: Value = serde_json::from_str(&text).expect("fixture is JSON");
        assert_eq!(back, original, "{} does not round-trip", kind.as_str());
        let again: ClientMessage = serde_json::from_value(back).expect("reparse");
        assert_eq!(again, msg);
    }
}

#[test]
fn every_server_message_round_trips_its_fixture() {
    for kind in ServerKind::ALL {
        let text = read("server", kind.as_str());
        let msg: ServerMessage = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", kind.as_str()));
        assert_eq!(msg.kind(), kind);
        let back: Value = serde_json::from_str(&msg.to_json()).expect("to_json is JSON");
        let original: Value = serde_json::from_str(&text).expect("fixture is JSON");
        assert_eq!(back, original, "{} does not round-trip", kind.as_str());
    }
}

#[test]
fn no_fixture_without_a_message_type() {
    let client: BTreeSet<String> = ClientKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    let server: BTreeSet<String> = ServerKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(files("client"), client);
    assert_eq!(files("server"), server);
}

#[test]
fn protocol_doc_shows_every_message_type() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md"))
        .expect("docs/protocol.md");
    for kind in ClientKind::ALL {
        let needle = format!("\"type\":\"{}\"", kind.as_str());
        assert!(doc.contains(&needle), "docs/protocol.md has no example of client {}", kind.as_str());
    }
    for kind in ServerKind::ALL {
        let needle = format!("\"type\":\"{}\"", kind.as_str());
        assert!(doc.contains(&needle), "docs/protocol.md has no example of server {}", kind.as_str());
    }
    for code in switchboard_protocol::ErrorCode::ALL {
        assert!(doc.contains(&format!("`{}`", code.as_str())), "docs/protocol.md does not document {}", code.as_str());
    }
}

/// Every JSON example in a ```json block of `doc` (one per line, or one
/// pretty-printed object per block), with the line it starts on.
fn json_examples(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, Vec<&str>)> = None;
    for (n, line) in doc.lines().enumerate() {
        match (&mut block, line.trim_end()) {
            (None, "```json") => block = Some((n + 2, Vec::new())),
            (Some((start, lines)), "```") => {
                let text = lines.join("\n");
                if serde_json::from_str::<Value>(&text).is_ok() {
                    out.push((*start, text));
                } else {
                    out.extend(lines.iter().enumerate().map(|(i, l)| (*start + i, (*l).to_owned())));
                }
                block = None;
            }
            (Some((_, lines)), l) => lines.push(l),
            (None, _) => {}
        }
    }
    out
}

/// The examples a reader copies are what the wire carries: each client
/// example parses, and each server example is exactly what the server
/// writes for that message (no field it always sends is missing, none is
/// extra).
#[test]
fn every_json_example_in_the_readme_and_the_protocol_is_real() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["README.md", "docs/protocol.md"] {
        let doc = std::fs::read_to_string(root.join(file)).expect(file);
        let examples = json_examples(&doc);
        assert!(examples.len() > 5, "{file}: examples found");
        for (line, text) in examples {
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}:{line}: not JSON: {e}"));
            if value.get("type").is_none() {
                continue; // a payload shown on its own (a TURN reply, a data-channel message)
            }
            if parse_client(&text).is_ok() {
                continue;
            }
            let msg = ServerMessage::from_json(&text)
                .unwrap_or_else(|| panic!("{file}:{line}: neither a client nor a server message: {text}"));
            let written: Value = serde_json::from_str(&msg.to_json()).expect("JSON");
            assert_eq!(written, value, "{file}:{line}: the server writes this {} differently", msg.kind().as_str());
        }
    }
}
