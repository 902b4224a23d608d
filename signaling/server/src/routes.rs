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
        .route(crate::turn_http::TURN_CREDENTIALS_PATH, get(crate::turn_http::credentials))
        .route("/", get(crate::web::index))
        .route("/{*path}", get(crate::web::file))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::Relaxed) || state.hub.is_closed() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    "ready\n".into_response()
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::prometheus().render())
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&state.allowed_origins, &headers) {
        debug!("origin refused");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if state.shutting_down.load(Ordering::Relaxed) {
        return unavailable("shutting down\n", RETRY_AFTER_S);
    }
    let Ok(slot) = state.conn_slots.clone().try_acquire_owned() else {
        state.telemetry.rejected_connections.increment(1);
        return unavailable("too many connections\n", RETRY_AFTER_S);
    };
    let source = state.trusted_proxies.client_ip(peer.ip(), &headers);
    if let Err(refused) = state.admission.try_admit(source, std::time::Instant::now()) {
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
        .on_upgrade(move |socket| connection::run(socket, id, state, slot))
}

fn unavailable(body: &'static str, retry_after_s: &'static str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, retry_after_s)], body).into_response()
}

/// Browsers send `Origin`; other clients do not and are let through (they
/// can forge it anyway: tokens are the access control, origins only stop
/// other web pages from using a visitor's browser).
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    if allowed.is_empty() {
        return true;
    }
    let origin = normalize_origin(origin);
    if allowed.contains(&origin) {
        return true;
    }
    // The server's own pages (the web client) are always allowed.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host))
}

/// Lower-cased, without a trailing slash: the form origins are compared in.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec![normalize_origin("https://app.example/")];
        assert!(origin_allowed(&allowed, &headers(None, "sig.example")));
        assert!(origin_allowed(&allowed, &headers(Some("https://APP.example"), "sig.example")));
        assert!(!origin_allowed(&allowed, &headers(Some("https://evil.example"), "sig.example")));
        assert!(origin_allowed(&allowed, &headers(Some("http://sig.example:8080"), "sig.example:8080")));
        assert!(origin_allowed(&[], &headers(Some("https://evil.example"), "sig.example")));
    }
}
