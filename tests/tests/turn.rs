//! STUN and TURN with real parts: the embedded STUN server against coturn's
//! own client, relay-only calls through a real coturn (Rust to Rust and
//! browser to Rust), credentials refused for the right reasons, and
//! `turn-check`'s diagnoses.

use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_core::{TurnConfig, password};
use switchboard_e2e::{
    Coturn, Driver, base_url, rust_peer_with, serial, server_with, settings, wait_for_event, wait_for_rust_media,
};
use switchboard_peer::turn_check::{Diagnosis, RefusalCause, check_url, fetch_credentials, turn_allocate};
use switchboard_peer::{Channel, MediaSource, Peer, PeerEvent, RtcOptions};
use switchboard_server::config::StunSettings;

const SECRET: &str = "e2e-turn-secret-0123456789";
const PREVIOUS_SECRET: &str = "e2e-previous-secret-0123456789";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn turn_for(coturn: &Coturn) -> TurnConfig {
    TurnConfig::new(vec![SECRET.into()], vec![coturn.url()], 600).expect("valid")
}

const RELAY_ONLY: RtcOptions = RtcOptions { loopback_only: true, relay_only: true };

/// Waits until a Rust peer's link to `remote` has selected a pair.
async fn selected_pair(peer: &Peer, remote: &str) -> (String, String) {
    let deadline = tokio::time::Instant::now() + switchboard_e2e::WAIT;
    loop {
        let reports = peer.report().await.expect("report");
        if let Some(pair) = reports.iter().find(|r| r.remote.as_str() == remote).and_then(|r| r.selected_pair.clone()) {
            return pair;
        }
        assert!(tokio::time::Instant::now() < deadline, "no selected pair to {remote}: {reports:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_embedded_stun_server_answers_coturns_client_and_gives_peers_a_reflexive_candidate() {
    let _serial = serial().await;
    let server = server_with(switchboard_server::config::Settings {
        stun: Some(StunSettings { port: 0, host: None }),
        ..settings()
    })
    .await;
    let port = server.stun_addr().expect("STUN runs").port();
    // Async: the server answers on this test's runtime.
    let out = tokio::process::Command::new("timeout")
        .args(["5", "turnutils_stunclient", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .await
        .expect("turnutils_stunclient runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "turnutils_stunclient said:\n{text}");

    let options = RtcOptions { loopback_only: true, relay_only: false };
    let ada = rust_peer_with(&server, "stun", "Ada", MediaSource::None, options.clone()).await;
    let mut bob = rust_peer_with(&server, "stun", "Bob", MediaSource::None, options).await;
    wait_for_event(&mut bob, "the channel to Ada", |e| matches!(e, PeerEvent::ChannelOpen { .. })).await;
    let reports = bob.report().await.expect("report");
    let gathered = &reports[0].gathered;
    assert!(gathered.iter().any(|t| t == "srflx"), "no server-reflexive candidate: {gathered:?}");
    ada.leave().await;
    bob.leave().await;
}

#[tokio::test]
async fn two_rust_peers_call_through_coturn_with_relay_only() {
    let _serial = serial().await;
    let coturn = Coturn::start(&[SECRET]).await;
    let server =
        server_with(switchboard_server::config::Settings { turn: Some(turn_for(&coturn)), ..settings() }).await;
    let mut ada = rust_peer_with(&server, "relay", "Ada", MediaSource::Default, RELAY_ONLY).await;
    let mut bob = rust_peer_with(&server, "relay", "Bob", MediaSource::Default, RELAY_ONLY).await;
    let (ada_id, bob_id) = (ada.id().to_string(), bob.id().to_string());

    wait_for_rust_media(&mut ada, "Bob's media through the relay", |t| {
        t.iter().all(|t| t.packets > 20) && t.len() == 2
    })
    .await;
    wait_for_rust_media(&mut bob, "Ada's media through the relay", |t| {
        t.iter().all(|t| t.packets > 20) && t.len() == 2
    })
    .await;
    assert_eq!(selected_pair(&ada, &bob_id).await, ("relay".into(), "relay".into()));
    assert_eq!(selected_pair(&bob, &ada_id).await, ("relay".into(), "relay".into()));
    for report in ada.report().await.expect("report") {
        assert!(report.gathered.iter().all(|t| t == "relay"), "relay-only gathered {:?}", report.gathered);
    }

    // Data crosses the relay too.
    assert_eq!(ada.send(Channel::Chat, "through the relay").await.expect("send"), 1);
    wait_for_event(
        &mut bob,
        "Ada's line",
        |e| matches!(e, PeerEvent::Data { text, .. } if text == "through the relay"),
    )
    .await;
    ada.leave().await;
    bob.leave().await;
}

#[tokio::test]
async fn a_browser_with_relay_only_calls_a_rust_peer_through_coturn() {
    let _serial = serial().await;
    let coturn = Coturn::start(&[SECRET]).await;
    let server =
        server_with(switchboard_server::config::Settings { turn: Some(turn_for(&coturn)), ..settings() }).await;
    let base = base_url(&server);
    let mut rusty = rust_peer_with(
        &server,
        "relay",
        "Rusty",
        MediaSource::Default,
        RtcOptions { loopback_only: true, relay_only: false },
    )
    .await;
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    // `?relay=1`: the page gathers relay candidates only.
    ada.client.goto(&format!("{base}/?room=relay&relay=1")).await.expect("page");
    ada.type_into("#name", "Ada").await;
    ada.click("#join").await;
    ada.wait_until("joined", "window.switchboard?.joined === true").await;
    let rusty_id = rusty.id().to_string();
    let seen = ada
        .wait_for_stats(&rusty_id, "video decoded through the relay", |p| {
            p["stats"]["video"]["framesDecoded"].as_f64() > Some(10.0) && p["stats"]["pair"]["local"] == "relay"
        })
        .await;
    assert_eq!(seen["stats"]["pair"]["local"], Value::from("relay"), "{seen:#}");
    let ada_id = ada.peer_id().await;
    wait_for_rust_media(&mut rusty, "the browser's media", |t| {
        t.iter().filter(|t| t.remote.as_str() == ada_id && t.packets > 20).count() == 2
    })
    .await;
    // The Rust peer may learn the browser's relay address from a connectivity
    // check before its candidate arrives (then it is "prflx"): either way
    // it is not one of the browser's own addresses.
    let remote_type = selected_pair(&rusty, &ada_id).await.1;
    assert!(remote_type == "relay" || remote_type == "prflx", "{remote_type}");
    ada.close().await;
    rusty.leave().await;
}

#[tokio::test]
async fn credentials_are_refused_for_the_right_reasons_and_turn_check_says_which() {
    let _serial = serial().await;
    // coturn mid-rotation: it accepts the current and the previous secret.
    let coturn = Coturn::start(&[SECRET, PREVIOUS_SECRET]).await;
    let url = coturn.url();
    let make = |secret: &str, expiry: u64| {
        let username = format!("{expiry}:tester");
        let password = password(secret, &username);
        (username, password)
    };

    let (u, p) = make(SECRET, now_s() + 600);
    let ok = turn_allocate(&url, coturn.addr, &u, &p).await.expect("check");
    assert!(matches!(ok, Diagnosis::Allocated { .. }), "{ok:?}");
    let (u, p) = make(PREVIOUS_SECRET, now_s() + 600);
    let rotated = turn_allocate(&url, coturn.addr, &u, &p).await.expect("check");
    assert!(matches!(rotated, Diagnosis::Allocated { .. }), "the previous secret works during rotation: {rotated:?}");

    let (u, p) = make(SECRET, now_s() - 60);
    let expired = turn_allocate(&url, coturn.addr, &u, &p).await.expect("check");
    assert!(
        matches!(expired, Diagnosis::CredentialsRefused { cause: RefusalCause::Expired, .. }),
        "expired credentials: {expired:?}"
    );
    let (u, p) = make("a-forged-secret-0123456789", now_s() + 600);
    let forged = turn_allocate(&url, coturn.addr, &u, &p).await.expect("check");
    assert!(
        matches!(forged, Diagnosis::CredentialsRefused { cause: RefusalCause::WrongPassword, .. }),
        "forged credentials: {forged:?}"
    );
    assert!(forged.describe().contains("static-auth-secret"), "{}", forged.describe());

    // Nothing listening: unreachable, said plainly.
    let nowhere = format!("turn:127.0.0.1:{}?transport=udp", switchboard_e2e::free_port());
    let (u, p) = make(SECRET, now_s() + 600);
    let silent = check_url(&nowhere, Some(&u), Some(&p)).await;
    assert!(matches!(silent, Diagnosis::Unreachable { .. }), "{silent:?}");
    assert!(silent.describe().contains("UNREACHABLE"));

    // Through the signaling server (the HTTP endpoint, as the CLI uses it):
    // its STUN answers and the TURN credentials it issues work on coturn.
    let server = server_with(switchboard_server::config::Settings {
        turn: Some(turn_for(&coturn)),
        stun: Some(StunSettings { port: 0, host: None }),
        ..settings()
    })
    .await;
    let signaling = format!("ws://{}/v1/ws", server.local_addr());
    let servers = tokio::task::spawn_blocking(move || fetch_credentials(&signaling, None))
        .await
        .expect("join")
        .expect("credentials");
    let results = switchboard_peer::turn_check::check_all(&servers).await;
    assert!(results.iter().all(Diagnosis::ok), "{results:#?}");
    assert!(results.iter().any(|r| matches!(r, Diagnosis::StunOk { .. })));
    assert!(results.iter().any(|r| matches!(r, Diagnosis::Allocated { .. })));
    let turn_entry = servers.iter().find(|s| s.username.is_some()).expect("a TURN entry");
    let expiry: u64 = turn_entry
        .username
        .as_deref()
        .and_then(|u| u.split_once(':'))
        .and_then(|(e, _)| e.parse().ok())
        .expect("expiry");
    assert!(expiry <= now_s() + 600, "issued beyond the configured lifetime");
}
