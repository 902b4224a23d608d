//! Chat resent after a resume is stored once, however many messages were
//! waiting for their echo: the peer reads the replay (which carries the
//! echoes of what the server did store) before it resends. Loopback-only
//! namespace only.

use std::sync::atomic::Ordering;
use switchboard_e2e::tcp_proxy::Proxy;
use switchboard_e2e::{require_loopback_namespace, server, wait_for_event};
use switchboard_peer::{MediaSource, Peer, PeerEvent, PeerOptions, ReconnectPolicy, RtcOptions};

#[tokio::test]
async fn a_bot_with_many_unechoed_chats_at_a_drop_stores_each_once() {
    require_loopback_namespace();
    let srv = server().await;
    let proxy = Proxy::start(srv.local_addr()).await;
    let options = |url: String, name: &str| PeerOptions {
        media: MediaSource::None,
        record: None,
        reconnect: Some(ReconnectPolicy::default()),
        url,
        room: "resend".into(),
        name: name.into(),
        token: None,
        rtc: RtcOptions { loopback_only: true, relay_only: false },
    };
    let mut observer =
        Peer::join(options(format!("ws://{}/v1/ws", srv.local_addr()), "Observer")).await.expect("joins");
    let mut bot = Peer::join(options(format!("ws://{}/v1/ws", proxy.addr), "Bot")).await.expect("joins");
    let bot_id = bot.id().clone();
    wait_for_event(&mut observer, "the bot", |e| matches!(e, PeerEvent::PeerJoined { .. })).await;

    // The network starts dying: the bot hears nothing more, while what it
    // sends still arrives. It sends far more chat than the server
    // remembers client ids for (64), and sees none of the echoes.
    proxy.swallow.store(true, Ordering::SeqCst);
    const SENT: usize = 150;
    for i in 0..SENT {
        bot.chat(format!("m{i}")).await.expect("chat");
    }
    let mut stored = 0;
    while stored < SENT {
        let e = wait_for_event(&mut observer, "the bot's chat", |e| matches!(e, PeerEvent::Chat(_))).await;
        if matches!(&e, PeerEvent::Chat(c) if c.from == bot_id) {
            stored += 1;
        }
    }
    // Then the connection breaks; the bot resumes through a working one.
    proxy.cut_all();
    wait_for_event(&mut bot, "the resume", |e| matches!(e, PeerEvent::SignalingResumed)).await;
    // Nothing it sent is stored twice: after a marker from the observer, the
    // room has exactly the bot's 150 messages.
    observer.chat("marker").await.expect("chat");
    let mut again = 0;
    loop {
        let e = wait_for_event(&mut observer, "the marker", |e| matches!(e, PeerEvent::Chat(_))).await;
        match e {
            PeerEvent::Chat(c) if c.text == "marker" => break,
            PeerEvent::Chat(c) if c.from == bot_id => again += 1,
            _ => {}
        }
    }
    assert_eq!(again, 0, "messages stored a second time after the resume");
    // The bot itself saw every echo once (in the replay).
    let mut echoes = 0;
    while echoes < SENT {
        let e = wait_for_event(&mut bot, "the bot's echoes", |e| matches!(e, PeerEvent::Chat(_))).await;
        if matches!(&e, PeerEvent::Chat(c) if c.from == bot_id) {
            echoes += 1;
        }
    }
}
