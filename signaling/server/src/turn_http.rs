//! `GET /v1/turn-credentials`: TURN credentials over HTTP, for clients that
//! want them without joining a room (diagnostics, native apps that set up
//! ICE before signaling). The reply has the TURN REST API shape (`username`,
//! `password`, `ttl`, `uris`) plus a ready-to-use `iceServers` array.
//!
//! Behind the same auth as join: with an auth secret, a valid join token as
//! `Authorization: Bearer <token>` (any room; the credential is named after
//! the token's identity). Without one (open rooms, loopback), anyone may ask.

use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_protocol::{ErrorCode, IceServer};

/// The path.
pub const TURN_CREDENTIALS_PATH: &str = "/v1/turn-credentials";

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct CredentialQuery {
    /// A shorter lifetime than the configured one, seconds (never longer).
    pub ttl: Option<u64>,
}

/// The reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct CredentialReply {
    /// `<expiry>:<participant>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Seconds until the credentials expire.
    pub ttl: u64,
    /// The TURN URLs.
    pub uris: Vec<String>,
    /// STUN and TURN entries for `RTCPeerConnection`.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

/// A refusal, as JSON.
#[derive(Debug, Serialize)]
struct Refusal {
    error: &'static str,
    message: String,
}

/// The handler.
pub async fn credentials(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<CredentialQuery>, QueryRejection>,
) -> Response {
    if let Some(why) = crate::routes::open_rooms_through_a_proxy(&state, &headers) {
        return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden.as_str(), why.into());
    }
    let Ok(Query(query)) = query else {
        let message = "the only parameter is ttl, a number of seconds".into();
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage.as_str(), message);
    };
    let Some(turn) = &state.turn else {
        return refuse(StatusCode::NOT_FOUND, "turn_not_configured", "this server hands out no TURN server".into());
    };
    let now_s = crate::clock::now().unix_ms / 1000;
    let participant = match &state.verifier {
        None => format!("anon-{:08x}", rand::random::<u32>()),
        Some(verifier) => {
            let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
            let Some(token) = token else {
                state.telemetry.turn_http_refused.increment(1);
                let message = "send a join token as `Authorization: Bearer <token>`".into();
                return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized.as_str(), message);
            };
            match verifier.verify_any_room(token, now_s) {
                Ok(claims) => claims.sub,
                Err(refused) => {
                    state.telemetry.turn_http_refused.increment(1);
                    return refuse(StatusCode::UNAUTHORIZED, refused.code().as_str(), refused.to_string());
                }
            }
        }
    };
    let credential = turn.issue(&participant, now_s, query.ttl);
    state.telemetry.turn_http_issued.increment(1);
    let mut ice_servers = state.ice_servers.clone();
    ice_servers.push(turn.ice_server(&credential));
    let reply = CredentialReply {
        username: credential.username,
        password: credential.password,
        ttl: credential.ttl_s,
        uris: turn.urls.clone(),
        ice_servers,
    };
    // Credentials must not sit in caches.
    ([(header::CACHE_CONTROL, "no-store")], Json(reply)).into_response()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110 §11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn refuse(status: StatusCode, error: &'static str, message: String) -> Response {
    let mut response =
        (status, [(header::CACHE_CONTROL, "no-store")], Json(Refusal { error, message })).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}
