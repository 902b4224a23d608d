//! Calls in real Chromium (fake camera and microphone) through the real
//! server, with the browser client the server serves: browser to browser,
//! browser to headless Rust peer, and a three-way mesh.

use fantoccini::Locator;
use serde_json::{Value, json};
use switchboard_e2e::pixels::region_stats;
use switchboard_e2e::{
    Browser, Driver, artifacts_dir, base_url, rust_peer, serial, server, wait_for_event, wait_for_rust_media,
};
use switchboard_peer::{Channel, MediaSource, PeerEvent};

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

/// Waits until `browser` decodes video from `remote` and receives its audio,
/// then until both counters grow again: media is flowing, not just started.
async fn assert_receives_media(browser: &Browser, remote: &str) -> Value {
    let first = browser
        .wait_for_stats(remote, "decoded video and audio bytes", |p| {
            num(p, &["stats", "video", "framesDecoded"]) > 0.0 && num(p, &["stats", "audio", "bytesReceived"]) > 0.0
        })
        .await;
    let (frames, audio) =
        (num(&first, &["stats", "video", "framesDecoded"]), num(&first, &["stats", "audio", "bytesReceived"]));
    browser
        .wait_for_stats(remote, "video and audio still flowing", |p| {
            num(p, &["stats", "video", "framesDecoded"]) > frames
                && num(p, &["stats", "audio", "bytesReceived"]) > audio
        })
        .await
}

/// Sends a chat message through the page's form.
async fn chat(browser: &Browser, text: &str) {
    browser.type_into("#chat-input", text).await;
    browser.client.find(Locator::Css("#chat-form button")).await.expect("send button").click().await.expect("send");
}

/// The texts of the chat lines that came from the room (not system lines).
async fn chat_texts(browser: &Browser) -> Vec<String> {
    browser.texts("#messages li[data-seq] .text").await
}

/// Saves a screenshot of `browser` and checks that the tile of `remote`
/// shows a picture, not a blank rectangle.
async fn screenshot_shows_remote(browser: &Browser, remote: &str, file: &str) {
    let tile = browser
        .client
        .find(Locator::Css(&format!(".tile[data-peer='{remote}'] video")))
        .await
        .expect("the remote tile");
    let (x, y, w, h) = tile.rectangle().await.expect("tile position");
    // The middle of the picture: clear of the caption and the stats
    // overlay, whose text alone would make a blank tile look busy.
    let rect = (x + w * 0.1, y + h * 0.3, w * 0.8, h * 0.45);
    let png = browser.client.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join(file);
    std::fs::write(&path, &png).expect("saving the screenshot");
    let scale = num(&browser.eval("return window.devicePixelRatio", vec![]).await, &[]).max(1.0);
    let stats = region_stats(&png, (rect.0 * scale, rect.1 * scale, rect.2 * scale, rect.3 * scale));
    println!("screenshot {}: remote tile {stats:?}", path.display());
    assert!(stats.spread > 8.0 && stats.levels >= 4, "the remote tile in {} looks blank: {stats:?}", path.display());
}

