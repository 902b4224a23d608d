//! Rolling restarts (decision 0019): three `switchboard` nodes on a real
//! Redis behind a real HAProxy running `deploy/haproxy.cfg`; each node in
//! turn gets SIGTERM (it drains: hands its rooms over, tells its clients
//! `going_away`), exits, and is started again, during a call with chat
//! flowing both ways. Nobody may notice: no chat lost or repeated, no
//! leave, no new session, media and data channels never stop for long.

use std::time::{Duration, Instant};
use switchboard_e2e::cluster_kit::{Haproxy, listed_by_all, owner_of, three_nodes};
use switchboard_e2e::{Browser, Driver, POLL, Redis, WAIT, peer_at, wait_for_rust_media};
use switchboard_peer::{Channel, MediaSource, Peer, PeerEvent, TrackStats};

fn packets(tracks: &[TrackStats]) -> (u64, u64) {
    let sum = |kind: &str| tracks.iter().filter(|t| t.kind == kind).map(|t| t.packets).sum();
    (sum("video"), sum("audio"))
}

/// What one participant saw over the whole run.
struct Seen {
    name: &'static str,
    chats: Vec<(u64, String)>,
    /// Anything that must not happen: a leave, a fresh session.
    noticed: Vec<String>,
    /// SFUs that left (each restart of an SFU room's node).
    sfu_left: Vec<String>,
    /// The call's participants' peer ids.
    participants: Vec<String>,
    resumed: usize,
    data: usize,
    /// Received media packets (video + audio), when they last grew, and
    /// the longest time they did not.
    packets: u64,
    grew_at: Instant,
    longest_gap: Duration,
    /// The longest time between two samples (a gap shorter than this
    /// cannot be seen).
    sampled_at: Instant,
    longest_sample_gap: Duration,
}

impl Seen {
    fn new(name: &'static str) -> Self {
        let now = Instant::now();
        Self {
            name,
            chats: Vec::new(),
            noticed: Vec::new(),
            sfu_left: Vec::new(),
            participants: Vec::new(),
            resumed: 0,
            data: 0,
            packets: 0,
            grew_at: now,
            longest_gap: Duration::ZERO,
            sampled_at: now,
            longest_sample_gap: Duration::ZERO,
        }
    }

    /// Reads every queued event (never waits).
    fn read(&mut self, peer: &mut Peer) {
        while let Ok(event) = peer.events.try_recv() {
            match event {
                PeerEvent::Chat(m) => self.chats.push((m.seq, m.text)),
                PeerEvent::SignalingResumed => self.resumed += 1,
                PeerEvent::Data { .. } => self.data += 1,
                // The SFU of an SFU room stays with its node (a new one
                // starts on the room's next node): that one may leave.
                PeerEvent::PeerLeft { remote, reason } if !self.participants.iter().any(|p| p == remote.as_str()) => {
                    self.sfu_left.push(format!("{remote} {reason:?}"));
                }
                e @ (PeerEvent::PeerLeft { .. } | PeerEvent::Rejoined { .. } | PeerEvent::SignalingClosed) => {
                    self.noticed.push(format!("{e:?}"));
                }
                _ => {}
            }
        }
    }

    async fn sample_media(&mut self, peer: &Peer) {
        let (video, audio) = packets(&peer.media_stats().await.expect("stats"));
        let now = Instant::now();
        self.longest_sample_gap = self.longest_sample_gap.max(now - self.sampled_at);
        self.sampled_at = now;
        if video + audio > self.packets {
            self.longest_gap = self.longest_gap.max(now - self.grew_at);
            self.packets = video + audio;
            self.grew_at = now;
        }
    }
}

/// The call: two headless peers, chatting both ways at a steady rate and
/// sending on their data channels.
struct Call {
    peers: [(Peer, Seen); 2],
    /// A browser in the call (mesh runs), and what it decoded.
    browser: Option<BrowserSeen>,
    sent: Vec<String>,
    data_sent: usize,
    next: usize,
    /// A mesh call (peers send on their data channels to each other; in an
    /// SFU room the data channel is the SFU's control channel).
    mesh: bool,
}

