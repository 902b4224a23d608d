//! The built-in SFU: SFU rooms need no extra set-up. When the hub reports an
//! SFU room without an SFU, this task starts sfu-lite for it in-process; it
//! joins over the server's own WebSocket like any other participant, with a
//! token signed by a secret that exists only in this process.

use std::net::SocketAddr;
use switchboard_core::{Claims, TokenVerifier, mint_token};
use switchboard_protocol::{Role, RoomName, WS_PATH};
use switchboard_rtc::RtcOptions;
use switchboard_sfu::{SfuOptions, run_room};
use tokio::sync::mpsc;
use tracing::warn;

/// Lifetime of the built-in SFU's tokens. The SFU joins with its token at
/// once, and again whenever it must join afresh (its seat was given up
/// after a long drop), which can be days later in a long room. The secret
/// exists only in this process and the token admits only this room's SFU.
const SFU_TOKEN_TTL_S: u64 = 30 * 24 * 3600;

/// Signs the built-in SFU's tokens; the hub checks them with
/// [`SfuHost::verifier`].
#[derive(Clone)]
pub struct SfuHost {
    secret: [u8; 32],
    /// Carried by the SFU's connections in `x-switchboard-internal`.
    key: String,
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
        let url = format!("ws://{}{WS_PATH}", SocketAddr::new(crate::sfu_source_ip(addr), addr.port()));
        let key: [u8; 16] = rand::random();
        let key = key.iter().map(|b| format!("{b:02x}")).collect();
        Self { secret: rand::random(), key, url, rtc: RtcOptions { loopback_only, relay_only: false } }
    }

    /// The key the SFU's connections carry (see `AppState::is_internal`).
    pub fn key(&self) -> String {
        self.key.clone()
    }

    /// What the hub checks the built-in SFU's tokens with.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(&self.secret)
    }

    /// Starts an SFU for every room announced on `requests`.
    ///
    /// The hub asks again every `sfu_launch_timeout` while a room has no
    /// SFU; a room whose SFU task is still running (joining, or
    /// reconnecting after a drop) is not given a second one. The map holds
    /// one entry per room asked for, pruned of finished tasks at each
    /// request: the hub bounds the rooms.
    pub async fn run(self, mut requests: mpsc::UnboundedReceiver<RoomName>) {
        let mut running: std::collections::HashMap<RoomName, tokio::task::JoinHandle<()>> = Default::default();
        while let Some(room) = requests.recv().await {
            running.retain(|_, task| !task.is_finished());
            if running.contains_key(&room) {
                tracing::debug!(%room, "the SFU for this room is still on its way");
                continue;
            }
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
                internal_key: Some(self.key.clone()),
            };
            let name = room.clone();
            let task = tokio::spawn(async move {
                if let Err(err) = run_room(options).await {
                    warn!(room = %name, "the SFU for this room stopped: {err:#}");
                }
            });
            running.insert(room, task);
        }
    }
}