#[tokio::test]
async fn two_browsers_call_chat_type_and_mute() {
    let _serial = serial().await;
    let server = server().await;
    let base = base_url(&server);
    let driver = Driver::start().await;
    let ada = driver.browser("Ada").await;
    let bob = driver.browser("Bob").await;
    ada.join(&base, "duo", "Ada").await;
    bob.join(&base, "duo", "Bob").await;
    let (ada_id, bob_id) = (ada.peer_id().await, bob.peer_id().await);

    // Each decodes the other's video; audio flows both ways.
    let at_bob = assert_receives_media(&bob, &ada_id).await;
    let at_ada = assert_receives_media(&ada, &bob_id).await;
    for (stats, who) in [(&at_bob, "Bob"), (&at_ada, "Ada")] {
        assert_eq!(stats["state"], "connected", "{who}: {stats:#}");
        assert!(num(stats, &["stats", "sent", "videoBytes"]) > 0.0, "{who} sends video: {stats:#}");
        assert!(num(stats, &["stats", "sent", "audioBytes"]) > 0.0, "{who} sends audio: {stats:#}");
    }
    // The tiles say so too.
    bob.wait_until(
        "Ada's tile shows connected",
        &format!("document.querySelector(\".tile[data-peer='{ada_id}'] .conn\")?.textContent === 'connected'"),
    )
    .await;
    bob.click("#stats-toggle").await;
    bob.wait_until(
        "the stats overlay names the codecs and RTT",
        &format!("/VP8.*opus/s.test(document.querySelector(\".tile[data-peer='{ada_id}'] .stats\").textContent)"),
    )
    .await;
    screenshot_shows_remote(&bob, &ada_id, "browser-call.png").await;

    // Chat arrives in order.
    for text in ["one", "two", "three"] {
        chat(&ada, text).await;
    }
    bob.wait_until("three chat lines", "document.querySelectorAll('#messages li[data-seq]').length === 3").await;
    assert_eq!(chat_texts(&bob).await, ["one", "two", "three"]);
    ada.wait_until("the echoes acknowledge Ada's messages", "document.querySelectorAll('#messages .pending').length === 0 && document.querySelectorAll('#messages li[data-seq]').length === 3").await;

    // Typing shows while Bob types and clears when he sends.
    bob.type_into("#chat-input", "typing a reply").await;
    ada.wait_until(
        "Bob is typing",
        "!document.querySelector('#typing').hidden && document.querySelector('#typing').textContent.includes('Bob')",
    )
    .await;
    bob.client.find(Locator::Css("#chat-form button")).await.expect("send").click().await.expect("send");
    ada.wait_until("the typing line clears", "document.querySelector('#typing').hidden").await;
    ada.wait_until("Bob's reply", "document.querySelectorAll('#messages li[data-seq]').length === 4").await;

    // Read receipts and the unread count: Bob hides the chat, Ada writes,
    // Bob's badge counts it; Bob opens the chat and Ada sees it read.
    bob.click("#chat-toggle").await;
    chat(&ada, "are you there?").await;
    bob.wait_until(
        "one unread message",
        "document.querySelector('#unread').textContent === '1' && !document.querySelector('#unread').hidden",
    )
    .await;
    bob.click("#chat-toggle").await;
    bob.wait_until("the unread badge clears", "document.querySelector('#unread').hidden").await;
    ada.wait_until("Ada's last message shows it was seen", "[...document.querySelectorAll('#messages li.mine')].pop()?.querySelector('.receipt').textContent === 'Seen by Bob'").await;

    // A mute shows on the other side.
    ada.click("#camera").await;
    bob.wait_until(
        "Ada's camera shows muted",
        &format!("document.querySelector(\".tile[data-peer='{ada_id}']\").dataset.camera === 'muted'"),
    )
    .await;
    ada.click("#mic").await;
    bob.wait_until(
        "Ada's microphone shows muted",
        &format!("document.querySelector(\".tile[data-peer='{ada_id}']\").dataset.mic === 'muted'"),
    )
    .await;
    ada.click("#camera").await;
    bob.wait_until(
        "Ada's camera back on",
        &format!("document.querySelector(\".tile[data-peer='{ada_id}']\").dataset.camera === 'on'"),
    )
    .await;

    // A late joiner sees the history, in order, and the others see it arrive.
    let cyd = driver.browser("Cyd").await;
    cyd.join(&base, "duo", "Cyd").await;
    assert_eq!(chat_texts(&cyd).await, ["one", "two", "three", "typing a reply", "are you there?"]);
    let cyd_id = cyd.peer_id().await;
    ada.wait_until("Cyd in Ada's presence list", "document.querySelector('#count').textContent === '3'").await;
    assert_receives_media(&cyd, &ada_id).await;
    assert_receives_media(&ada, &cyd_id).await;

    // Leaving removes the tile on the other side.
    cyd.click("#leave").await;
    ada.wait_until("Cyd's tile goes", &format!("!document.querySelector(\".tile[data-peer='{cyd_id}']\")")).await;
    let problems = ada.eval("return window.switchboard.problems", vec![]).await;
    assert_eq!(problems, json!([]), "Ada's page reported problems");
    for b in [ada, bob, cyd] {
        b.close().await;
    }
}

/// Both of a Rust peer's channels to `remote` are open.
async fn rust_channels_open(peer: &mut switchboard_peer::Peer, remote: &str) {
    let mut open = std::collections::HashSet::new();
    wait_for_event(peer, "both data channels open", |e| {
        if let PeerEvent::ChannelOpen { remote: r, channel } = e
            && r.as_str() == remote
        {
            open.insert(*channel);
        }
        open.len() == 2
    })
    .await;
}

/// Both of a browser's channels to `remote` are open.
async fn browser_channels_open(browser: &Browser, remote: &str) {
    browser
        .wait_until(
            "both data channels open",
            &format!(
                "['chat', 'state'].every((l) => window.switchboard.links.get('{remote}')?.channels.get(l)?.readyState \
                 === 'open')"
            ),
        )
        .await;
}

/// What a Rust peer has received from `remote`, by kind.
fn rust_received(tracks: &[switchboard_peer::TrackStats], remote: &str, kind: &str) -> u64 {
    tracks.iter().filter(|t| t.remote.as_str() == remote && t.kind == kind).map(|t| t.packets).sum()
}