impl Call {
    /// One beat: each side sends a chat and a data channel message, reads
    /// what came, and samples its media; every fifth, the browser chats and
    /// is sampled too.
    async fn beat(&mut self) {
        self.next += 1;
        if let Some(browser) = &mut self.browser
            && self.next.is_multiple_of(5)
        {
            let text = format!("Cleo {}", self.next);
            browser.browser.type_into("#chat-input", &text).await;
            browser.browser.click("#chat-form button").await;
            self.sent.push(text);
            browser.sample().await;
        }
        for (peer, seen) in &mut self.peers {
            let text = format!("{} {}", seen.name, self.next);
            if peer.chat(&text).await.is_ok() {
                self.sent.push(text);
            }
            if self.mesh && peer.send(Channel::Chat, format!("data {}", self.next)).await.is_ok_and(|n| n > 0) {
                self.data_sent += 1;
            }
            seen.read(peer);
            seen.sample_media(peer).await;
        }
    }

    /// Beats for `d`.
    async fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.beat().await;
            tokio::time::sleep(BEAT).await;
        }
    }

    fn received(&self) -> u64 {
        self.peers.iter().map(|(_, s)| s.packets).min().unwrap_or(0)
    }
}

/// A browser's view of the call.
struct BrowserSeen {
    browser: Browser,
    /// Video frames decoded from everyone, when they last grew, and the
    /// longest time they did not.
    frames: f64,
    grew_at: Instant,
    longest_gap: Duration,
}

impl BrowserSeen {
    async fn sample(&mut self) {
        let snapshot = self.browser.snapshot().await;
        let frames: f64 = snapshot["peers"]
            .as_object()
            .map(|peers| peers.values().map(|p| p["stats"]["video"]["framesDecoded"].as_f64().unwrap_or(0.0)).sum())
            .unwrap_or(0.0);
        let now = Instant::now();
        if frames > self.frames {
            self.longest_gap = self.longest_gap.max(now - self.grew_at);
            self.frames = frames;
            self.grew_at = now;
        }
    }

    /// The chat lines it shows: (seq, text), in the order shown.
    async fn chats(&self) -> Vec<(u64, String)> {
        let value = self
            .browser
            .eval(
                "return [...document.querySelectorAll('#messages [data-seq]')].map((e) => [Number(e.dataset.seq), e.querySelector('.text')?.textContent ?? e.textContent])",
                vec![],
            )
            .await;
        serde_json::from_value(value).expect("seq and text pairs")
    }
}

/// Time between beats: about five chats a second from each side.
const BEAT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_rolling_restart_of_every_node_during_a_call_goes_unnoticed() {
    let gaps = rolling_restart(&[], "rolling").await;
    println!("mesh: longest media gap per restart {gaps:?}");
}

#[tokio::test]
async fn a_rolling_restart_during_an_sfu_call_moves_the_sfu_and_media_resumes() {
    let gaps = rolling_restart(&["--room-mode", "sfu", "--sfu-loopback-only"], "rolling-sfu").await;
    println!("SFU: longest media gap per restart {gaps:?}");
    for gap in gaps {
        assert!(gap < MAX_SFU_GAP, "media through the SFU resumed within {MAX_SFU_GAP:?} of each restart: {gap:?}");
    }
}

/// Longest a restart may stop media through the SFU (a new SFU is
/// started on the room's new node and every participant negotiates with
/// it). Measured about 2 s on this machine; the bound leaves room for a
/// busy one.
const MAX_SFU_GAP: Duration = Duration::from_secs(10);

