//! SFU rooms in the core: the mode fixed at creation, who may join as the
//! SFU, the addressing rule, and when the shell is asked for an SFU.

mod common;

use common::Sim;
use switchboard_core::{Claims, HubConfig, Limits, TokenVerifier, mint_token};
use switchboard_protocol::{ErrorCode, PeerId, Role, RoomMode, ServerMessage, Welcome};

const SFU_SECRET: &[u8] = b"process-sfu-secret-process-sfu-secret";
const AUTH: &[u8] = b"auth-secret-auth-secret-auth-secret!";
const OFFER: &str = r#"{"type":"offer","sdp":"v=0\r\n"}"#;

fn sfu_config() -> HubConfig {
    HubConfig { room_mode: RoomMode::Sfu, sfu_verifier: Some(TokenVerifier::new(SFU_SECRET)), ..HubConfig::default() }
}

fn sfu_token(secret: &[u8], room: &str, now_s: u64, role: Role) -> String {
    let claims = Claims { room: room.into(), sub: "sfu".into(), exp: now_s + 60, role, ..Claims::default() };
    mint_token(secret, &claims)
}

fn error_code(msgs: &[ServerMessage]) -> Option<ErrorCode> {
    msgs.iter().find_map(|m| match m {
        ServerMessage::Error(e) => Some(e.code),
        _ => None,
    })
}

