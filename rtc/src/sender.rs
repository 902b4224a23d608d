//! Sending on one data channel with backpressure: a sender waits while more
//! than [`HIGH_WATER`] bytes are queued in the SCTP association, so a fast
//! producer can never grow the peer's memory without bound.

use anyhow::Context;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{Notify, OnceCell};
use webrtc::data_channel::RTCDataChannel;

/// Bytes queued in a channel above which `send` waits.
pub const HIGH_WATER: usize = 1024 * 1024;
/// Queued bytes at which a waiting `send` resumes.
pub const LOW_WATER: usize = 256 * 1024;

/// A handle that sends on one data channel of one link.
#[derive(Clone)]
pub struct ChannelSender {
    dc: Arc<RTCDataChannel>,
    drained: Arc<Notify>,
    /// The low-water callback is attached on the first send, when the channel
    /// is open: webrtc-rs 0.17.2 keeps a callback set before opening only for
    /// channels it dials, and drops it for channels announced by the remote.
    armed: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSender").field("label", &self.dc.label()).finish()
    }
}

impl ChannelSender {
    /// A sender for `dc`.
    pub fn new(dc: Arc<RTCDataChannel>) -> Self {
        Self { dc, drained: Arc::new(Notify::new()), armed: Arc::new(OnceCell::new()) }
    }

    async fn arm(&self) {
        self.armed
            .get_or_init(|| async {
                self.dc.set_buffered_amount_low_threshold(LOW_WATER).await;
                let notify = self.drained.clone();
                self.dc
                    .on_buffered_amount_low(Box::new(move || {
                        let notify = notify.clone();
                        Box::pin(async move { notify.notify_waiters() })
                    }))
                    .await;
            })
            .await;
    }

    async fn wait_for_room(&self) {
        self.arm().await;
        loop {
            let drained = self.drained.notified();
            if self.dc.buffered_amount().await <= HIGH_WATER {
                return;
            }
            drained.await;
        }
    }

    /// Sends binary data, waiting while the channel is backed up.
    pub async fn send(&self, data: Bytes) -> anyhow::Result<()> {
        self.wait_for_room().await;
        self.dc.send(&data).await.context("sending on a data channel")?;
        Ok(())
    }

    /// Sends text, waiting while the channel is backed up.
    pub async fn send_text(&self, text: String) -> anyhow::Result<()> {
        self.wait_for_room().await;
        self.dc.send_text(text).await.context("sending on a data channel")?;
        Ok(())
    }
}
