//! What our WebRTC stacks put on the wire, read by a raw WebSocket client
//! the way another implementation would: every trickled candidate names a
//! media section of the description it belongs to by its real mid (the
//! W3C rule looks up `sdpMid` first), and gathering ends with
//! `end_of_candidates`. Checked for the headless peer and for the SFU.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_e2e::{WAIT, rust_peer, server_with, settings};
use switchboard_peer::MediaSource;
use switchboard_protocol::RoomMode;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time").expect("open").expect("ok");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Joins `room` on a raw socket; reads until an offer and the end of the
/// sender's candidates; returns (offer SDP, candidates).
async fn offer_and_candidates(ws: &mut Ws) -> (String, Vec<Value>) {
    let (mut sdp, mut candidates) = (None, Vec::new());
    loop {
        let msg = next_json(ws).await;
        match msg["type"].as_str() {
            Some("offer") if sdp.is_none() => sdp = msg["description"]["sdp"].as_str().map(String::from),
            Some("candidate") => candidates.push(msg["candidate"].clone()),
            Some("end_of_candidates") if sdp.is_some() => return (sdp.unwrap_or_default(), candidates),
            _ => {}
        }
    }
}

fn assert_real_mids(who: &str, sdp: &str, candidates: &[Value]) {
    let mids: Vec<&str> = sdp.lines().filter_map(|l| l.strip_prefix("a=mid:")).map(str::trim).collect();
    assert!(!candidates.is_empty(), "{who} trickled no candidate");
    for c in candidates {
        let mid = c["sdpMid"].as_str().unwrap_or_default();
        assert!(
            mids.contains(&mid),
            "{who} sent a candidate with sdpMid {mid:?}, not one of the offer's {mids:?}: {c}"
        );
        let index = c["sdpMLineIndex"].as_u64().and_then(|i| usize::try_from(i).ok());
        assert!(index.is_none_or(|i| mids.get(i) == Some(&mid)), "{who}: sdpMLineIndex disagrees with sdpMid: {c}");
    }
}

async fn raw_join(server: &switchboard_server::Server, room: &str) -> Ws {
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    let join = json!({"type": "join", "room": room, "name": "raw"}).to_string();
    ws.send(Message::text(join)).await.expect("sends");
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

#[tokio::test]
async fn the_headless_peer_trickles_candidates_with_the_real_mid() {
    let server = server_with(settings()).await;
    let mut ws = raw_join(&server, "mids").await;
    // The newcomer offers: the headless peer offers to the raw client.
    let _peer = rust_peer(&server, "mids", "rust", MediaSource::Default).await;
    let (sdp, candidates) = offer_and_candidates(&mut ws).await;
    assert_real_mids("the headless peer", &sdp, &candidates);
}

#[tokio::test]
async fn the_sfu_trickles_candidates_with_the_real_mid_and_ends_them() {
    let sfu = switchboard_server::config::Settings { room_mode: RoomMode::Sfu, sfu_loopback_only: true, ..settings() };
    let server = server_with(sfu).await;
    // The SFU joins after the first participant and offers to it.
    let mut ws = raw_join(&server, "mids").await;
    let (sdp, candidates) = offer_and_candidates(&mut ws).await;
    assert_real_mids("the SFU", &sdp, &candidates);
}