fn join_as_sfu(s: &mut Sim, conn: u64, room: &str, token: &str) -> Result<Welcome, Option<ErrorCode>> {
    let c = s.open(conn);
    s.send(c, &format!(r#"{{"type":"join","room":"{room}","name":"SFU","role":"sfu","token":"{token}"}}"#));
    let msgs = s.take(c);
    match msgs.as_slice() {
        [ServerMessage::Welcome(w)] => Ok((**w).clone()),
        other => Err(error_code(other)),
    }
}

fn offer_to(to: &PeerId) -> String {
    format!(r#"{{"type":"offer","to":"{to}","description":{OFFER}}}"#)
}

#[test]
fn an_sfu_room_asks_for_an_sfu_once_and_the_sfu_joins_with_its_role() {
    let mut s = Sim::new(sfu_config());
    let now_s = s.now.unix_ms / 1000;
    let (a, wa) = s.join(1, "forum", "Ada");
    assert_eq!(wa.mode, RoomMode::Sfu);
    assert_eq!(s.sfu_wanted, ["forum"]);
    let (_, _) = s.join(2, "forum", "Bob");
    assert_eq!(s.sfu_wanted, ["forum"], "asked once while the SFU is on its way");

    let sfu = join_as_sfu(&mut s, 3, "forum", &sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu)).expect("SFU joins");
    assert_eq!(sfu.you.role, Role::Sfu);
    assert_eq!(sfu.peers.len(), 2);
    let seen = s.take(a);
    assert!(seen.iter().any(|m| matches!(m, ServerMessage::PeerJoined(j) if j.peer.role == Role::Sfu)), "{seen:?}");

    // The SFU leaves with participants left: ask again.
    let sfu_conn = switchboard_core::ConnId(3);
    s.disconnect(sfu_conn, switchboard_protocol::LeaveReason::Left);
    assert_eq!(s.sfu_wanted, ["forum", "forum"]);
}

#[test]
fn participants_negotiate_with_the_sfu_only() {
    let mut s = Sim::new(sfu_config());
    let now_s = s.now.unix_ms / 1000;
    let (a, _) = s.join(1, "forum", "Ada");
    let (b, wb) = s.join(2, "forum", "Bob");
    let ada = wb.peers[0].id.clone();
    let sfu = join_as_sfu(&mut s, 3, "forum", &sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu)).expect("SFU joins");
    let sfu_conn = switchboard_core::ConnId(3);
    s.take(a);
    s.take(b);

    s.send(b, &offer_to(&ada));
    assert_eq!(error_code(&s.take(b)), Some(ErrorCode::Forbidden));
    assert!(s.take(a).is_empty(), "nothing reached Ada");

    s.send(b, &offer_to(&sfu.you.id));
    assert!(matches!(s.take(sfu_conn).as_slice(), [ServerMessage::Offer(_)]));
    s.send(sfu_conn, &offer_to(&ada));
    assert!(matches!(s.take(a).as_slice(), [ServerMessage::Offer(_)]), "the SFU may address anyone");
}

#[test]
fn only_an_sfu_token_for_an_existing_sfu_room_admits_an_sfu() {
    let mut s = Sim::new(HubConfig { verifier: Some(TokenVerifier::new(AUTH)), ..sfu_config() });
    let now_s = s.now.unix_ms / 1000;
    let participant_token = |room: &str, mode: Option<RoomMode>| {
        let claims = Claims { room: room.into(), sub: "ada".into(), exp: now_s + 60, mode, ..Claims::default() };
        mint_token(AUTH, &claims)
    };
    // A mesh room, by the token's claim, on a server whose default is SFU.
    let a = s.open(1);
    s.send(
        a,
        &format!(
            r#"{{"type":"join","room":"chat","name":"Ada","token":"{}"}}"#,
            participant_token("chat", Some(RoomMode::Mesh))
        ),
    );
    assert!(matches!(s.take(a).as_slice(), [ServerMessage::Welcome(w)] if w.mode == RoomMode::Mesh));
    assert!(s.sfu_wanted.is_empty());
    let b = s.open(2);
    s.send(
        b,
        &format!(r#"{{"type":"join","room":"forum","name":"Bob","token":"{}"}}"#, participant_token("forum", None)),
    );
    assert!(matches!(s.take(b).as_slice(), [ServerMessage::Welcome(w)] if w.mode == RoomMode::Sfu));

    let unauthorized = Some(ErrorCode::Unauthorized);
    assert_eq!(join_as_sfu(&mut s, 10, "forum", "not-a-token").err(), Some(unauthorized));
    let plain = participant_token("forum", None);
    assert_eq!(join_as_sfu(&mut s, 11, "forum", &plain).err(), Some(unauthorized), "a participant's token");
    let forbidden = Some(ErrorCode::Forbidden);
    let own = |room: &str| sfu_token(SFU_SECRET, room, now_s, Role::Sfu);
    assert_eq!(join_as_sfu(&mut s, 12, "chat", &own("chat")).err(), Some(forbidden), "a mesh room");
    assert_eq!(join_as_sfu(&mut s, 13, "nowhere", &own("nowhere")).err(), Some(forbidden), "no such room");
    // An external SFU with an auth-secret token that says so is welcome.
    let external = sfu_token(AUTH, "forum", now_s, Role::Sfu);
    assert!(join_as_sfu(&mut s, 14, "forum", &external).is_ok());
}

#[test]
fn the_sfu_never_counts_against_the_room_size() {
    let limits = Limits { max_peers_per_room: 1, ..Limits::default() };
    let mut s = Sim::new(HubConfig { limits, ..sfu_config() });
    let now_s = s.now.unix_ms / 1000;
    s.join(1, "forum", "Ada");
    assert!(join_as_sfu(&mut s, 2, "forum", &sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu)).is_ok());
    let c = s.open(3);
    s.send(c, r#"{"type":"join","room":"forum","name":"Cyd"}"#);
    assert_eq!(error_code(&s.take(c)), Some(ErrorCode::RoomFull));
}

#[test]
fn an_sfu_room_asks_again_for_an_sfu_that_never_came() {
    let mut s = Sim::new(sfu_config());
    let launch = s.hub.limits().sfu_launch_timeout;
    let (_, _) = s.join(1, "forum", "Ada");
    assert_eq!(s.sfu_wanted, ["forum"]);
    // The launch failed (refused during a reconnect storm, say): no SFU joins.
    s.advance(launch / 2);
    assert_eq!(s.sfu_wanted, ["forum"], "not before the launch timeout");
    s.advance(launch / 2);
    assert_eq!(s.sfu_wanted, ["forum", "forum"], "asked again once the launch timeout passed");
    s.advance(launch);
    assert_eq!(s.sfu_wanted, ["forum", "forum", "forum"], "and again, at that interval");
    s.hub.check_invariants().expect("invariants");

    // An SFU joins: no more asking.
    let now_s = s.now.unix_ms / 1000;
    join_as_sfu(&mut s, 3, "forum", &sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu)).expect("SFU joins");
    s.advance(launch * 3);
    assert_eq!(s.sfu_wanted.len(), 3, "an SFU is in the room");

    // It leaves with a participant left: asked at once, then again after
    // the timeout, until the room is empty.
    s.disconnect(switchboard_core::ConnId(3), switchboard_protocol::LeaveReason::Left);
    assert_eq!(s.sfu_wanted.len(), 4);
    s.advance(launch);
    assert_eq!(s.sfu_wanted.len(), 5);
    s.hub.check_invariants().expect("invariants");
    s.disconnect(switchboard_core::ConnId(1), switchboard_protocol::LeaveReason::Left);
    assert_eq!(s.hub.rooms(), 0);
    s.advance(launch * 3);
    assert_eq!(s.sfu_wanted.len(), 5, "nobody left to serve");
    assert_eq!(s.hub.poll_timeout(), None, "no deadline left behind");
}

#[test]
fn a_dropped_sfu_keeps_its_seat_and_resumes_with_what_it_missed() {
    let mut s = Sim::new(sfu_config());
    let now_s = s.now.unix_ms / 1000;
    let (a, _) = s.join(1, "forum", "Ada");
    let token = sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu);
    let sfu = join_as_sfu(&mut s, 3, "forum", &token).expect("SFU joins");
    s.take(a);

    // The SFU's socket drops: the room sees it reconnecting, not leaving,
    // and no second SFU is asked for while its seat is held.
    s.disconnect(switchboard_core::ConnId(3), switchboard_protocol::LeaveReason::Disconnected);
    let seen = s.take(a);
    assert!(!seen.iter().any(|m| matches!(m, ServerMessage::PeerLeft(_))), "{seen:?}");
    assert!(
        seen.iter()
            .any(|m| matches!(m, ServerMessage::PeerUpdated(u) if u.peer.id == sfu.you.id && u.peer.reconnecting)),
        "{seen:?}"
    );
    assert_eq!(s.sfu_wanted, ["forum"], "no new SFU while the old one may come back");

    // What Ada sends meanwhile waits for it.
    s.send(a, &offer_to(&sfu.you.id));
    let c = s.open(4);
    s.send(
        c,
        &format!(
            r#"{{"type":"join","room":"forum","name":"SFU","role":"sfu","token":"{token}","resume":{{"token":"{}","received":0}}}}"#,
            sfu.resume_token
        ),
    );
    let msgs = s.take(c);
    let Some(ServerMessage::Welcome(w)) = msgs.first() else { panic!("expected a resumed welcome, got {msgs:?}") };
    assert!(w.resumed && w.you.id == sfu.you.id, "same seat: {w:?}");
    assert!(
        msgs.iter().any(|m| matches!(m, ServerMessage::Offer(o) if o.from != sfu.you.id)),
        "the held offer: {msgs:?}"
    );
    s.hub.check_invariants().expect("invariants");

    // Dropped again and never back: once the grace is over it has left,
    // and a new SFU is asked for.
    s.disconnect(c, switchboard_protocol::LeaveReason::Disconnected);
    s.advance(s.hub.limits().resume_grace);
    assert!(s.take(a).iter().any(|m| matches!(m, ServerMessage::PeerLeft(l) if l.peer_id == sfu.you.id)));
    assert_eq!(s.sfu_wanted, ["forum", "forum"]);
    s.hub.check_invariants().expect("invariants");
}

