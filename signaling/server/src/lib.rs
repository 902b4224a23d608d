//! The Switchboard signaling server: an axum shell around the sans-IO core.
//!
//! Tasks and who owns what:
//! - the **hub shards** ([`hub_task`], [`shards`]): each owns a core `Hub`
//!   for the rooms placed on it by a hash of their name (rooms, members,
//!   chat) and the outbound queues of the connections in them;
//! - one **connection task** per WebSocket ([`connection`]) reads, checks and
//!   parses frames, forwards them to its room's shard over a bounded channel
//!   ([`router`]), and writes what the shard queues for it;
//! - axum serves HTTP: the upgrade, `/healthz`, `/readyz`, `/metrics`, and
//!   the browser client ([`web`]) at `/`.
//!
//! [`start`] binds and runs everything; [`Server::shutdown`] sends every
//! client a going-away notice and finishes within the configured grace.

pub mod admission;
pub mod client_addr;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod hub_task;
pub mod listener;
pub mod origins;
pub mod outbox;
pub mod router;
pub mod routes;
#[cfg(feature = "sfu")]
pub mod sfu_host;
pub mod shards;
pub mod state;
pub mod stun;
pub mod telemetry;
pub mod turn_http;
pub mod web;

use anyhow::Context;
use config::Settings;
use hub_task::HubEvent;
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switchboard_core::{HubConfig, RoomQuota, TokenVerifier};
use switchboard_protocol::{GoingAway, IceServer};
use telemetry::Telemetry;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Clients are told to wait this long before reconnecting after a
/// going-away notice (they add jitter).
pub const RECONNECT_AFTER_MS: u64 = 1000;

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    settings: Settings,
    stop_accepting: watch::Sender<bool>,
    http: JoinHandle<()>,
    hubs: Vec<JoinHandle<()>>,
}

/// The built-in SFU as the rest of the server sees it: who checks its
/// tokens, where SFU requests go, and the key its connections carry.
struct BuiltinSfu {
    verifier: Option<TokenVerifier>,
    requests: Option<mpsc::UnboundedSender<switchboard_protocol::RoomName>>,
    internal_key: Option<String>,
}

impl BuiltinSfu {
    #[cfg(feature = "sfu")]
    fn start(settings: &Settings, addr: SocketAddr) -> Self {
        if !settings.builtin_sfu {
            return Self { verifier: None, requests: None, internal_key: None };
        }
        let host = sfu_host::SfuHost::new(addr, settings.sfu_loopback_only);
        let (requests, rx) = mpsc::unbounded_channel();
        let built = Self { verifier: Some(host.verifier()), requests: Some(requests), internal_key: Some(host.key()) };
        tokio::spawn(host.run(rx));
        built
    }

    #[cfg(not(feature = "sfu"))]
    fn start(settings: &Settings, _addr: SocketAddr) -> Self {
        if settings.builtin_sfu && settings.room_mode == switchboard_protocol::RoomMode::Sfu {
            tracing::warn!(
                "this build has no built-in SFU (cargo feature `sfu`): SFU rooms wait for switchboard-sfu processes"
            );
        }
        Self { verifier: None, requests: None, internal_key: None }
    }
}

/// Where the server reaches itself (the built-in SFU): its bind address,
/// or loopback for a wildcard bind.
pub fn sfu_source_ip(addr: SocketAddr) -> std::net::IpAddr {
    if addr.ip().is_unspecified() { std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) } else { addr.ip() }
}

