//! The built-in SFU: SFU rooms need no extra set-up. When the hub reports an
//! SFU room without an SFU, this task starts sfu-lite for it in-process; it
//! joins over the server's own WebSocket like any other participant, with a
//! token signed by a secret that exists only in this process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use switchboard_core::{Claims, TokenVerifier, mint_token};
use switchboard_peer::RtcOptions;
use switchboard_protocol::{Role, RoomName, WS_PATH};
use switchboard_sfu::{SfuOptions, run_room};
use tokio::sync::mpsc;
use tracing::warn;

/// Lifetime of the built-in SFU's tokens: they are used within
/// milliseconds of being made.
const SFU_TOKEN_TTL_S: u64 = 300;

/// Signs the built-in SFU's tokens; the hub checks them with
/// [`SfuHost::verifier`].
#[derive(Clone)]
pub struct SfuHost {
    secret: [u8; 32],
    url: String,
    rtc: RtcOptions,
}

impl std::fmt::Debug for SfuHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuHost").field("url", &self.url).finish()
    }
}

impl SfuHost {
    /// A host for a server listening on `addr`, with a fresh secret.
    pub fn new(addr: SocketAddr, loopback_only: bool) -> Self {
        // The server's own address; a wildcard bind is reached on loopback.
        let ip = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
        let url = format!("ws://{}{WS_PATH}", SocketAddr::new(ip, addr.port()));
        Self { secret: rand::random(), url, rtc: RtcOptions { loopback_only, relay_only: false } }
    }

    /// What the hub checks the built-in SFU's tokens with.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(&self.secret)
    }

    /// Starts an SFU for every room announced on `requests`.
    pub async fn run(self, mut requests: mpsc::UnboundedReceiver<RoomName>) {
        while let Some(room) = requests.recv().await {
            let now = crate::clock::now().unix_ms / 1000;
            let claims = Claims {
                room: room.to_string(),
                sub: "sfu".into(),
                exp: now + SFU_TOKEN_TTL_S,
                role: Role::Sfu,
                ..Claims::default()
            };
            let options = SfuOptions {
                url: self.url.clone(),
                room: room.to_string(),
                token: mint_token(&self.secret, &claims),
                rtc: self.rtc.clone(),
            };
            tokio::spawn(async move {
                if let Err(err) = run_room(options).await {
                    warn!(%room, "the SFU for this room stopped: {err:#}");
                }
            });
        }
    }
}