#[test]
fn room_chat_and_presence_do_not_reach_the_sfu() {
    let mut s = Sim::new(sfu_config());
    let now_s = s.now.unix_ms / 1000;
    let (a, _) = s.join(1, "forum", "Ada");
    join_as_sfu(&mut s, 3, "forum", &sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu)).expect("SFU joins");
    let sfu = switchboard_core::ConnId(3);
    s.take(a);
    s.send(a, r#"{"type":"chat","client_id":"c-1","text":"hello"}"#);
    s.send(a, r#"{"type":"typing","active":true}"#);
    s.send(a, r#"{"type":"media","mic_muted":true,"camera_muted":false}"#);
    assert!(s.take(a).iter().any(|m| matches!(m, ServerMessage::Chat(_))), "Ada gets her echo");
    let to_sfu = s.take(sfu);
    assert!(to_sfu.is_empty(), "chat, typing and media state are not for the SFU: {to_sfu:?}");
}

#[test]
fn a_participant_cannot_resume_the_sfus_seat() {
    let mut s = Sim::new(sfu_config());
    let now_s = s.now.unix_ms / 1000;
    let (_, _) = s.join(1, "forum", "Ada");
    let sfu = join_as_sfu(&mut s, 3, "forum", &sfu_token(SFU_SECRET, "forum", now_s, Role::Sfu)).expect("SFU joins");
    s.disconnect(switchboard_core::ConnId(3), switchboard_protocol::LeaveReason::Disconnected);
    // Its resume token, presented by a participant's join (open room: no
    // identity on either side), is refused.
    let c = s.open(4);
    let token = &sfu.resume_token;
    s.send(c, &format!(r#"{{"type":"join","room":"forum","name":"x","resume":{{"token":"{token}","received":0}}}}"#));
    assert_eq!(error_code(&s.take(c)), Some(ErrorCode::ResumeFailed));
    s.hub.check_invariants().expect("invariants");
}