/// Binds `settings.bind` and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Server> {
    settings.check()?;
    let listener =
        tokio::net::TcpListener::bind(settings.bind).await.with_context(|| format!("binding {}", settings.bind))?;
    let addr = listener.local_addr()?;
    let telemetry = Arc::new(Telemetry::new());
    let (stun_socket, mut ice_servers) = bind_stun(&settings).await?;
    let stun_addr = stun_socket.as_ref().map(UdpSocket::local_addr).transpose()?;
    ice_servers.extend(settings.ice_servers.iter().cloned());
    let verifier = || settings.auth_secret.as_deref().map(|s| TokenVerifier::new(s.as_bytes()));
    let builtin = BuiltinSfu::start(&settings, addr);
    let room_quota = RoomQuota::default();
    let (publish_tx, publish_rx) = mpsc::channel(cluster::bridge::PUBLISH_QUEUE);
    let (chat_tx, chat_rx) = mpsc::unbounded_channel();
    let cluster = settings
        .cluster
        .as_ref()
        .map(|c| Arc::new(cluster::Cluster::new(c.redis_url.clone(), c.node_id.clone(), publish_tx, chat_tx)));
    let state_later: hub_task::StateLater = Arc::default();
    let (mut inboxes, mut hubs) = (Vec::new(), Vec::new());
    for _ in 0..settings.hub_shards() {
        let (tx, rx) = mpsc::channel(hub_task::HUB_QUEUE);
        let config = HubConfig {
            limits: settings.limits.clone(),
            verifier: verifier(),
            ice_servers: ice_servers.clone(),
            turn: settings.turn.clone(),
            room_mode: settings.room_mode,
            sfu_verifier: builtin.verifier.clone(),
            room_quota: room_quota.clone(),
            durable_chat: cluster.is_some(),
        };
        let (own, later) = (tx.downgrade(), state_later.clone());
        let run = hub_task::run(config, rx, telemetry.clone(), builtin.requests.clone(), cluster.clone(), own, later);
        hubs.push(tokio::spawn(run));
        inboxes.push(tx);
    }
    let state = Arc::new(AppState {
        shards: shards::Shards::new(inboxes),
        room_quota,
        cluster,
        limits: settings.limits.clone(),
        telemetry,
        conn_slots: Arc::new(Semaphore::new(settings.limits.max_connections)),
        admission: admission::Admission::new(
            settings.limits.admissions_per_second,
            settings.limits.admission_burst,
            settings.limits.admissions_per_source_per_second,
            settings.limits.admission_per_source_burst,
            std::time::Instant::now(),
        ),
        trusted_proxies: client_addr::TrustedProxies::new(settings.trusted_proxies.clone()),
        // Unique across restarts of this node (in a cluster, other nodes
        // key its bridged connections by node id and connection id).
        next_conn: AtomicU64::new((clock::now().unix_ms << 16) | 1),
        origins: origins::Origins::new(&settings.allowed_origins, settings.public_url.as_deref(), addr),
        open_rooms_guarded: settings.auth_secret.is_none() && !settings.insecure_open_rooms,
        proxied_warned: AtomicBool::new(false),
        metrics_token: settings.metrics_token.clone(),
        shutting_down: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        drain_requested: tokio::sync::Notify::new(),
        turn: settings.turn.clone(),
        verifier: verifier(),
        ice_servers,
        internal_key: builtin.internal_key,
        internal_ip: sfu_source_ip(addr),
    });
    let _ = state_later.set(Arc::downgrade(&state));
    if let (Some(cluster), Some(settings)) = (&state.cluster, &settings.cluster) {
        let client = redis::Client::open(settings.redis_url.as_str()).context("the Redis URL")?;
        info!(node = %cluster.node_id, "cluster mode: joining through Redis");
        tokio::spawn(cluster::registry::run(cluster.clone(), state.clone(), client.clone(), addr.to_string()));
        tokio::spawn(cluster::bridge::run_publisher(publish_rx, state.clone(), cluster.clone()));
        tokio::spawn(cluster::bridge::run_subscriber(client, state.clone(), cluster.clone()));
        tokio::spawn(cluster::leases::run_renewals(state.clone(), cluster.clone()));
        let stream_history = settings.chat_stream_history.max(state.limits.chat_history);
        tokio::spawn(cluster::chat_store::run(chat_rx, state.clone(), cluster.clone(), stream_history));
    }
    let (stop_accepting, stop_rx) = watch::channel(false);
    if let Some(socket) = stun_socket {
        tokio::spawn(stun::run(socket, state.telemetry.clone(), stop_rx.clone()));
    }
    let app = routes::router(state.clone());
    let http = tokio::spawn(listener::serve(
        listener,
        app,
        settings.limits.clone(),
        state.trusted_proxies.clone(),
        state.telemetry.clone(),
        stop_rx,
    ));
    // Keep the Prometheus histograms from growing between scrapes.
    let upkeep = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        while !upkeep.shutting_down.load(Ordering::Relaxed) {
            tick.tick().await;
            telemetry::prometheus().run_upkeep();
        }
    });
    Ok(Server { addr, stun_addr, state, settings, stop_accepting, http, hubs })
}

