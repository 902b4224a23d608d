//! Join tokens over real sockets.

mod common;

use common::{Client, server};
use switchboard_core::{Claims, mint_token};
use switchboard_protocol::{ErrorCode, Pong, ServerMessage};

const SECRET: &str = "an-auth-secret-of-at-least-32-bytes!!";

fn now_s() -> u64 {
    switchboard_server::clock::now().unix_ms / 1000
}

fn token(room: &str, sub: &str, exp: u64) -> String {
    mint_token(SECRET.as_bytes(), &Claims { room: room.into(), sub: sub.into(), exp, ..Claims::default() })
}

fn join(room: &str, token: &str) -> String {
    format!(r#"{{"type":"join","id":1,"room":"{room}","name":"Ada","token":"{token}"}}"#)
}

#[tokio::test]
async fn tokens_are_required_checked_and_retryable() {
    let srv = server(|s| s.auth_secret = Some(SECRET.into())).await;
    let mut c = Client::connect(srv.local_addr()).await;
    c.send(r#"{"type":"join","room":"r","name":"Ada"}"#).await;
    c.expect_error(ErrorCode::Unauthorized).await;
    c.send(join("r", &token("r", "ada", now_s() - 3600))).await;
    c.expect_error(ErrorCode::TokenExpired).await;
    c.send(join("r", &token("other-room", "ada", now_s() + 3600))).await;
    c.expect_error(ErrorCode::Unauthorized).await;
    let forged = mint_token(
        b"somebody-elses-secret-somebody-else",
        &Claims { room: "r".into(), sub: "ada".into(), exp: now_s() + 3600, ..Claims::default() },
    );
    c.send(join("r", &forged)).await;
    c.expect_error(ErrorCode::Unauthorized).await;
    c.send(join("r", "not.a.jwt")).await;
    c.expect_error(ErrorCode::Unauthorized).await;
    // Every refusal left the connection usable: a good token now works.
    c.send(join("r", &token("r", "ada", now_s() + 3600))).await;
    let w = c.expect_welcome().await;
    assert_eq!(w.you.identity.as_deref(), Some("ada"));
}

#[tokio::test]
async fn the_same_identity_replaces_its_old_session() {
    let srv = server(|s| s.auth_secret = Some(SECRET.into())).await;
    let t = token("r", "ada", now_s() + 3600);
    let mut old = Client::connect(srv.local_addr()).await;
    old.send(join("r", &t)).await;
    old.expect_welcome().await;
    let mut new = Client::connect(srv.local_addr()).await;
    new.send(join("r", &t)).await;
    let w = new.expect_welcome().await;
    assert!(w.peers.is_empty(), "the old session is gone before the new one is welcomed");
    let err = old.expect_error(ErrorCode::Replaced).await;
    assert!(err.fatal);
    old.expect_close().await;
    new.assert_quiet().await;
    let _ = ServerMessage::Pong(Pong { id: None });
}
