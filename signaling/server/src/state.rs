//! What every request handler and connection task shares.

use crate::telemetry::Telemetry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use switchboard_core::{Limits, TokenVerifier, TurnConfig};
use switchboard_protocol::IceServer;
use tokio::sync::Semaphore;

/// Shared, read-mostly server state. The only mutable parts are atomics
/// and the semaphore; room state belongs to the hub task alone.
#[derive(Debug)]
pub struct AppState {
    /// The hub shards' inboxes, and where each room lives.
    pub shards: crate::shards::Shards,
    /// Rooms held by all shards (against `max_rooms`).
    pub room_quota: switchboard_core::RoomQuota,
    /// The cluster this node is part of (None: a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Limits in force.
    pub limits: Limits,
    /// Metrics.
    pub telemetry: Arc<Telemetry>,
    /// One permit per allowed connection; all permits back means no
    /// connection is left (used to finish shutdown).
    pub conn_slots: Arc<Semaphore>,
    /// The rate of new connections.
    pub admission: crate::admission::Admission,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Next connection id.
    pub next_conn: AtomicU64,
    /// Browser origins allowed to connect.
    pub origins: crate::origins::Origins,
    /// Open rooms that the operator did not declare public: a request that
    /// came through a proxy is refused (the server cannot be private then).
    pub open_rooms_guarded: bool,
    /// Whether that refusal was logged already (once is enough).
    pub proxied_warned: AtomicBool,
    /// Bearer token for /metrics from anywhere.
    pub metrics_token: Option<String>,
    /// Set once shutdown begins: readiness fails and upgrades are refused.
    pub shutting_down: AtomicBool,
    /// Set once a drain begins: readiness fails (the load balancer sends
    /// no new connections), no room is placed here, and the rooms held
    /// here are handed to other nodes.
    pub draining: AtomicBool,
    /// Someone asked for a drain over HTTP (`POST /v1/drain`): the
    /// process drains and exits as on SIGTERM.
    pub drain_requested: tokio::sync::Notify,
    /// TURN credentials for the HTTP endpoint (the hub has its own copy).
    pub turn: Option<TurnConfig>,
    /// Checks tokens on the HTTP endpoint, as the hub does on join.
    pub verifier: Option<TokenVerifier>,
    /// The ICE servers without credentials (STUN), as in the welcome.
    pub ice_servers: Vec<IceServer>,
    /// The key the built-in SFU's connections carry in
    /// [`INTERNAL_HEADER`]: they skip admission and the message rate
    /// limit (the SFU is the server's own, and a 32-member room's
    /// renegotiations would otherwise queue for seconds).
    pub internal_key: Option<String>,
    /// The address the built-in SFU connects from: the bind address, or
    /// loopback when the server binds a wildcard.
    pub internal_ip: std::net::IpAddr,
}

/// Compares secrets without an early exit that would time the match.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The header the built-in SFU's WebSocket carries its key in.
pub const INTERNAL_HEADER: &str = "x-switchboard-internal";

impl AppState {
    /// Whether a connection from `peer` with `headers` is the built-in
    /// SFU's: from this host (loopback or the bind address), and the key
    /// matches (compared in constant time).
    pub fn is_internal(&self, peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> bool {
        let (Some(key), Some(given)) = (&self.internal_key, headers.get(INTERNAL_HEADER)) else { return false };
        constant_time_eq(key.as_bytes(), given.as_bytes())
            && (crate::client_addr::is_loopback(peer) || peer == self.internal_ip)
    }
}
