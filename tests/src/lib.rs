//! Test kit for end-to-end tests with real parts: a real signaling server on
//! loopback, real headless Rust peers, and real Chromium driven through
//! chromedriver (fantoccini).
//!
//! Everything here refuses to run outside a loopback-only network namespace:
//! WebRTC stacks gather every interface, and these machines may only send to
//! loopback. Browser tests take [`serial`] so that at most one test's
//! browsers run at a time on a 2-core machine.

pub mod browser;
pub mod cluster_kit;
pub mod coturn;
pub mod lab_browser;
pub mod lab_watch;
pub mod netlab;
pub mod pixels;
pub mod redis;
pub mod tcp_proxy;
pub mod ws;

pub use browser::{Browser, Driver};
pub use coturn::Coturn;
pub use redis::Redis;

use std::net::SocketAddr;
use std::time::Duration;
use switchboard_peer::{MediaSource, Peer, PeerEvent, PeerOptions, RtcOptions};
use switchboard_server::Server;
use switchboard_server::config::Settings;

/// Longest wait for anything a test expects. ICE on loopback takes
/// milliseconds and a first decoded frame well under a second on a quiet
/// machine; the rest is headroom for a loaded one.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(100);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for a whole browser test: browser tests run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Panics unless this process is in a loopback-only network namespace.
/// (`/sys/class/net` still shows the host's interfaces inside `unshare -n`;
/// `/proc/net/dev` does not.)
pub fn require_loopback_namespace() {
    let dev = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let interfaces: Vec<&str> =
        dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).filter(|i| !i.is_empty()).collect();
    assert!(
        interfaces == ["lo"],
        "browser and WebRTC tests must run in a loopback-only network namespace (found interfaces \
         {interfaces:?}); run scripts/test, or: unshare -n sh -c 'ip link set lo up && cargo test'"
    );
}

/// Loopback settings on a free port.
pub fn settings() -> Settings {
    Settings { bind: SocketAddr::from(([127, 0, 0, 1], 0)), stun: None, ..Settings::default() }
}

/// A server with default settings on a free loopback port.
pub async fn server() -> Server {
    server_with(settings()).await
}

/// A server with the given settings.
pub async fn server_with(settings: Settings) -> Server {
    require_loopback_namespace();
    switchboard_server::start(settings).await.expect("server starts")
}

/// The page URL of a server.
pub fn base_url(server: &Server) -> String {
    format!("http://{}", server.local_addr())
}

/// A headless Rust peer that gathers loopback candidates only.
pub async fn rust_peer(server: &Server, room: &str, name: &str, media: MediaSource) -> Peer {
    rust_peer_with(server, room, name, media, RtcOptions { loopback_only: true, relay_only: false }).await
}

/// A headless Rust peer that sends no media.
pub async fn quiet_peer(server: &Server, room: &str, name: &str) -> Peer {
    rust_peer(server, room, name, MediaSource::None).await
}

/// A headless Rust peer that records every remote track into `record`.
pub async fn recording_peer(
    server: &Server,
    room: &str,
    name: &str,
    media: MediaSource,
    record: Option<std::path::PathBuf>,
) -> Peer {
    let rtc = RtcOptions { loopback_only: true, relay_only: false };
    let options = PeerOptions { record, ..peer_options(server, room, name, media, rtc) };
    Peer::join(options).await.expect("peer joins")
}

/// A join token for `sub` in `room` as `role`, signed with `secret`, valid
/// for ten minutes.
pub fn room_token(secret: &str, room: &str, sub: &str, role: switchboard_protocol::Role) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims =
        switchboard_core::Claims { room: room.into(), sub: sub.into(), exp: now + 600, role, ..Default::default() };
    switchboard_core::mint_token(secret.as_bytes(), &claims)
}

/// A headless Rust peer sending the built-in clips, joining with a token
/// for its name signed with `secret`.
pub async fn token_peer(server: &Server, room: &str, name: &str, secret: &str) -> Peer {
    let rtc = RtcOptions { loopback_only: true, relay_only: false };
    let token = Some(room_token(secret, room, name, switchboard_protocol::Role::Participant));
    let options = PeerOptions { token, ..peer_options(server, room, name, MediaSource::Default, rtc) };
    Peer::join(options).await.expect("peer joins")
}

/// A headless Rust peer with the given WebRTC options.
pub async fn rust_peer_with(server: &Server, room: &str, name: &str, media: MediaSource, rtc: RtcOptions) -> Peer {
    Peer::join(peer_options(server, room, name, media, rtc)).await.expect("peer joins")
}

/// A headless Rust peer (loopback candidates) joining through `url`: a
/// node process or a load balancer.
pub async fn peer_at(url: &str, room: &str, name: &str, media: MediaSource) -> Peer {
    let rtc = RtcOptions { loopback_only: true, relay_only: false };
    Peer::join(options_for(url, room, name, media, rtc)).await.expect("peer joins")
}

fn peer_options(server: &Server, room: &str, name: &str, media: MediaSource, rtc: RtcOptions) -> PeerOptions {
    options_for(&format!("ws://{}/v1/ws", server.local_addr()), room, name, media, rtc)
}

fn options_for(url: &str, room: &str, name: &str, media: MediaSource, rtc: RtcOptions) -> PeerOptions {
    PeerOptions {
        media,
        record: None,
        reconnect: Some(switchboard_peer::ReconnectPolicy::default()),
        url: url.into(),
        room: room.into(),
        name: name.into(),
        token: None,
        rtc,
    }
}

/// Waits for a Rust peer event matching `pred`; panics after [`WAIT`] naming
/// what it waited for and the events seen meanwhile.
pub async fn wait_for_event(peer: &mut Peer, what: &str, mut pred: impl FnMut(&PeerEvent) -> bool) -> PeerEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, peer.events.recv()).await {
            Ok(Some(event)) if pred(&event) => return event,
            Ok(Some(event)) => seen.push(format!("{event:?}")),
            Ok(None) => panic!("{} stopped while waiting for {what}; saw {seen:#?}", peer.welcome.you.name),
            Err(_) => panic!("{} timed out waiting for {what}; saw {seen:#?}", peer.welcome.you.name),
        }
    }
}

/// Polls a Rust peer's media counters until `done` holds, leaving its events
/// queued; panics after [`WAIT`] with the last counters.
pub async fn wait_for_rust_media(
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
        // Events stay queued for the test's next wait (a channel opening
        // during the media wait must not be lost); the WebRTC stack never
        // waits on this queue (droppable events are dropped when it is full).
        tokio::time::sleep(POLL).await;
    }
}

/// A port free on loopback for both TCP and UDP.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = tcp.local_addr().expect("address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A binary of the workspace (`switchboard`, `switchboard-peer`), from the
/// target directory this test binary runs in.
pub fn workspace_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(std::path::Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo test --workspace --no-run)",
        path.display()
    );
    path.display().to_string()
}

/// Where tests leave files for people to look at (screenshots): the
/// workspace's `target/artifacts/`.
pub fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts directory");
    dir
}

/// A plain HTTP/1.1 GET to a server of the test: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("tcp connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("response in time").expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
