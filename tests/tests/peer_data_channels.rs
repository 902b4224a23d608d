//! Two headless peers through the real signaling server: both data channels
//! open and carry text both ways; a leaving peer is announced and its link
//! closed. Runs only in a loopback-only network namespace.

use switchboard_e2e::{quiet_peer, server, wait_for_event};
use switchboard_peer::{Channel, PeerEvent};
use switchboard_protocol::LeaveReason;

async fn open_both(peer: &mut switchboard_peer::Peer) {
    let mut open = Vec::new();
    while open.len() < 2 {
        let event =
            wait_for_event(peer, "both data channels open", |e| matches!(e, PeerEvent::ChannelOpen { .. })).await;
        if let PeerEvent::ChannelOpen { channel, .. } = event
            && !open.contains(&channel)
        {
            open.push(channel);
        }
    }
}

#[tokio::test]
async fn two_peers_exchange_data_both_ways_on_both_channels() {
    let srv = server().await;
    let mut a = quiet_peer(&srv, "dc", "alice").await;
    let mut b = quiet_peer(&srv, "dc", "bob").await;
    open_both(&mut a).await;
    open_both(&mut b).await;

    assert_eq!(a.send(Channel::Chat, "reliable from alice").await.expect("send"), 1);
    let got = wait_for_event(&mut b, "alice's chat-channel text", |e| matches!(e, PeerEvent::Data { .. })).await;
    assert!(
        matches!(&got, PeerEvent::Data { remote, channel: Channel::Chat, text } if remote == a.id() && text == "reliable from alice"),
        "{got:?}"
    );
    b.send(Channel::Chat, "reliable from bob").await.expect("send");
    let got = wait_for_event(&mut a, "bob's chat-channel text", |e| matches!(e, PeerEvent::Data { .. })).await;
    assert!(
        matches!(&got, PeerEvent::Data { channel: Channel::Chat, text, .. } if text == "reliable from bob"),
        "{got:?}"
    );

    // The state channel is unreliable by design; on loopback nothing is lost.
    a.send(Channel::State, "state from alice").await.expect("send");
    let got =
        wait_for_event(&mut b, "alice's state text", |e| matches!(e, PeerEvent::Data { channel: Channel::State, .. }))
            .await;
    assert!(matches!(&got, PeerEvent::Data { text, .. } if text == "state from alice"), "{got:?}");
    b.send(Channel::State, "state from bob").await.expect("send");
    let got =
        wait_for_event(&mut a, "bob's state text", |e| matches!(e, PeerEvent::Data { channel: Channel::State, .. }))
            .await;
    assert!(matches!(&got, PeerEvent::Data { text, .. } if text == "state from bob"), "{got:?}");

    let b_id = b.id().clone();
    b.leave().await;
    let left = wait_for_event(&mut a, "bob's departure", |e| matches!(e, PeerEvent::PeerLeft { .. })).await;
    assert!(matches!(left, PeerEvent::PeerLeft { remote, reason: LeaveReason::Left } if remote == b_id));
    a.leave().await;
}

#[tokio::test]
async fn chat_on_the_signaling_socket_reaches_everyone() {
    let srv = server().await;
    let mut a = quiet_peer(&srv, "chat", "alice").await;
    let mut b = quiet_peer(&srv, "chat", "bob").await;
    a.chat("hello room").await.expect("chat");
    for p in [&mut a, &mut b] {
        let got = wait_for_event(p, "the chat message", |e| matches!(e, PeerEvent::Chat(_))).await;
        assert!(matches!(&got, PeerEvent::Chat(c) if c.text == "hello room" && c.seq == 1), "{got:?}");
    }
}

#[tokio::test]
async fn bulk_sends_from_either_side_get_past_the_high_water_mark() {
    // Bulk data both ways, on a channel the sender created (offerer) and on
    // one the remote announced (answerer). Debug builds rarely queue past the
    // 1 MiB high-water mark, so the drain wait itself is exercised by the
    // release-build peer benchmark (scripts/bench-peer), which hung on the
    // answerer's side until the low-water callback was armed after opening.
    const TOTAL: usize = 96 * 48 * 1024;
    let srv = server().await;
    let mut a = quiet_peer(&srv, "bulk", "answerer").await;
    let mut b = quiet_peer(&srv, "bulk", "offerer").await;
    open_both(&mut a).await;
    open_both(&mut b).await;
    let from_a = a.senders(Channel::Chat).await.expect("senders").into_iter().next().expect("a link").1;
    let from_b = b.senders(Channel::Chat).await.expect("senders").into_iter().next().expect("a link").1;
    bulk(&from_a, &mut b, TOTAL).await;
    bulk(&from_b, &mut a, TOTAL).await;
}

async fn bulk(sender: &switchboard_peer::ChannelSender, to: &mut switchboard_peer::Peer, total: usize) {
    let chunk = bytes::Bytes::from(vec![b'x'; 48 * 1024]);
    let send = async {
        for _ in 0..total / chunk.len() {
            sender.send(chunk.clone()).await.expect("send");
        }
    };
    let receive = async {
        let mut got = 0;
        while got < total {
            if let PeerEvent::Data { text, .. } =
                wait_for_event(to, "bulk data", |e| matches!(e, PeerEvent::Data { .. })).await
            {
                got += text.len();
            }
        }
    };
    tokio::join!(send, receive);
}

#[tokio::test]
async fn a_program_that_stops_reading_events_loses_only_droppable_ones_and_its_link_lives_on() {
    let srv = server().await;
    let mut deaf = quiet_peer(&srv, "deaf", "deaf").await;
    let mut b = quiet_peer(&srv, "deaf", "talker").await;
    open_both(&mut deaf).await;
    open_both(&mut b).await;
    // `deaf` stops reading. More unreliable messages than its event queue
    // holds arrive, then reliable ones.
    let flood = switchboard_peer::EVENT_QUEUE + 1000;
    for i in 0..flood {
        b.send(Channel::State, format!("state {i}")).await.expect("send");
        if i % 500 == 0 {
            // Let SCTP carry them: this is about the receiver, not the
            // sender's buffer.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // Wait until the overflow has reached the deaf peer and been dropped.
    let deadline = tokio::time::Instant::now() + switchboard_e2e::WAIT;
    while deaf.dropped_events() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing was dropped: the flood never filled the queue");
        tokio::time::sleep(switchboard_e2e::POLL).await;
    }
    for i in 0..3 {
        b.send(Channel::Chat, format!("reliable {i}")).await.expect("send");
    }
    // The link is alive for the other direction meanwhile.
    deaf.send(Channel::Chat, "still here").await.expect("send");
    wait_for_event(
        &mut b,
        "the deaf peer's message",
        |e| matches!(e, PeerEvent::Data { text, .. } if text == "still here"),
    )
    .await;
    assert!(deaf.dropped_events() > 0, "the overflow was dropped, not queued");
    // Reading again: every reliable message is there, in order.
    for i in 0..3 {
        let want = format!("reliable {i}");
        wait_for_event(
            &mut deaf,
            &want,
            |e| matches!(e, PeerEvent::Data { channel: Channel::Chat, text, .. } if *text == want),
        )
        .await;
    }
}
