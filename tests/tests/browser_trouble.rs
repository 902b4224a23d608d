//! What a person sees in the browser client when things go wrong: a denied
//! camera and microphone, a full room, a signaling connection that drops and
//! resumes, a server that restarts, and an ICE restart.

use fantoccini::Locator;
use switchboard_e2e::{Browser, Driver, base_url, rust_peer, serial, server_with, settings, wait_for_rust_media};
use switchboard_peer::MediaSource;

/// Sends a chat message through the page's form.
async fn chat(browser: &Browser, text: &str) {
    browser.type_into("#chat-input", text).await;
    browser.client.find(Locator::Css("#chat-form button")).await.expect("send button").click().await.expect("send");
}

/// How many chat lines from the room carry exactly `text`.
async fn lines_with(browser: &Browser, text: &str) -> usize {
    browser.texts("#messages li[data-seq] .text").await.iter().filter(|t| *t == text).count()
}

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
    assert_ne!(new_bob, bob_id, "the restarted server knows no session: a fresh join, a new participant");
    ada.wait_for_stats(&new_bob, "video from Bob again", |p| p["stats"]["video"]["framesDecoded"].as_f64() > Some(0.0))
        .await;
    ada.wait_until("the banner goes", "document.querySelector('#banner').hidden").await;
    assert_eq!(ada.texts("#count").await, ["2"]);
    ada.close().await;
    bob.close().await;
    second.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_dropped_connection_resumes_the_same_session_and_nothing_is_lost_or_doubled() {
    let _serial = serial().await;
    let server = server_with(settings()).await;
    let base = base_url(&server);
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    let bob = driver.browser("Bob").await;
    ada.join(&base, "resume", "Ada").await;
    bob.join(&base, "resume", "Bob").await;
    let (ada_id, bob_id) = (ada.peer_id().await, bob.peer_id().await);
    ada.wait_for_stats(&bob_id, "video from Bob", |p| p["stats"]["video"]["framesDecoded"].as_f64() > Some(0.0)).await;

    // Ada's connection drops and stays away 3 s. Bob sees her reconnecting,
    // not gone, and chats; Ada chats too while she is away.
    ada.eval("window.switchboard.signaling.simulateDrop(3000)", vec![]).await;
    bob.wait_until("Ada shown reconnecting", "document.querySelector('#people').textContent.includes('reconnecting')")
        .await;
    chat(&bob, "while you were away").await;
    chat(&ada, "sent while away").await;

    // She is back under the same id, with both messages exactly once.
    ada.wait_until("the reconnected banner", "document.querySelector('#banner').dataset.kind === 'up'").await;
    assert_eq!(ada.peer_id().await, ada_id, "a resume keeps the participant id");
    ada.wait_until("Bob's message", "[...document.querySelectorAll('#messages li[data-seq] .text')].some((e) => e.textContent === 'while you were away')").await;
    bob.wait_until("Ada's message", "[...document.querySelectorAll('#messages li[data-seq] .text')].some((e) => e.textContent === 'sent while away')").await;
    ada.wait_until("Ada's echo", "document.querySelectorAll('#messages .pending').length === 0").await;
    for browser in [&ada, &bob] {
        assert_eq!(lines_with(browser, "while you were away").await, 1, "{}", browser.label);
        assert_eq!(lines_with(browser, "sent while away").await, 1, "{}", browser.label);
    }
    bob.wait_until("Ada shown back", "!document.querySelector('#people').textContent.includes('reconnecting')").await;
    let bob_lines = bob.texts("#messages li").await.join("\n");
    assert!(bob_lines.contains("Ada is back."), "{bob_lines}");
    assert!(!bob_lines.contains("Ada left") && !bob_lines.contains("Ada lost"), "Bob saw Ada leave:\n{bob_lines}");
    // The call never stopped.
    let frames = frames_from(&ada, &bob_id).await;
    ada.wait_until(
        "Bob's video still decoding",
        &format!(
            "window.switchboard.snapshot().then((s) => s.peers['{bob_id}']?.stats.video.framesDecoded > {frames})"
        ),
    )
    .await;
    ada.close().await;
    bob.close().await;
}

