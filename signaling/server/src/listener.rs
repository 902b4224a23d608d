//! The TCP accept loop and the HTTP stage of every connection, with the
//! bounds a slow client pushes against before it ever upgrades:
//!
//! - a connection still in HTTP (no request yet, half a header, a keep-alive
//!   between requests) holds one of [`Limits::max_http_connections`] slots,
//!   and at most [`Limits::http_connections_per_source`] of them per source
//!   address (trusted proxies exempt), so one host trickling half requests
//!   cannot take every file descriptor and lock everyone out, `/healthz`
//!   included;
//! - the request header must arrive within [`Limits::header_read_timeout`]
//!   (hyper's header-read timer), so a slot held by a slowloris comes back;
//! - an upgraded WebSocket gives its HTTP slot back: from then on it counts
//!   toward `max_connections` instead.
//!
//! A connection over a cap is closed at once, before a byte is read: that
//! costs the server nothing, and the client sees a reset it can retry.
//!
//! This replaces `axum::serve`, which has neither a header timeout nor a
//! count of connections that have not upgraded.

use crate::client_addr::TrustedProxies;
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_core::Limits;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

/// Pause after a failed `accept` (out of file descriptors): accepting again
/// at once would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest a connection may stay in HTTP (not upgraded), whatever it does:
/// the header timeout does not cover a client that never reads its
/// responses. Then it is asked to close, and dropped a second later.
pub const HTTP_STAGE_LIMIT: Duration = Duration::from_secs(60);
/// Bytes hyper buffers for one connection's request head (hyper's default
/// is about 400 KiB; requests here are a few hundred bytes).
pub const MAX_HEAD_BUFFER: usize = 16 * 1024;

/// Connections in the HTTP stage, per source address. The map holds an
/// entry only while its count is positive, so its size is bounded by
/// `max_http_connections`.
#[derive(Debug, Default)]
struct PerSource {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One source's claim on its per-source count, returned on drop.
struct SourceSlot {
    map: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts stay consistent whatever panicked while holding the lock.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_claim(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut counts = self.lock();
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SourceSlot { map: Arc::clone(self), ip })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.map.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What a connection in the HTTP stage holds; dropping it frees the slots.
struct HttpSlot {
    _global: OwnedSemaphorePermit,
    _source: Option<SourceSlot>,
}

/// Accepts connections until `stop` turns true, serving each with `app`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    trusted: TrustedProxies,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) {
    let global = Arc::new(Semaphore::new(limits.max_http_connections));
    let per_source = Arc::new(PerSource::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(ok) => ok,
            Err(err) => {
                warn!(%err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = global.clone().try_acquire_owned() else {
            telemetry.refused_http("http_connections");
            continue;
        };
        let source = if trusted.contains(remote.ip()) {
            None
        } else {
            match per_source.try_claim(crate::client_addr::source_key(remote.ip()), limits.http_connections_per_source)
            {
                Some(slot) => Some(slot),
                None => {
                    telemetry.refused_http("http_connections_per_source");
                    continue;
                }
            }
        };
        // Signaling is small messages that must go out at once: no Nagle delay.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(%err, "cannot set TCP_NODELAY");
        }
        let slot = HttpSlot { _global: permit, _source: source };
        tokio::spawn(connection(tcp, remote, app.clone(), limits.header_read_timeout, slot, stop.clone()));
    }
}

/// Serves HTTP/1.1 on one connection until it closes or upgrades.
async fn connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    slot: HttpSlot,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(MAX_HEAD_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(HTTP_STAGE_LIMIT);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                debug!(%err, "http connection ended");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
        () = deadline => {
            debug!("http stage over its limit: closing");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
    // Closed, or upgraded (the WebSocket task owns the socket now and holds
    // a `max_connections` slot): the HTTP slot goes back.
    drop(slot);
}

/// Resolves once shutdown has begun (the watch's guard is dropped here, so
/// callers' futures stay `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