/// Restarts every node in turn during a call in `room` on nodes started
/// with `extra`; checks nobody noticed; returns, per restart, the longest
/// time media stopped (at the sampling resolution, printed).
async fn rolling_restart(extra: &[&str], room: &str) -> Vec<Duration> {
    let mesh = !extra.contains(&"sfu");
    let redis = Redis::start().await;
    // Pages come through the balancer: the nodes allow its origin.
    let lb_addr = std::net::SocketAddr::from(([127, 0, 0, 1], switchboard_e2e::free_port()));
    let origin = format!("http://{lb_addr}");
    let extra: Vec<&str> = extra.iter().copied().chain(["--allowed-origin", origin.as_str()]).collect();
    let mut nodes = three_nodes(&redis, &extra).await;
    let lb = Haproxy::start_on(lb_addr, &[&nodes[0], &nodes[1], &nodes[2]]).await;
    // A browser joins the mesh call, through the balancer like the others.
    let driver = if mesh { Some(Driver::start().await) } else { None };
    let mut browser = None;
    if let Some(driver) = &driver {
        let cleo = driver.browser("Cleo").await;
        cleo.join(&format!("http://{}", lb.addr), room, "Cleo").await;
        let cleo_id = cleo.peer_id().await;
        browser = Some((
            BrowserSeen { browser: cleo, frames: 0.0, grew_at: Instant::now(), longest_gap: Duration::ZERO },
            cleo_id,
        ));
    }
    let mut ada = peer_at(&lb.url(), room, "Ada", MediaSource::Default).await;
    let mut bob = peer_at(&lb.url(), room, "Bob", MediaSource::Default).await;
    let both = |t: &[TrackStats]| {
        let (video, audio) = packets(t);
        video > 20 && audio > 20
    };
    wait_for_rust_media(&mut ada, "Bob's media", both).await;
    wait_for_rust_media(&mut bob, "Ada's media", both).await;
    let ids = [ada.id().to_string(), bob.id().to_string()];
    let cleo_id = browser.as_ref().map(|(_, id)| id.clone());
    if let Some((cleo, _)) = &browser {
        for id in &ids {
            cleo.browser
                .wait_for_stats(id, "decoded video", |p| {
                    p["stats"]["video"]["framesDecoded"].as_f64().unwrap_or(0.0) > 10.0
                })
                .await;
        }
    }
    let mut call = Call {
        peers: [(ada, Seen::new("Ada")), (bob, Seen::new("Bob"))],
        browser: browser.map(|(b, _)| b),
        sent: Vec::new(),
        data_sent: 0,
        next: 0,
        mesh,
    };
    for (_, seen) in &mut call.peers {
        seen.participants = ids.iter().cloned().chain(cleo_id.clone()).collect();
    }
    call.run_for(Duration::from_secs(1)).await;

    let mut moves = 0;
    let mut gaps = Vec::new();
    for i in 0..nodes.len() {
        let owner = owner_of(&nodes, room).await;
        let before = call.received();
        for (_, seen) in &mut call.peers {
            seen.longest_gap = Duration::ZERO;
        }
        let started = Instant::now();
        nodes[i].terminate();
        while nodes[i].exited().is_none() {
            assert!(started.elapsed() < WAIT, "{} did not exit after SIGTERM", nodes[i].id);
            call.beat().await;
            tokio::time::sleep(BEAT).await;
        }
        let exited = started.elapsed();
        let status = nodes[i].exited().expect("exited");
        assert!(status.success(), "{} exits cleanly after a drain: {status}", nodes[i].id);
        // The new version starts in its place while the call goes on.
        nodes[i].respawn();
        while !nodes[i].ready().await {
            assert!(started.elapsed() < WAIT * 2, "{} did not come back", nodes[i].id);
            call.beat().await;
            tokio::time::sleep(BEAT).await;
        }
        listed_by_all(&nodes, &nodes[i].id.clone()).await;
        call.run_for(Duration::from_secs(2)).await;
        assert!(call.received() > before + 50, "media carried on across the restart of {}", nodes[i].id);
        println!("{} drained and exited in {exited:?}", nodes[i].id);
        gaps.push(call.peers.iter().map(|(_, s)| s.longest_gap).max().unwrap_or_default());
        if owner == Some(i) {
            let now = owner_of(&nodes, room).await;
            assert!(now.is_some_and(|n| n != i), "the room moved away from {}: {now:?}", nodes[i].id);
            println!("the room moved from {} to {}", nodes[i].id, nodes[now.unwrap_or(i)].id);
            moves += 1;
        }
    }
    assert!(moves >= 1, "every node restarted, so the room's node did too");
    // Restarted nodes take new rooms at once: a new room goes to a node
    // without one (the least loaded), not to the call's.
    let call_node = owner_of(&nodes, room).await.expect("the call's room lives somewhere");
    let mut newcomer = switchboard_e2e::ws::WsClient::connect(lb.addr).await;
    let fresh = format!("{room}-fresh");
    newcomer.join(&fresh, "New").await;
    let fresh_node = owner_of(&nodes, &fresh).await.expect("the new room lives somewhere");
    assert_ne!(fresh_node, call_node, "a new room goes to a node without rooms");
    drop(newcomer);

    // Everything sent has arrived, on both sides.
    let deadline = Instant::now() + WAIT;
    while call.peers.iter().any(|(_, seen)| seen.chats.len() < call.sent.len()) && Instant::now() < deadline {
        for (peer, seen) in &mut call.peers {
            seen.read(peer);
        }
        tokio::time::sleep(POLL).await;
    }
    let mut sent = call.sent.clone();
    sent.sort();
    for (peer, seen) in &call.peers {
        let seqs: Vec<u64> = seen.chats.iter().map(|(seq, _)| *seq).collect();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "{} saw every seq once, in order", seen.name);
        let mut texts: Vec<String> = seen.chats.iter().map(|(_, t)| t.clone()).collect();
        texts.sort();
        assert_eq!(texts, sent, "{} saw every chat sent, once", seen.name);
        assert!(seen.noticed.is_empty(), "{} noticed the restarts: {:?}", seen.name, seen.noticed);
        assert_eq!(peer.id().to_string(), ids[if seen.name == "Ada" { 0 } else { 1 }], "the same peer id");
        println!(
            "{}: SFUs that left {:?}; {} chats, {} resumes, {} data messages, {} media packets, longest media gap {:?} (sampled at least every {:?})",
            seen.name,
            seen.sfu_left,
            seen.chats.len(),
            seen.resumed,
            seen.data,
            seen.packets,
            seen.longest_gap,
            seen.longest_sample_gap,
        );
    }
    if let (Some(cleo), Some(cleo_id)) = (&mut call.browser, &cleo_id) {
        let deadline = Instant::now() + WAIT;
        let mut shown = cleo.chats().await;
        while shown.len() < sent.len() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            shown = cleo.chats().await;
        }
        let seqs: Vec<u64> = shown.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=sent.len() as u64).collect::<Vec<_>>(), "the browser shows every seq once, in order");
        let mut texts: Vec<String> = shown.into_iter().map(|(_, t)| t).collect();
        texts.sort();
        assert_eq!(texts, sent, "the browser shows every chat sent");
        let snapshot = cleo.browser.snapshot().await;
        assert_eq!(snapshot["me"].as_str(), Some(cleo_id.as_str()), "the browser kept its peer id");
        for id in &ids {
            assert!(snapshot["peers"].get(id).is_some(), "the browser still has {id}: {snapshot:#}");
        }
        let lines = cleo.browser.texts("#messages").await.join("\n");
        assert!(!lines.contains(" left"), "the browser saw nobody leave: {lines}");
        println!("Cleo (browser): {} chats shown, longest video gap {:?}", sent.len(), cleo.longest_gap);
    }
    if mesh {
        // Each side's data channel messages all reached the other.
        for (_, seen) in &call.peers {
            assert_eq!(seen.data, call.data_sent / 2, "{}'s data channel carried on", seen.name);
        }
    }
    let [(ada, _), (bob, _)] = call.peers;
    ada.leave().await;
    bob.leave().await;
    if let Some(cleo) = call.browser {
        cleo.browser.close().await;
    }
    gaps
}