/// Binds the embedded STUN server, if enabled, and the `stun:` entry that
/// advertises it.
async fn bind_stun(settings: &Settings) -> anyhow::Result<(Option<UdpSocket>, Vec<IceServer>)> {
    let Some(stun) = &settings.stun else { return Ok((None, Vec::new())) };
    let ip = settings.bind.ip();
    let socket = UdpSocket::bind((ip, stun.port)).await.with_context(|| {
        format!(
            "binding the STUN server on UDP {ip}:{} (choose another port with --stun-port, or --no-stun)",
            stun.port
        )
    })?;
    let port = socket.local_addr()?.port();
    let host = stun.host.clone().or_else(|| (!ip.is_unspecified()).then(|| ip.to_string()));
    let Some(host) = host else {
        warn!(port, "the STUN server is not advertised: the bind address is a wildcard; set --stun-host");
        return Ok((Some(socket), Vec::new()));
    };
    let url = stun::url(&host, port);
    info!(%url, "STUN server ready");
    Ok((Some(socket), vec![IceServer { urls: vec![url], username: None, credential: None }]))
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The embedded STUN server's UDP address, when it runs.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// Resolves when someone asks for a drain over HTTP (`POST /v1/drain`).
    pub async fn drain_requested(&self) {
        self.state.drain_requested.notified().await;
    }

    /// Drains this node before a shutdown (decision 0019): `/readyz` fails
    /// from now, so the load balancer stops sending clients here; after
    /// `drain_delay` every room held here is handed to another node of the
    /// cluster, and the clients of this node in other nodes' rooms are told
    /// `going_away`. Their sessions live on: they resume through another
    /// node. Rooms that cannot be handed over (a single node, Redis away)
    /// stay, and [`Server::shutdown`] ends them as it always did. Call
    /// `shutdown` next.
    pub async fn drain(&self) -> cluster::drain::DrainReport {
        self.state.draining.store(true, Ordering::Relaxed);
        self.state.telemetry.draining.set(1.0);
        let Some(cluster) = &self.state.cluster else {
            let rooms = self.state.room_quota.taken();
            if rooms > 0 {
                warn!(rooms, "drain: a single node has nobody to hand rooms to; their members join afresh");
                self.state.telemetry.handovers[1].increment(rooms as u64);
            }
            return cluster::drain::DrainReport { kept: rooms, ..Default::default() };
        };
        info!(delay_ms = self.settings.drain_delay.as_millis() as u64, "draining: readiness fails from now");
        tokio::time::sleep(self.settings.drain_delay).await;
        let mut report = cluster::drain::hand_over_rooms(&self.state, cluster).await;
        let notice = GoingAway {
            reason: "this server is restarting: reconnect".into(),
            reconnect_url: None,
            retry_after_ms: cluster::drain::HANDOVER_RETRY_AFTER_MS,
        };
        report.bridged = cluster.bridge.going_away_all(&notice);
        info!(
            handed_over = report.handed_over,
            kept = report.kept,
            bridged = report.bridged,
            "drain done: rooms handed over"
        );
        report
    }

    /// Graceful shutdown: refuse new connections, send every client a
    /// going-away notice and a close, and wait for them to go, at most the
    /// configured grace.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Self { state, settings, stop_accepting, http, hubs, .. } = self;
        state.shutting_down.store(true, Ordering::Relaxed);
        let notice = GoingAway {
            reason: "server shutting down".into(),
            reconnect_url: settings.public_url.clone(),
            retry_after_ms: RECONNECT_AFTER_MS,
        };
        // One deadline for the whole shutdown, however its steps divide it.
        let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
        for shard in state.shards.all() {
            let _ = shard.send(HubEvent::Shutdown(notice.clone())).await;
        }
        let _ = stop_accepting.send(true);
        let all = u32::try_from(settings.limits.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout_at(deadline, state.conn_slots.acquire_many(all)).await;
        match drained {
            Ok(_) => info!("all connections closed"),
            Err(_) => {
                let open = settings.limits.max_connections - state.conn_slots.available_permits();
                warn!(open, "shutdown grace over with connections still open; dropping them");
            }
        }
        let _ = tokio::time::timeout_at(deadline, http).await;
        for hub in hubs {
            hub.abort();
        }
        Ok(())
    }
}
