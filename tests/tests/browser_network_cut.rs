//! The browser client's recovery from a real network failure. Chromium runs
//! in a lab namespace of its own (see `lab_browser.rs`), in a call with a
//! headless Rust peer (the `switchboard-peer` CLI) in another, with room chat
//! flowing both ways. One side is cut off the network for 5 s (every frame
//! to or from it dropped at the switch: it notices nothing but silence):
//! first the browser, then the Rust peer. Afterwards
//!
//! - the cut side has resumed its signaling session (same id), and the other
//!   saw it reconnecting, never leaving;
//! - every room chat message sent meanwhile, by either side, has arrived
//!   exactly once and in the order sent, the same on both sides;
//! - ICE is connected again: where the side whose job it is (the one that
//!   made the first offer) restarted ICE, the restart completed (new credentials on both
//!   ends); where its ICE stayed down longer than its restart delay, it did
//!   restart;
//! - media flows again both ways.
//!
//! Only the side that made the first offer (the later joiner) restarts ICE:
//! each direction runs twice, once with each side as the restarter. (With
//! the first answerer restarting, a Rust peer and Chromium both ended up
//! ICE-controlled and never reconnected; see decision 0011.)
//!
//! ```text
//!  Public 10.99.0.1: signaling server  +  the side that stays
//!  Host   10.99.0.9: the side that is cut off (no NAT in between)
//! ```

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use switchboard_e2e::lab_browser::LabDriver;
use switchboard_e2e::netlab::{LabProcess, NatLab, Place};
use switchboard_e2e::{Browser, POLL, WAIT, serial, workspace_binary};

/// How long the network stays cut.
const CUT: Duration = Duration::from_secs(5);
/// Chat messages each side sends during the cut.
const DURING: usize = 3;
/// Recovery takes a second or two (a TCP retransmission, backoff, an ICE
/// restart); the rest is headroom for a loaded machine.
const RECOVERS_WITHIN: Duration = Duration::from_secs(30);
/// The page restarts ICE after it stayed disconnected this long
/// (web/js/link.js `ICE_RESTART_AFTER_MS`), plus polling slack.
const PAGE_RESTARTS_AFTER: Duration = Duration::from_millis(1500);
const ROOM: &str = "netcut";

/// Which side is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Browser,
    RustPeer,
}

/// Which side restarts ICE: the one that made the first offer, that is the
/// later joiner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restarter {
    Page,
    Rusty,
}

#[tokio::test]
async fn the_browser_cut_off_for_5_s_resumes_and_recovers_its_call_as_the_ice_restarter() {
    network_cut(Cut::Browser, Restarter::Page).await;
}

#[tokio::test]
async fn the_browser_cut_off_for_5_s_resumes_and_recovers_its_call_with_the_rust_peer_as_the_ice_restarter() {
    network_cut(Cut::Browser, Restarter::Rusty).await;
}

#[tokio::test]
async fn the_rust_peer_cut_off_for_5_s_resumes_and_the_call_recovers_with_the_browser_as_the_ice_restarter() {
    network_cut(Cut::RustPeer, Restarter::Page).await;
}

#[tokio::test]
async fn the_rust_peer_cut_off_for_5_s_resumes_and_the_call_recovers_with_itself_as_the_ice_restarter() {
    network_cut(Cut::RustPeer, Restarter::Rusty).await;
}

/// The Rust peer: the CLI in a lab place, JSON lines out, commands in.
struct Rusty {
    process: LabProcess,
}

impl Rusty {
    /// Reads every line printed so far.
    fn pump(&mut self) {
        while let Ok(line) = self.process.lines.try_recv() {
            self.process.seen.push(line);
        }
    }

    fn lines(&self) -> usize {
        self.process.seen.len()
    }

    /// Events of one kind printed at or after line `from`.
    fn events(&self, from: usize, kind: &str) -> Vec<Value> {
        self.process.seen[from.min(self.lines())..]
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .collect()
    }

    /// Events of one kind about `peer` printed at or after line `from`.
    fn events_about(&self, from: usize, kind: &str, peer: &str) -> Vec<Value> {
        self.events(from, kind).into_iter().filter(|v| v["peer"] == peer).collect()
    }

    /// The latest count of video packets received from `remote`.
    fn video_packets(&self, remote: &str) -> u64 {
        let latest = self.events(0, "stats").into_iter().rfind(|v| v["kind"] == "video" && v["peer"] == remote);
        latest.and_then(|v| v["packets"].as_u64()).unwrap_or(0)
    }

