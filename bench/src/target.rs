//! The two servers under test, behind one interface: how to connect, how to
//! pair two clients so one can address the other, and the frames to send.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This project.
    Switchboard,
    /// PeerJS server 1.0.2 (npm `peer`).
    PeerJs,
}

impl Kind {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Switchboard => "Switchboard",
            Self::PeerJs => "PeerJS 1.0.2",
        }
    }
}

/// A server to connect to.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Which.
    pub kind: Kind,
    /// Where.
    pub addr: SocketAddr,
}

/// Small read buffers: the idle test holds 15k client sockets.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0)
}

impl Endpoint {
    async fn open(&self, id: &str) -> anyhow::Result<Ws> {
        let url = match self.kind {
            Kind::Switchboard => format!("ws://{}/v1/ws", self.addr),
            Kind::PeerJs => format!("ws://{}/peerjs?key=peerjs&id={id}&token=t{id}", self.addr),
        };
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
            .await
            .with_context(|| format!("connecting to {}", self.kind.name()))?;
        Ok(ws)
    }

    /// Connects one client and brings it to the state where it can send and
    /// receive relays: joined `room` (Switchboard) or registered as `id`
    /// (PeerJS). Returns the socket and the id others address it by, when
    /// the server told it (Switchboard) or it chose it (PeerJS).
    pub async fn join(&self, room: &str, id: &str) -> anyhow::Result<(Ws, String)> {
        let mut ws = self.open(id).await?;
        match self.kind {
            Kind::Switchboard => {
                ws.send(Message::text(format!(r#"{{"type":"join","room":"{room}","name":"{id}"}}"#))).await?;
                let text = next_text(&mut ws).await?;
                let v: serde_json::Value = serde_json::from_str(&text)?;
                if v["type"] != "welcome" {
                    bail!("expected welcome, got {text}");
                }
                let me = v["you"]["id"].as_str().context("welcome without you.id")?.to_owned();
                Ok((ws, me))
            }
            Kind::PeerJs => {
                let text = next_text(&mut ws).await?;
                if !text.contains("\"OPEN\"") {
                    bail!("expected OPEN, got {text}");
                }
                Ok((ws, id.to_owned()))
            }
        }
    }

    /// Two clients that can address each other; returns (a, b, b's id).
    pub async fn pair(&self, n: usize) -> anyhow::Result<(Ws, Ws, String)> {
        self.pair_with(self, n).await
    }

    /// Two clients that can address each other, `a` joined here and `b` at
    /// `other` (another node of the same cluster); returns (a, b, b's id).
    pub async fn pair_with(&self, other: &Self, n: usize) -> anyhow::Result<(Ws, Ws, String)> {
        let room = format!("pair{n}");
        let (mut a, _) = self.join(&room, &format!("a{n}")).await?;
        let (b, b_id) = other.join(&room, &format!("b{n}")).await?;
        if self.kind == Kind::Switchboard {
            // a hears about b; consume that so a's reads start clean.
            let text = next_text(&mut a).await?;
            if !text.contains("peer_joined") {
                bail!("expected peer_joined, got {text}");
            }
        }
        Ok((a, b, b_id))
    }

    /// A relayed SDP offer carrying `sdp`, in this server's dialect.
    pub fn offer(&self, to: &str, sdp_json_escaped: &str) -> String {
        match self.kind {
            Kind::Switchboard => {
                format!(r#"{{"type":"offer","to":"{to}","description":{{"type":"offer","sdp":"{sdp_json_escaped}"}}}}"#)
            }
            Kind::PeerJs => format!(
                r#"{{"type":"OFFER","dst":"{to}","payload":{{"sdp":{{"type":"offer","sdp":"{sdp_json_escaped}"}},"type":"media","connectionId":"mc_bench"}}}}"#
            ),
        }
    }

    /// A relayed ICE candidate whose candidate line is `line`.
    pub fn candidate(&self, to: &str, line: &str) -> String {
        match self.kind {
            Kind::Switchboard => format!(
                r#"{{"type":"candidate","to":"{to}","candidate":{{"candidate":"{line}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw"}}}}"#
            ),
            Kind::PeerJs => format!(
                r#"{{"type":"CANDIDATE","dst":"{to}","payload":{{"candidate":{{"candidate":"{line}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw"}},"type":"media","connectionId":"mc_bench"}}}}"#
            ),
        }
    }
}

/// The next text frame.
pub async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => bail!("unexpected frame {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// A realistic ~2 KB browser offer (audio + video, BUNDLE), JSON-escaped,
/// starting with a marker line the latency test rewrites.
pub fn sample_sdp(target_len: usize) -> String {
    let mut sdp = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\na=group:BUNDLE 0 1\\r\\n\
a=extmap-allow-mixed\\r\\na=msid-semantic: WMS stream\\r\\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\\r\\nc=IN IP4 0.0.0.0\\r\\na=rtcp:9 IN IP4 0.0.0.0\\r\\n\
a=ice-ufrag:EsAw\\r\\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\\r\\na=ice-options:trickle\\r\\n\
a=fingerprint:sha-256 DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09:12:34:56:78:9A:BC:DE:F0:11:22:33:44\\r\\n\
a=setup:actpass\\r\\na=mid:0\\r\\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\\r\\n\
a=sendrecv\\r\\na=msid:stream audio0\\r\\na=rtcp-mux\\r\\na=rtpmap:111 opus/48000/2\\r\\na=rtcp-fb:111 transport-cc\\r\\n\
a=fmtp:111 minptime=10;useinbandfec=1\\r\\na=ssrc:1001 cname:bench\\r\\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\\r\\nc=IN IP4 0.0.0.0\\r\\na=rtcp:9 IN IP4 0.0.0.0\\r\\n\
a=ice-ufrag:EsAw\\r\\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\\r\\na=ice-options:trickle\\r\\n\
a=setup:actpass\\r\\na=mid:1\\r\\na=sendrecv\\r\\na=msid:stream video0\\r\\na=rtcp-mux\\r\\na=rtcp-rsize\\r\\n\
a=rtpmap:96 VP8/90000\\r\\na=rtcp-fb:96 goog-remb\\r\\na=rtcp-fb:96 transport-cc\\r\\na=rtcp-fb:96 ccm fir\\r\\n\
a=rtcp-fb:96 nack\\r\\na=rtcp-fb:96 nack pli\\r\\na=rtpmap:97 rtx/90000\\r\\na=fmtp:97 apt=96\\r\\n",
    );
    let mut n = 0;
    while sdp.len() < target_len {
        sdp.push_str(&format!("a=ssrc:{} msid:stream video0\\r\\n", 2000 + n));
        n += 1;
    }
    sdp
}

/// A ~300 B-frame host candidate line.
pub fn sample_candidate() -> String {
    "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.7 rport 46154 generation 0 ufrag EsAw network-id 1 network-cost 10".to_owned()
}
