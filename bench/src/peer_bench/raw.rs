//! The baseline: two webrtc-rs peer connections in one process, connected
//! directly (no signaling server), one reliable ordered data channel.

use anyhow::Context;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use webrtc::api::APIBuilder;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;

async fn pc() -> anyhow::Result<Arc<RTCPeerConnection>> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    let api = APIBuilder::new().with_media_engine(media).with_setting_engine(settings).build();
    Ok(Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?))
}

/// Sends `total` bytes in `chunk`-byte messages with the same backpressure
/// as the peer's `ChannelSender`; returns the time until all arrived.
pub async fn throughput(total: usize, chunk: usize) -> anyhow::Result<Duration> {
    let (a, b) = (pc().await?, pc().await?);
    let dc = a.create_data_channel("bulk", None).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (r, d) = (received.clone(), done.clone());
    b.on_data_channel(Box::new(move |channel: Arc<RTCDataChannel>| {
        let (r, d) = (r.clone(), d.clone());
        Box::pin(async move {
            channel.on_message(Box::new(move |msg: DataChannelMessage| {
                if r.fetch_add(msg.data.len(), Ordering::Relaxed) + msg.data.len() >= total {
                    d.notify_one();
                }
                Box::pin(async {})
            }));
        })
    }));
    let opened = Arc::new(Notify::new());
    let o = opened.clone();
    dc.on_open(Box::new(move || {
        o.notify_one();
        Box::pin(async {})
    }));
    // Offer/answer with complete candidate lists, in process.
    let offer = a.create_offer(None).await?;
    let mut gathered = a.gathering_complete_promise().await;
    a.set_local_description(offer).await?;
    let _ = gathered.recv().await;
    b.set_remote_description(a.local_description().await.context("offer")?).await?;
    let answer = b.create_answer(None).await?;
    let mut gathered = b.gathering_complete_promise().await;
    b.set_local_description(answer).await?;
    let _ = gathered.recv().await;
    a.set_remote_description(b.local_description().await.context("answer")?).await?;
    tokio::time::timeout(Duration::from_secs(20), opened.notified()).await.context("raw channel did not open")?;

    let drained = Arc::new(Notify::new());
    dc.set_buffered_amount_low_threshold(switchboard_peer::LOW_WATER).await;
    let dn = drained.clone();
    dc.on_buffered_amount_low(Box::new(move || {
        let dn = dn.clone();
        Box::pin(async move { dn.notify_waiters() })
    }))
    .await;
    let payload = Bytes::from(vec![b'x'; chunk]);
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        loop {
            let wait = drained.notified();
            if dc.buffered_amount().await <= switchboard_peer::HIGH_WATER {
                break;
            }
            wait.await;
        }
        dc.send(&payload).await?;
        sent += chunk;
    }
    tokio::time::timeout(Duration::from_secs(120), done.notified()).await.context("raw transfer did not finish")?;
    let elapsed = start.elapsed();
    let _ = a.close().await;
    let _ = b.close().await;
    Ok(elapsed)
}