    /// Room chat received: (seq, text), in arrival order.
    fn chat(&self) -> Vec<(u64, String)> {
        self.events(0, "chat")
            .iter()
            .map(|v| (v["seq"].as_u64().unwrap_or(0), v["text"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// Everything it printed, without the periodic stats lines except the
    /// last few.
    fn log(&self) -> String {
        let seen = &self.process.seen;
        let stats_from = seen.len().saturating_sub(4);
        let shown = seen.iter().enumerate().filter(|(i, l)| *i >= stats_from || !l.contains(r#""event":"stats""#));
        shown.map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// Polls until `done` holds over everything printed.
    async fn wait(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.pump();
            if done(self) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "Rusty: timed out waiting for {what}:\n{}", self.log());
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What the page shows and its link to `remote` reports, in one call.
async fn page_state(browser: &Browser, remote: &str) -> Value {
    let script = r#"return (async () => {
        const s = window.switchboard;
        const link = s.links.get(arguments[0]);
        const stats = link ? await link.sample() : null;
        const ufrag = (d) => (d && d.sdp.match(/a=ice-ufrag:(\S+)/)?.[1]) ?? null;
        const banner = document.querySelector('#banner');
        return {
            me: s.me,
            joined: s.joined,
            banner: banner.hidden ? null : { kind: banner.dataset.kind, text: banner.textContent },
            chat: [...document.querySelectorAll('#messages li[data-seq]')]
                .map((e) => [Number(e.dataset.seq), e.querySelector('.text').textContent]),
            pending: document.querySelectorAll('#messages .pending').length,
            system: [...document.querySelectorAll('#messages li.system')].map((e) => e.textContent),
            peers: [...s.peers.keys()],
            problems: s.problems,
            link: link ? {
                ice: link.pc.iceConnectionState,
                state: link.pc.connectionState,
                signaling: link.pc.signalingState,
                restarts: link.iceRestarts,
                localUfrag: ufrag(link.pc.localDescription),
                remoteUfrag: ufrag(link.pc.remoteDescription),
                frames: stats?.video.framesDecoded ?? 0,
            } : null,
        };
    })()"#;
    browser.eval(script, vec![json!(remote)]).await
}

/// What the page showed over time: its banners, its link's states, how long
/// its ICE stayed down, and whether it ever dropped the remote.
#[derive(Debug)]
struct Watch {
    since: Instant,
    remote: String,
    banners: Vec<String>,
    timeline: Vec<String>,
    last: String,
    down_since: Option<Instant>,
    longest_down: Duration,
    ever_gone: Option<String>,
}

impl Watch {
    fn new(remote: &str) -> Self {
        Self {
            since: Instant::now(),
            remote: remote.into(),
            banners: Vec::new(),
            timeline: Vec::new(),
            last: String::new(),
            down_since: None,
            longest_down: Duration::ZERO,
            ever_gone: None,
        }
    }

    fn note(&mut self, state: &Value) {
        if let Some(text) = state["banner"]["text"].as_str()
            && self.banners.last().map(String::as_str) != Some(text)
        {
            self.banners.push(text.to_string());
        }
        let link = &state["link"];
        let now = format!(
            "ICE {} / connection {} / signaling {} / restarts {} / ufrags {} {} / banner {}",
            link["ice"],
            link["state"],
            link["signaling"],
            link["restarts"],
            link["localUfrag"],
            link["remoteUfrag"],
            state["banner"]["kind"]
        );
        if now != self.last {
            self.timeline.push(format!("{:>8.1?}  {now}", self.since.elapsed()));
            self.last = now;
        }
        if link["ice"] == "disconnected" || link["ice"] == "failed" {
            let since = *self.down_since.get_or_insert_with(Instant::now);
            self.longest_down = self.longest_down.max(since.elapsed());
        } else {
            self.down_since = None;
        }
        let present = state["peers"].as_array().is_some_and(|p| p.iter().any(|id| *id == self.remote.as_str()));
        if !present && self.ever_gone.is_none() {
            self.ever_gone = Some(format!("{state:#}"));
        }
    }
}

/// Sends a room chat message through the page's form, as a person would.
async fn page_chat(browser: &Browser, text: &str) {
    browser.type_into("#chat-input", text).await;
    browser.click("#chat-form button").await;
}

fn page_chat_lines(state: &Value) -> Vec<(u64, String)> {
    serde_json::from_value(state["chat"].clone()).expect("chat lines")
}

fn frames(state: &Value) -> f64 {
    state["link"]["frames"].as_f64().unwrap_or(0.0)
}

/// Each expected text exactly once; seqs consecutive; each sender's
/// messages in the order sent.
fn check_chat(who: &str, lines: &[(u64, String)], expected: &[String], failures: &mut Vec<String>) {
    let mut counts = BTreeMap::new();
    for (_, text) in lines {
        *counts.entry(text.as_str()).or_insert(0) += 1;
    }
    for text in expected {
        let n = counts.get(text.as_str()).copied().unwrap_or(0);
        if n != 1 {
            failures.push(format!("{who} shows {text:?} {n} times: {lines:?}"));
        }
    }
    if !lines.windows(2).all(|w| w[1].0 == w[0].0 + 1) {
        failures.push(format!("{who}'s chat is out of seq order or has a gap: {lines:?}"));
    }
    for sender in ["Ada", "Rusty"] {
        let sent: Vec<&String> = expected.iter().filter(|t| t.starts_with(sender)).collect();
        let shown: Vec<&String> = lines.iter().map(|(_, t)| t).filter(|t| t.starts_with(sender)).collect();
        if shown != sent {
            failures.push(format!("{who} shows {sender}'s messages as {shown:?}, sent as {sent:?}"));
        }
    }
}

async fn network_cut(cut: Cut, restarter: Restarter) {
    let _serial = serial().await;
    let started = Instant::now();
    let mut lab = NatLab::new();
    let (browser_place, rust_place) = match cut {
        Cut::Browser => (Place::Host, Place::Public),
        Cut::RustPeer => (Place::Public, Place::Host),
    };
    // Short pings so that the silence is noticed within the cut, by the
    // server and by both clients (the page adopts the welcome's interval).
    let bind = lab.start_signaling(&[]);

    // The later joiner makes the first offer, so it is the ICE restarter.
    let peer_bin = workspace_binary("switchboard-peer");
    let url = format!("ws://{bind}/v1/ws");
    let argv = [&peer_bin, "join", &url, "--room", ROOM, "--name", "Rusty", "--json", "--stats", "1"];
    let driver = LabDriver::start(&lab, browser_place).await;
    let origin = format!("http://{bind}");
    let ada = driver.browser("Ada", &origin).await;
    if restarter == Restarter::Rusty {
        ada.join(&origin, ROOM, "Ada").await;
    }
    let mut rusty = Rusty { process: lab.spawn(rust_place, &argv) };
    rusty.wait("its welcome", |r| !r.events(0, "joined").is_empty()).await;
    let rusty_id = rusty.events(0, "joined")[0]["you"].as_str().expect("id").to_string();
    if restarter == Restarter::Page {
        ada.join(&origin, ROOM, "Ada").await;
    }
    let ada_id = ada.peer_id().await;
    ada.wait_for_stats(&rusty_id, "video from Rusty", |p| p["stats"]["video"]["framesDecoded"].as_f64() > Some(0.0))
        .await;
    rusty.wait("video from Ada", |r| r.video_packets(&ada_id) > 50).await;
    let call_up = started.elapsed();

    // Chat works both ways before the cut.
    let mut expected = vec!["Ada before the cut".to_string(), "Rusty before the cut".to_string()];
    page_chat(&ada, &expected[0]).await;
    ada.wait_until("Ada's echo", "document.querySelectorAll('#messages li[data-seq]').length === 1").await;
    rusty.process.say(&format!("/room {}", expected[1]));
    rusty.wait("both messages", |r| r.chat().len() == 2).await;
    ada.wait_until("both messages", "document.querySelectorAll('#messages li[data-seq]').length === 2").await;

    let before = page_state(&ada, &rusty_id).await;
    assert_eq!(before["link"]["ice"], "connected", "{before:#}");
    let mark_cut = rusty.lines();
    let mut watch = Watch::new(&rusty_id);
    watch.note(&before);

    lab.cut_host(true);
    let cut_at = Instant::now();
    // Both chat meanwhile; the page is watched all along (WebDriver does not
    // go through the lab's network).
    for i in 0..DURING {
        let at = cut_at + Duration::from_millis(1200 * (i as u64 + 1));
        while Instant::now() < at {
            watch.note(&page_state(&ada, &rusty_id).await);
            tokio::time::sleep(POLL).await;
        }
        let (from_rusty, from_ada) = (format!("Rusty during the cut {i}"), format!("Ada during the cut {i}"));
        rusty.process.say(&format!("/room {from_rusty}"));
        page_chat(&ada, &from_ada).await;
        expected.extend([from_rusty, from_ada]);
    }
    while cut_at.elapsed() < CUT {
        watch.note(&page_state(&ada, &rusty_id).await);
        tokio::time::sleep(POLL).await;
    }
    lab.cut_host(false);
    let restored = Instant::now();
    let cut_for = cut_at.elapsed();
    rusty.pump();
    let at_restore = page_state(&ada, &rusty_id).await;
    watch.note(&at_restore);
    let rusty_packets_at_restore = rusty.video_packets(&ada_id);

    // Recovery: wait until everything holds at once (or the deadline).
    let restarts = |s: &Value| s["link"]["restarts"].as_u64().unwrap_or(0);
    let deadline = restored + RECOVERS_WITHIN;
    let mut firsts: BTreeMap<&str, Duration> = BTreeMap::new();
    let (state, conditions) = loop {
        rusty.pump();
        let state = page_state(&ada, &rusty_id).await;
        watch.note(&state);
        let page_lines = page_chat_lines(&state);
        let link = &state["link"];
        let resumed = match cut {
            Cut::Browser => {
                state["me"] == ada_id.as_str()
                    && state["joined"] == true
                    && rusty
                        .events_about(mark_cut, "peer_reconnecting", &ada_id)
                        .iter()
                        .any(|v| v["reconnecting"] == false)
            }
            Cut::RustPeer => !rusty.events(mark_cut, "signaling_resumed").is_empty(),
        };
        // A restart, by either side, must complete: new credentials on
        // both ends, and Rusty reports ICE back if it was the one.
        let new_ufrags =
            link["localUfrag"] != before["link"]["localUfrag"] && link["remoteUfrag"] != before["link"]["remoteUfrag"];
        let rusty_restarting = !rusty.events_about(mark_cut, "ice_restarting", &ada_id).is_empty();
        let restarting = restarts(&state) > restarts(&before)
            || rusty_restarting
            || link["localUfrag"] != before["link"]["localUfrag"];
        let restart_done = !restarting
            || (new_ufrags
                && (!rusty_restarting || !rusty.events_about(mark_cut, "ice_restarted", &ada_id).is_empty()));
        let conditions = [
            ("signaling resumed", resumed),
            (
                "page chat complete",
                expected.iter().all(|t| page_lines.iter().any(|(_, l)| l == t)) && state["pending"] == 0,
            ),
            ("Rusty chat complete", expected.iter().all(|t| rusty.chat().iter().any(|(_, l)| l == t))),
            (
                "ICE connected",
                (link["ice"] == "connected" || link["ice"] == "completed") && link["signaling"] == "stable",
            ),
            ("ICE restart completed", restart_done),
            ("video to the page", frames(&state) > frames(&at_restore) + 20.0),
            ("video to Rusty", rusty.video_packets(&ada_id) > rusty_packets_at_restore + 50),
        ];
        for (name, holds) in conditions {
            if holds {
                firsts.entry(name).or_insert_with(|| restored.elapsed());
            }
        }
        if conditions.iter().all(|(_, holds)| *holds) || Instant::now() > deadline {
            break (state, conditions);
        }
        tokio::time::sleep(POLL).await;
    };
    let recovered = restored.elapsed();

    let mut failures: Vec<String> = conditions
        .iter()
        .filter(|(_, holds)| !holds)
        .map(|(name, _)| format!("not recovered {RECOVERS_WITHIN:?} after the network came back: {name}"))
        .collect();

    // Nobody left, nobody rejoined.
    if state["me"] != ada_id.as_str() {
        failures.push(format!("the page is now {} (was {ada_id}): it joined afresh", state["me"]));
    }
    if !rusty.events_about(0, "peer_left", &ada_id).is_empty() {
        failures.push("Rusty saw Ada leave".into());
    }
    if !rusty.events(0, "rejoined").is_empty() {
        failures.push("Rusty joined afresh instead of resuming".into());
    }
    if let Some(state) = &watch.ever_gone {
        failures.push(format!("the page dropped Rusty at some point: {state}"));
    }
    let system: Vec<String> = serde_json::from_value(state["system"].clone()).expect("system lines");
    // "Rusty joined." once, when Rusty joined after the page; anything else
    // about Rusty but its reconnecting is a leave or a rejoin.
    let joined_once = usize::from(restarter == Restarter::Rusty);
    let joins = system.iter().filter(|l| *l == "Rusty joined.").count();
    if joins != joined_once {
        failures.push(format!("the page says \"Rusty joined.\" {joins} times"));
    }
    let said_left = system.iter().filter(|l| {
        l.starts_with("Rusty ") && !l.contains("reconnecting") && *l != "Rusty is back." && *l != "Rusty joined."
    });
    for line in said_left {
        failures.push(format!("the page says {line:?}"));
    }
    match cut {
        Cut::Browser => {
            // The page noticed, said so, and says it came back resumed.
            if !watch.banners.iter().any(|b| b.contains("Reconnecting in")) {
                failures.push(format!("the page never showed the connection banner: {:?}", watch.banners));
            }
            if !watch.banners.iter().any(|b| b == "Reconnected.") {
                failures.push(format!("the page never said it resumed: {:?}", watch.banners));
            }
            let away = rusty.events_about(mark_cut, "peer_reconnecting", &ada_id);
            if !away.iter().any(|v| v["reconnecting"] == true) {
                failures.push("Rusty never saw Ada reconnecting (was her signaling connection cut?)".into());
            }
        }
        Cut::RustPeer => {
            for line in ["Rusty is reconnecting…", "Rusty is back."] {
                if !system.iter().any(|l| l == line) {
                    failures.push(format!("the page never said {line:?}: {system:?}"));
                }
            }
            if !watch.banners.is_empty() {
                failures.push(format!("the page's own connection was affected: {:?}", watch.banners));
            }
        }
    }

    // Every message exactly once, in order, the same on both sides.
    let page_lines = page_chat_lines(&state);
    let rusty_lines = rusty.chat();
    check_chat("the page", &page_lines, &expected, &mut failures);
    check_chat("Rusty", &rusty_lines, &expected, &mut failures);
    if page_lines != rusty_lines {
        failures.push(format!("the page and Rusty disagree on the room's chat: {page_lines:?} vs {rusty_lines:?}"));
    }

    // The restarter restarted ICE when its ICE stayed down past its delay.
    let page_restarts = restarts(&state) - restarts(&before);
    let rusty_restarts = rusty.events_about(mark_cut, "ice_restarting", &ada_id).len();
    let rusty_down = rusty
        .events_about(mark_cut, "connection", &ada_id)
        .iter()
        .any(|v| v["state"] == "disconnected" || v["state"] == "failed");
    match restarter {
        Restarter::Page if watch.longest_down >= PAGE_RESTARTS_AFTER && page_restarts == 0 => failures.push(format!(
            "the page's ICE was down {:.1?} and the page (the first offerer) never restarted it",
            watch.longest_down
        )),
        Restarter::Rusty if rusty_down && rusty_restarts == 0 => {
            failures.push("Rusty's ICE went down and Rusty (the first offerer) never restarted it".into());
        }
        _ => {}
    }
    let how = match (page_restarts, rusty_restarts) {
        (0, 0) => format!(
            "no ICE restart: ICE came back by itself on the same credentials (the page's ICE was down at most \
             {:.1?}; Rusty reported it down: {rusty_down})",
            watch.longest_down
        ),
        (p, r) => format!("ICE restarted: {p} restart offer(s) by the page, {r} by Rusty"),
    };
    let mut report = format!(
        "{cut:?} cut off for {cut_for:.1?}, {restarter:?} restarts ICE (Ada {ada_id}, Rusty {rusty_id}); call up \
         {call_up:.1?} after the start\nafter the network came back: {firsts:?}; done after {recovered:.1?}\n{how}\n\
         page banners: {:?}\npage problems: {}\npage's link since the cut:\n{}",
        watch.banners,
        state["problems"],
        watch.timeline.join("\n")
    );
    if !failures.is_empty() {
        let _ = write!(report, "\npage now: {state:#}\n--- Rusty:\n{}", rusty.log());
        panic!("{} failure(s):\n- {}\n\n{report}", failures.len(), failures.join("\n- "));
    }
    println!("{report}\ntotal {:.1?}", started.elapsed());
    ada.close().await;
    drop(driver);
}