#[tokio::test]
async fn an_ice_restart_from_the_browser_is_answered_and_the_call_goes_on() {
    let _serial = serial().await;
    let server = server_with(settings()).await;
    let base = base_url(&server);
    let mut rusty = rust_peer(&server, "restart", "Rusty", MediaSource::Default).await;
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    ada.join(&base, "restart", "Ada").await;
    let rusty_id = rusty.id().to_string();
    ada.wait_for_stats(&rusty_id, "video from Rusty", |p| p["stats"]["video"]["framesDecoded"].as_f64() > Some(0.0))
        .await;
    // The restart is the impolite side's job; here the page restarts on
    // demand, as it does by itself when ICE stays disconnected.
    let ufrag =
        "return window.switchboard.links.get(arguments[0]).pc.localDescription.sdp.match(/a=ice-ufrag:(\\S+)/)[1]";
    let before = ada.eval(ufrag, vec![rusty_id.clone().into()]).await;
    ada.eval("window.switchboard.links.get(arguments[0]).restartIce()", vec![rusty_id.clone().into()]).await;
    ada.wait_until(
        "new ICE credentials, connected",
        &format!(
            "(() => {{ const pc = window.switchboard.links.get('{rusty_id}').pc; \
             return pc.signalingState === 'stable' && pc.iceConnectionState === 'connected' \
             && !pc.localDescription.sdp.includes('a=ice-ufrag:' + {before}); }})()"
        ),
    )
    .await;
    let frames = frames_from(&ada, &rusty_id).await;
    ada.wait_until(
        "video after the restart",
        &format!("window.switchboard.snapshot().then((s) => s.peers['{rusty_id}']?.stats.video.framesDecoded > {frames} + 20)"),
    )
    .await;
    let ada_id = ada.peer_id().await;
    let before = rusty
        .media_stats()
        .await
        .expect("stats")
        .iter()
        .filter(|t| t.remote.as_str() == ada_id)
        .map(|t| t.packets)
        .sum::<u64>();
    wait_for_rust_media(&mut rusty, "the browser's media after the restart", |s| {
        s.iter().filter(|t| t.remote.as_str() == ada_id).map(|t| t.packets).sum::<u64>() > before + 50
    })
    .await;
    ada.close().await;
    rusty.leave().await;
}

#[tokio::test]
async fn a_server_that_accepts_then_closes_gets_a_growing_backoff_not_a_reconnect_loop() {
    let _serial = serial().await;
    let server = server_with(settings()).await;
    let driver = Driver::start().await;
    let page = driver.browser("backoff").await;
    page.client.goto(&base_url(&server)).await.expect("page");
    // A broken endpoint (a proxy with no backend, a server refusing at the
    // door): every WebSocket is accepted, then closed at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let broken = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let door = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                let _ = ws.close(None).await;
            }
        }
    });
    // The page's own signaling module, pointed at it: the waits it chooses
    // must grow (0.5 s, 1 s, 2 s, 4 s ceilings), since no welcome ever came.
    page.eval(
        &format!(
            "return Promise.all([import('/js/signaling.js'), import('/js/session.js')]).then(([m, t]) => {{ \
             const s = new m.Signaling(new t.Session({{ room: 'r', name: 'n' }}), 'ws://{broken}/v1/ws'); \
             window.waits = []; s.addEventListener('down', (e) => window.waits.push(e.detail.retryInMs)); \
             s.open(); return true; }})"
        ),
        vec![],
    )
    .await;
    page.wait_until("four reconnect waits", "window.waits.length >= 4").await;
    let waits = page.eval("return window.waits", vec![]).await;
    let waits: Vec<f64> = serde_json::from_value(waits).expect("numbers");
    assert!(waits[3] >= 2000.0, "the fourth wait is at least half of a 4 s ceiling: {waits:?}");
    assert!(waits.windows(2).take(3).all(|w| w[1] >= w[0]), "growing: {waits:?}");
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) <= 5, "no reconnect loop");
    door.abort();
    page.close().await;
}
