//! Test kit for WebRTC tests: a real server on 127.0.0.1 port 0, peers that
//! gather loopback candidates only, and waits on conditions that say what
//! they were waiting for.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use switchboard_peer::{MediaSource, Peer, PeerEvent, PeerOptions, RtcOptions};
use switchboard_server::Server;
use switchboard_server::config::Settings;

/// Longest wait for anything a test expects (ICE on loopback takes
/// milliseconds; an occasional retransmitted DTLS flight takes ~1.5 s).
pub const WAIT: Duration = Duration::from_secs(20);

/// WebRTC stacks gather every interface, and this machine may only send to
/// loopback: refuse to run anywhere but a loopback-only network namespace.
/// (`/sys/class/net` still shows the host's interfaces inside `unshare -n`;
/// `/proc/net/dev` does not.)
pub fn require_loopback_namespace() {
    let dev = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let interfaces: Vec<&str> =
        dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).filter(|i| !i.is_empty()).collect();
    assert!(
        interfaces == ["lo"],
        "WebRTC tests must run in a loopback-only network namespace (found interfaces {interfaces:?}); \
         run scripts/test, or: unshare -n sh -c 'ip link set lo up && cargo test'"
    );
}

pub async fn server() -> Server {
    require_loopback_namespace();
    let settings = Settings { bind: SocketAddr::from(([127, 0, 0, 1], 0)), stun: None, ..Settings::default() };
    switchboard_server::start(settings).await.expect("server starts")
}

pub async fn join(server: &Server, room: &str, name: &str) -> Peer {
    join_with(server, room, name, MediaSource::None).await
}

pub async fn join_with(server: &Server, room: &str, name: &str, media: MediaSource) -> Peer {
    join_recording(server, room, name, media, None).await
}

pub async fn join_recording(
    server: &Server,
    room: &str,
    name: &str,
    media: MediaSource,
    record: Option<std::path::PathBuf>,
) -> Peer {
    let options = PeerOptions {
        media,
        record,
        reconnect: Some(switchboard_peer::ReconnectPolicy::default()),
        url: format!("ws://{}/v1/ws", server.local_addr()),
        room: room.into(),
        name: name.into(),
        token: None,
        rtc: RtcOptions { loopback_only: true, relay_only: false },
    };
    Peer::join(options).await.expect("peer joins")
}

/// Waits for an event matching `pred`; panics after [`WAIT`] naming what it
/// waited for and the events seen meanwhile.
pub async fn wait_for(peer: &mut Peer, what: &str, mut pred: impl FnMut(&PeerEvent) -> bool) -> PeerEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, peer.events.recv()).await {
            Ok(Some(event)) => {
                if pred(&event) {
                    return event;
                }
                seen.push(format!("{event:?}"));
            }
            Ok(None) => panic!("{} stopped while waiting for {what}; saw {seen:#?}", peer.welcome.you.name),
            Err(_) => panic!("{} timed out waiting for {what}; saw {seen:#?}", peer.welcome.you.name),
        }
    }
}

/// Polls `peer`'s media counters until `done` holds, draining its events
/// meanwhile; panics after [`WAIT`] with the last counters.
pub async fn wait_for_media(
    peer: &mut Peer,
    what: &str,
    mut done: impl FnMut(&[switchboard_peer::TrackStats]) -> bool,
) -> Vec<switchboard_peer::TrackStats> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = peer.media_stats().await.expect("stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} timed out waiting for {what}; counters: {stats:#?}",
            peer.welcome.you.name
        );
        // Counters move with the media clock; look again shortly, and keep
        // the event queue drained meanwhile.
        let _ = tokio::time::timeout(Duration::from_millis(100), peer.events.recv()).await;
    }
}
