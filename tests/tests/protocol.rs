//! The browser client's protocol module (web/js/protocol.js), run in real
//! Chromium, against the Rust types and the same golden fixtures: the two
//! cannot drift apart.

use serde_json::{Value, json};
use switchboard_e2e::{Driver, base_url, serial, server};
use switchboard_protocol::{ClientKind, ErrorCode, LeaveReason, ServerKind, ServerMessage, parse_client};

const IMPORT: &str = "return import('/js/protocol.js').then((p) => ";

fn fixtures(side: &str) -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../signaling/protocol/fixtures").join(side);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| {
            let path = e.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("fixture");
            (path.file_name().expect("name").to_string_lossy().into_owned(), serde_json::from_str(&text).expect("json"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn sorted(values: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().map(Into::into).collect();
    v.sort();
    v
}

/// Every variant of `value` with one field (at any depth; first array item)
/// removed, set to null, or given a value of another JSON type.
fn variants(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                let mut removed = map.clone();
                removed.remove(key);
                out.push((format!("{here} removed"), Value::Object(removed)));
                for replacement in wrong_types(child) {
                    let mut changed = map.clone();
                    changed.insert(key.clone(), replacement.clone());
                    out.push((format!("{here} = {replacement}"), Value::Object(changed)));
                }
                let mut nested = Vec::new();
                variants(child, &here, &mut nested);
                for (what, v) in nested {
                    let mut changed = map.clone();
                    changed.insert(key.clone(), v);
                    out.push((what, Value::Object(changed)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let mut nested = Vec::new();
            variants(&items[0], &format!("{path}[0]"), &mut nested);
            for replacement in wrong_types(&items[0]) {
                nested.push((format!("{path}[0] = {replacement}"), replacement));
            }
            for (what, v) in nested {
                let mut changed = items.clone();
                changed[0] = v;
                out.push((what, Value::Array(changed)));
            }
        }
        _ => {}
    }
}

fn wrong_types(value: &Value) -> Vec<Value> {
    let all = [json!(null), json!(true), json!(7), json!(-1), json!(1.5), json!("x"), json!([]), json!({})];
    all.into_iter()
        .filter(|v| {
            std::mem::discriminant(v) != std::mem::discriminant(value)
                || (value.is_number() && v.is_number() && v != value)
        })
        // serde also reads a struct from an array of its fields in order, so
        // Rust takes `[]` for a struct whose fields all have defaults
        // (`media`). No sender writes that form; the browser need not read it.
        .filter(|v| !(value.is_object() && v.is_array()))
        .collect()
}

#[tokio::test]
async fn the_browser_protocol_module_agrees_with_the_rust_types() {
    let _serial = serial().await;
    let server = server().await;
    let driver = Driver::start().await;
    let browser = driver.browser("protocol").await;
    browser.client.goto(&base_url(&server)).await.expect("page");

    // The same message types, error codes and leave reasons.
    let names = browser
        .eval(
            &format!(
                "{IMPORT}({{ client: p.CLIENT_TYPES, server: p.SERVER_TYPES, errors: Object.keys(p.ERROR_TEXT), \
                 leave: Object.keys(p.LEAVE_REASONS), builders: Object.keys(p.client), shapes: \
                 Object.keys(p.SERVER_SHAPES), events: p.EVENT_TYPES }}))"
            ),
            vec![],
        )
        .await;
    let list = |key: &str| sorted(names[key].as_array().expect(key).iter().map(|v| v.as_str().expect("name")));
    assert_eq!(list("client"), sorted(ClientKind::NAMES));
    assert_eq!(list("builders"), sorted(ClientKind::NAMES));
    assert_eq!(list("server"), sorted(ServerKind::NAMES));
    assert_eq!(list("shapes"), sorted(ServerKind::NAMES));
    assert_eq!(list("errors"), sorted(ErrorCode::ALL.map(ErrorCode::as_str)));
    assert_eq!(list("leave"), sorted(LeaveReason::ALL.map(LeaveReason::as_str)));
    let events = ServerKind::ALL.into_iter().filter(|k| k.is_event()).map(ServerKind::as_str);
    assert_eq!(list("events"), sorted(events));

    // Every client fixture is exactly what the browser's builder makes from
    // its fields, and what it makes parses in Rust.
    let client_fixtures = fixtures("client");
    assert_eq!(client_fixtures.len(), ClientKind::NAMES.len(), "one client fixture per type");
    let inputs: Vec<Value> = client_fixtures.iter().map(|(_, v)| v.clone()).collect();
    let built = browser
        .eval(&format!("{IMPORT}arguments[0].map((m) => p.client[m.type](m)))"), vec![Value::Array(inputs)])
        .await;
    for ((file, fixture), made) in client_fixtures.iter().zip(built.as_array().expect("built")) {
        assert_eq!(made, fixture, "web/js/protocol.js builds {file} differently");
        parse_client(&made.to_string()).unwrap_or_else(|e| panic!("Rust refuses the browser's {file}: {e:?}"));
    }

    // Every server fixture, and every variant with one field removed, null
    // or of the wrong type: the browser accepts exactly what Rust accepts.
    let mut cases: Vec<(String, Value)> = Vec::new();
    for (file, fixture) in fixtures("server") {
        cases.push((format!("{file} as is"), fixture.clone()));
        let mut broken = Vec::new();
        variants(&fixture, "", &mut broken);
        cases.extend(broken.into_iter().map(|(what, v)| (format!("{file}: {what}"), v)));
    }
    let rust: Vec<bool> = cases.iter().map(|(_, v)| ServerMessage::from_json(&v.to_string()).is_some()).collect();
    let values: Vec<Value> = cases.iter().map(|(_, v)| v.clone()).collect();
    let browser_verdicts = browser
        .eval(&format!("{IMPORT}arguments[0].map((m) => p.validateServer(m) === null))"), vec![Value::Array(values)])
        .await;
    let browser_verdicts: Vec<bool> = serde_json::from_value(browser_verdicts).expect("verdicts");
    let disagreements: Vec<String> = cases
        .iter()
        .zip(rust.iter().zip(&browser_verdicts))
        .filter(|(_, (r, b))| r != b)
        .map(|((what, _), (r, _))| format!("{what}: Rust {}", if *r { "accepts" } else { "refuses" }))
        .collect();
    assert!(disagreements.is_empty(), "browser and Rust disagree on {} cases:\n{}", disagreements.len(), {
        disagreements.join("\n")
    });
    let accepted = rust.iter().filter(|ok| **ok).count();
    assert!(accepted > ServerKind::NAMES.len() && accepted < cases.len(), "the variants test both outcomes");
    println!("{} server message variants, {accepted} accepted by both", cases.len());

    // The browser's session rules replay the scenarios the Rust client
    // replays (client/tests/scenarios.rs).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/fixtures/session.json");
    let scenarios: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let failures = browser.eval(REPLAY_SESSION_SCENARIOS, vec![scenarios]).await;
    assert_eq!(failures, json!([]), "web/js/session.js breaks these session scenarios");

    // And its negotiation rules the scenarios the Rust negotiator replays
    // (rtc/src/negotiator/rules.rs).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rtc/fixtures/negotiation.json");
    let scenarios: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let failures = browser.eval(REPLAY_NEGOTIATION_SCENARIOS, vec![scenarios]).await;
    assert_eq!(failures, json!([]), "web/js/negotiation.js breaks these negotiation scenarios");

    browser.close().await;
}

/// Replays client/fixtures/session.json against web/js/session.js; returns
/// the steps whose outcome differs from the expectation.
const REPLAY_SESSION_SCENARIOS: &str = r#"
const fixture = arguments[0];
const canon = (v) => JSON.stringify(v, (k, x) => (x && typeof x === "object" && !Array.isArray(x)
  ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x));
return import("/js/session.js").then((s) => {
  const failures = [];
  for (const scenario of fixture.scenarios) {
    const session = new s.Session(scenario.request);
    scenario.steps.forEach((step, i) => {
      let got;
      switch (step.op) {
        case "join_message": got = session.joinMessage(step.resume); break;
        case "welcome": session.welcomed({ ...fixture.welcome_template, ...step.set }); return;
        case "receive": session.received(step.message); return;
        case "receive_many": for (let n = 0; n < step.count; n++) session.received(step.message); return;
        case "send": session.sending(step.message); return;
        case "send_many":
          for (let n = 0; n < step.count; n++) session.sending({ type: "chat", client_id: `${step.prefix}${n}`, text: "x" });
          return;
        case "take_resend": { const r = session.takeResend(); got = r === null ? null : r.map((m) => m.client_id); break; }
        case "resend_count": {
          const r = session.takeResend() ?? [];
          got = r.length;
          if (r[0]?.client_id !== step.first) failures.push(`${scenario.name}, step ${i}: first ${r[0]?.client_id}`);
          break;
        }
        case "give_up_replay": session.giveUpReplay(); return;
        case "ack_due": got = session.ackDue; break;
        case "ping": got = session.ping(); break;
        case "refusal": got = s.refusal(step.code, step.resumed); break;
        case "wait":
          if (s.waitMs(step.attempt, step.floor_ms, step.unit) !== step.expect_ms) {
            failures.push(`${scenario.name}, step ${i}: wait ${s.waitMs(step.attempt, step.floor_ms, step.unit)}`);
          }
          return;
        default: failures.push(`unknown op ${step.op}`); return;
      }
      if (canon(got) !== canon(step.expect)) {
        failures.push(`${scenario.name}, step ${i} (${step.op}): got ${canon(got)}, expected ${canon(step.expect)}`);
      }
    });
  }
  return failures;
});
"#;

/// Replays rtc/fixtures/negotiation.json against web/js/negotiation.js.
const REPLAY_NEGOTIATION_SCENARIOS: &str = r#"
const fixture = arguments[0];
return import("/js/negotiation.js").then((n) => {
  const failures = [];
  for (const c of fixture.makes_offers) {
    const got = n.makesOffers(c.sfu_room, c.i_am_sfu, c.i_am_newcomer);
    if (got !== c.expect) failures.push(`makes_offers ${JSON.stringify(c)}: ${got}`);
  }
  for (const c of fixture.collisions) {
    const got = n.collisionRule(n.polite(c.me, c.remote), c.can_roll_back);
    if (got !== c.expect) failures.push(`collision ${JSON.stringify(c)}: ${got}`);
  }
  const dueName = (due) => (due === null ? null : due.restartIce ? `restart_ice ${due.restartIce}` : "offer_again");
  for (const scenario of fixture.clocks) {
    const clocks = new n.Clocks(scenario.offerer);
    scenario.steps.forEach((step, i) => {
      const at = `${scenario.name}, step ${i}`;
      if (step.op === "ice") {
        const back = clocks.onIce(n.iceKind(step.state), step.at);
        if (back !== step.back) failures.push(`${at}: back ${back}`);
      } else if (step.op === "offer_sent") clocks.offerSent(step.at);
      else if (step.op === "answered") clocks.answered();
      else if (step.op === "fire") {
        const got = dueName(clocks.fire(step.at));
        if (got !== step.expect) failures.push(`${at}: fired ${got}`);
      } else failures.push(`${at}: unknown op ${step.op}`);
      if (clocks.next() !== step.next) failures.push(`${at}: next ${clocks.next()}`);
    });
  }
  return failures;
});
"#;
