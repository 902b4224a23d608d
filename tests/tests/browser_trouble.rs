//! What a person sees in the browser client when things go wrong: a denied
//! camera and microphone, a full room, and a signaling connection that drops
//! and comes back.

use switchboard_e2e::{Browser, Driver, base_url, serial, server_with, settings};

async fn frames_from(browser: &Browser, remote: &str) -> f64 {
    let snapshot = browser.snapshot().await;
    snapshot["peers"][remote]["stats"]["video"]["framesDecoded"].as_f64().unwrap_or(0.0)
}

#[tokio::test]
async fn denied_media_and_a_full_room_get_readable_messages() {
    let _serial = serial().await;
    let mut one_per_room = settings();
    one_per_room.limits.max_peers_per_room = 1;
    let server = server_with(one_per_room).await;
    let base = base_url(&server);
    let driver = Driver::start().await;

    // Camera and microphone denied: a readable notice, and the call still
    // works without them (joined, buttons say why they do nothing).
    let dee = driver.browser_denying_media("Dee").await;
    dee.join(&base, "solo", "Dee").await;
    dee.wait_until(
        "the denied notice",
        "!document.querySelector('#media-error').hidden && \
         document.querySelector('#media-error').textContent.includes('camera and microphone was denied')",
    )
    .await;
    let buttons = dee
        .eval(
            "return ['#mic', '#camera'].map((s) => [document.querySelector(s).disabled, \
             document.querySelector(s).textContent])",
            vec![],
        )
        .await;
    assert_eq!(buttons, serde_json::json!([[true, "No microphone"], [true, "No camera"]]));
    assert_eq!(dee.texts("#count").await, ["1"]);

    // The room is full: back to the lobby with a message that says so, and
    // another room still works.
    let eve = driver.browser("Eve").await;
    eve.open(&base, "solo").await;
    eve.type_into("#name", "Eve").await;
    eve.click("#join").await;
    eve.wait_until(
        "the room-full message in the lobby",
        "!document.querySelector('#lobby').hidden && document.querySelector('#lobby-error').textContent.includes('room is full')",
    )
    .await;
    eve.type_into("#room", "elsewhere").await;
    eve.click("#join").await;
    eve.wait_until("joined another room", "window.switchboard.joined && window.switchboard.room === 'elsewhere'").await;
    // The refused session left nothing behind: one chat line per message.
    eve.type_into("#chat-input", "made it").await;
    eve.click("#chat-form button").await;
    eve.wait_until("the message, acknowledged", "document.querySelectorAll('#messages li[data-seq]').length === 1")
        .await;
    assert_eq!(eve.texts("#messages li").await.len(), 1, "{:?}", eve.texts("#messages li").await);
    dee.close().await;
    eve.close().await;
}

#[tokio::test]
async fn a_dropped_signaling_connection_shows_a_banner_and_the_call_comes_back() {
    let _serial = serial().await;
    let first = server_with(settings()).await;
    let addr = first.local_addr();
    let base = base_url(&first);
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    let bob = driver.browser("Bob").await;
    ada.join(&base, "drop", "Ada").await;
    bob.join(&base, "drop", "Bob").await;
    let bob_id = bob.peer_id().await;
    ada.wait_for_stats(&bob_id, "video from Bob", |p| p["stats"]["video"]["framesDecoded"].as_f64() > Some(0.0)).await;

    // The server goes away: both pages say so, and the call already
    // connected keeps going peer to peer.
    first.shutdown().await.expect("shutdown");
    for browser in [&ada, &bob] {
        browser
            .wait_until(
                "the connection banner",
                "!document.querySelector('#banner').hidden && document.querySelector('#banner').dataset.kind === 'down'",
            )
            .await;
    }
    let during = frames_from(&ada, &bob_id).await;
    ada.wait_until(
        "Bob's video still decoding while signaling is down",
        &format!(
            "window.switchboard.snapshot().then((s) => s.peers['{bob_id}']?.stats.video.framesDecoded > {during})"
        ),
    )
    .await;

    // It comes back on the same address: both rejoin on their own, the
    // banner says so and goes, and the call is re-established.
    let second = server_with(switchboard_server::config::Settings { bind: addr, ..settings() }).await;
    for browser in [&ada, &bob] {
        browser.wait_until("the reconnected banner", "document.querySelector('#banner').dataset.kind === 'up'").await;
    }
    let new_bob = bob.peer_id().await;
    assert_ne!(new_bob, bob_id, "a rejoin is a new participant (session resume comes later)");
    ada.wait_for_stats(&new_bob, "video from Bob again", |p| p["stats"]["video"]["framesDecoded"].as_f64() > Some(0.0))
        .await;
    ada.wait_until("the banner goes", "document.querySelector('#banner').hidden").await;
    assert_eq!(ada.texts("#count").await, ["2"]);
    ada.close().await;
    bob.close().await;
    second.shutdown().await.expect("shutdown");
}