#[tokio::test]
async fn browser_and_headless_rust_peer_exchange_media_and_data() {
    let _serial = serial().await;
    let server = server().await;
    let base = base_url(&server);
    let driver = Driver::start().await;
    // The Rust peer is there first, so the browser offers to it.
    let mut rusty = rust_peer(&server, "pair", "Rusty", MediaSource::Default).await;
    let ada = driver.browser("Ada").await;
    ada.join(&base, "pair", "Ada").await;
    let (ada_id, rusty_id) = (ada.peer_id().await, rusty.id().to_string());

    // The browser decodes the peer's VP8 clip and receives its Opus.
    let seen = assert_receives_media(&ada, &rusty_id).await;
    assert_eq!(seen["stats"]["video"]["codec"], "video/VP8", "{seen:#}");
    assert_eq!(seen["stats"]["audio"]["codec"], "audio/opus", "{seen:#}");
    screenshot_shows_remote(&ada, &rusty_id, "browser-rust-call.png").await;

    // The peer receives the browser's video and audio RTP.
    wait_for_rust_media(&mut rusty, "the browser's video and audio", |t| {
        rust_received(t, &ada_id, "video") > 20 && rust_received(t, &ada_id, "audio") > 20
    })
    .await;

    // Data channel messages cross both ways, on both channels.
    browser_channels_open(&ada, &rusty_id).await;
    rust_channels_open(&mut rusty, &ada_id).await;
    assert_eq!(rusty.send(Channel::Chat, "hello from rust").await.expect("send"), 1);
    assert_eq!(rusty.send(Channel::State, "rust state").await.expect("send"), 1);
    ada.wait_until(
        "the Rust peer's lines",
        "document.querySelector('#messages li.direct .text')?.textContent === 'hello from rust' && \
         document.querySelector('.tile.remote .status')?.textContent === 'rust state'",
    )
    .await;
    let sent = ada.eval("return window.switchboard.sendData('chat', 'hello from chromium')", vec![]).await;
    assert_eq!(sent, json!(1));
    wait_for_event(
        &mut rusty,
        "the browser's chat line",
        |e| matches!(e, PeerEvent::Data { channel: Channel::Chat, text, .. } if text == "hello from chromium"),
    )
    .await;
    ada.eval("return window.switchboard.sendData('state', 'ada state')", vec![]).await;
    wait_for_event(
        &mut rusty,
        "the browser's state line",
        |e| matches!(e, PeerEvent::Data { channel: Channel::State, text, .. } if text == "ada state"),
    )
    .await;

    // The browser leaves; the peer sees it go.
    ada.click("#leave").await;
    wait_for_event(&mut rusty, "Ada leaving", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    ada.close().await;
    rusty.leave().await;
}

#[tokio::test]
async fn two_browsers_and_a_rust_peer_in_a_mesh() {
    let _serial = serial().await;
    let server = server().await;
    let base = base_url(&server);
    let driver = Driver::start().await;
    // Join order makes every offer direction happen: the Rust peer offers to
    // Ada, Bob offers to both.
    let ada = driver.browser("Ada").await;
    ada.join(&base, "mesh", "Ada").await;
    let mut rusty = rust_peer(&server, "mesh", "Rusty", MediaSource::Default).await;
    let bob = driver.browser("Bob").await;
    bob.join(&base, "mesh", "Bob").await;
    let (ada_id, bob_id, rusty_id) = (ada.peer_id().await, bob.peer_id().await, rusty.id().to_string());

    for (browser, others) in [(&ada, [&bob_id, &rusty_id]), (&bob, [&ada_id, &rusty_id])] {
        for remote in others {
            assert_receives_media(browser, remote).await;
        }
        browser.wait_until("three in the room", "document.querySelector('#count').textContent === '3'").await;
    }
    wait_for_rust_media(&mut rusty, "video and audio from both browsers", |t| {
        [&ada_id, &bob_id].iter().all(|b| rust_received(t, b, "video") > 20 && rust_received(t, b, "audio") > 20)
    })
    .await;
    // One data channel line from the Rust peer reaches both browsers.
    browser_channels_open(&ada, &rusty_id).await;
    browser_channels_open(&bob, &rusty_id).await;
    let mut open = std::collections::HashSet::new();
    wait_for_event(&mut rusty, "chat channels to both browsers open", |e| {
        if let PeerEvent::ChannelOpen { remote, channel: Channel::Chat } = e {
            open.insert(remote.to_string());
        }
        open.len() == 2
    })
    .await;
    assert_eq!(rusty.send(Channel::Chat, "to everyone").await.expect("send"), 2);
    for browser in [&ada, &bob] {
        browser
            .wait_until(
                "the Rust peer's line",
                "document.querySelector('#messages li.direct .text')?.textContent === 'to everyone'",
            )
            .await;
    }
    rusty.leave().await;
    for browser in [&ada, &bob] {
        browser.wait_until("the Rust peer's tile goes", "document.querySelector('#count').textContent === '2'").await;
    }
    ada.close().await;
    bob.close().await;
}
