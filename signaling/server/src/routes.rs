//! HTTP routes: the WebSocket endpoint, health, readiness, metrics, and the
//! browser client.

use crate::admission::Refused;
use crate::connection;
use crate::state::AppState;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use switchboard_core::ConnId;
use switchboard_protocol::WS_PATH;
use tracing::debug;

/// Seconds a client refused at the connection limit is told to wait.
pub const RETRY_AFTER_S: &str = "5";
/// Bytes tungstenite reads from the socket at a time. Small, because every
/// idle connection holds one such buffer.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Frames buffered before tungstenite writes to the socket: a batch of
/// queued frames goes out in one system call, up to this size.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(WS_PATH, get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/drain", axum::routing::post(drain))
        .route(crate::turn_http::TURN_CREDENTIALS_PATH, get(crate::turn_http::credentials))
        .route("/", get(crate::web::index))
        .route("/{*path}", get(crate::web::file))
        .with_state(state)
}

/// Ready unless shutting down. A node that cannot reach Redis still serves
/// its rooms (decision 0018), so it stays ready and says so in the body: a
/// load balancer that pulled every node when Redis went away would end
/// every call.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::Relaxed) || state.shards.any_closed() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match &state.cluster {
        None => "ready\n".into_response(),
        Some(cluster) if cluster.redis_up() => "ready\nredis: up\n".into_response(),
        Some(_) => "ready\nredis: unreachable\n".into_response(),
    }
}

/// Whether a request may see operator pages (`/metrics`, `/v1/cluster`):
/// a direct request from loopback (a local scraper or agent, not one
/// relayed by a proxy on the same host), or one carrying the metrics token.
fn operator(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let local = crate::client_addr::is_loopback(peer.ip()) && !crate::client_addr::looks_proxied(headers);
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::turn_http::bearer);
    let authorized = match (&state.metrics_token, token) {
        (Some(expected), Some(given)) => crate::state::constant_time_eq(expected.trim().as_bytes(), given.as_bytes()),
        _ => false,
    };
    local || authorized
}

/// Asks this node to drain and exit, as SIGTERM does: for the operator
/// only (loopback, or the metrics token), like `/metrics`. 202 once asked
/// (asking again changes nothing).
async fn drain(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // A web page can send a plain POST from the operator's own browser:
    // anything a browser sends carries an Origin, and is refused.
    if headers.contains_key(header::ORIGIN) {
        return (StatusCode::FORBIDDEN, "not from a web page\n").into_response();
    }
    if !operator(&state, peer, &headers) {
        return (StatusCode::FORBIDDEN, "draining needs the metrics token (or a request from this host)\n")
            .into_response();
    }
    state.drain_requested.notify_one();
    (StatusCode::ACCEPTED, "draining\n").into_response()
}

/// The cluster as this node sees it: its id, whether Redis answers, and
/// the live nodes with their load. For the operator only (it names node
/// addresses), like `/metrics`; 404 on a single node.
async fn cluster(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match &state.cluster {
        Some(cluster) if operator(&state, peer, &headers) => axum::Json(cluster.view()).into_response(),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `/metrics` names rooms and peers (SFU series) and shows load: it is for
/// the operator. It answers a direct request from loopback (a local scraper
/// or agent, not one relayed by a proxy on the same host), or one that
/// carries the configured metrics token; anyone else gets 404, as if there
/// were no such page.
async fn metrics(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !operator(&state, peer, &headers) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render()).into_response()
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.origins.allow(&headers) {
        debug!("origin refused");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if let Some(why) = open_rooms_through_a_proxy(&state, &headers) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    if state.shutting_down.load(Ordering::Relaxed) {
        return unavailable("shutting down\n", RETRY_AFTER_S);
    }
    let internal = state.is_internal(peer.ip(), &headers);
    // The built-in SFU gets in even when every slot is taken (one
    // connection per SFU room at most: the rooms are bounded).
    let slot = match state.conn_slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) if internal => None,
        Err(_) => {
            state.telemetry.rejected_connections.increment(1);
            return unavailable("too many connections\n", RETRY_AFTER_S);
        }
    };
    let source = crate::client_addr::source_key(state.trusted_proxies.client_ip(peer.ip(), &headers));
    if !internal && let Err(refused) = state.admission.try_admit(source, std::time::Instant::now()) {
        state.telemetry.rejected_connections.increment(1);
        let body = match refused {
            Refused::Global => "too many new connections: retry later\n",
            Refused::Source => "too many new connections from your address: retry later\n",
        };
        return unavailable(body, crate::admission::RETRY_AFTER_S);
    }
    let id = ConnId(state.next_conn.fetch_add(1, Ordering::Relaxed));
    let hard = state.limits.hard_max_message_bytes();
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| connection::run(socket, id, state, slot, internal))
}

fn unavailable(body: &'static str, retry_after_s: &'static str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, retry_after_s)], body).into_response()
}

/// Open rooms are safe only where nobody else can reach the server. One
/// that binds loopback but receives proxied requests is reachable from
/// wherever the proxy is: unless the operator said open rooms are meant
/// (`--insecure-open-rooms`), such requests are refused, and the log says
/// why once. The refusal's text, for the caller's 403.
pub fn open_rooms_through_a_proxy(state: &AppState, headers: &HeaderMap) -> Option<&'static str> {
    if !state.open_rooms_guarded || !crate::client_addr::looks_proxied(headers) {
        return None;
    }
    if !state.proxied_warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "refusing proxied requests: this server has open rooms (no auth secret) and is reached through a \
             proxy; set an auth secret, or --insecure-open-rooms if anyone may join any room"
        );
    }
    Some("open rooms are not served through a proxy: the operator must set an auth secret or --insecure-open-rooms")
}
