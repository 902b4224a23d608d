//! Server CPU per relayed message at full speed: pairs of clients, each
//! sender keeping a window of messages in flight to its partner.

use crate::process::ServerProc;
use crate::target::{Endpoint, Ws};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages in flight per pair: enough to keep the server busy, few enough
/// that no queue fills.
pub const WINDOW: u64 = 32;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct CpuRun {
    /// Messages relayed.
    pub messages: u64,
    /// Size of one frame as sent.
    pub frame_bytes: usize,
    /// Wall time.
    pub wall: Duration,
    /// Server user+system CPU time.
    pub server_cpu: Duration,
}

impl CpuRun {
    /// Server CPU per message, microseconds.
    pub fn us_per_message(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.messages as f64
    }

    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64()
    }
}

/// Relays `per_pair` frames across each of `pairs` pairs; `frame(to)` builds
/// the frame addressed to `to`.
pub async fn run(
    ep: Endpoint,
    server: &ServerProc,
    pairs: usize,
    per_pair: u64,
    frame: impl Fn(&str) -> String,
) -> anyhow::Result<CpuRun> {
    let mut sockets = Vec::with_capacity(pairs);
    for i in 0..pairs {
        sockets.push(ep.pair(i).await?);
    }
    let frame_bytes = frame("x").len();
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (a, b, b_id) in sockets {
        let received = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let text = Utf8Bytes::from(frame(&b_id));
        tasks.push(tokio::spawn(send(a, text, per_pair, received.clone(), progress.clone())));
        tasks.push(tokio::spawn(receive(b, per_pair, received, progress)));
    }
    for task in tasks {
        task.await??;
    }
    let wall = t0.elapsed();
    let server_cpu = server.cpu()? - cpu0;
    Ok(CpuRun { messages: per_pair * pairs as u64, frame_bytes, wall, server_cpu })
}

async fn send(
    mut ws: Ws,
    text: Utf8Bytes,
    total: u64,
    received: Arc<AtomicU64>,
    progress: Arc<Notify>,
) -> anyhow::Result<Ws> {
    let mut sent = 0;
    while sent < total {
        let burst = WINDOW.min(total - sent);
        for _ in 0..burst {
            ws.feed(Message::Text(text.clone())).await?;
        }
        ws.flush().await?;
        sent += burst;
        while received.load(Ordering::Acquire) + WINDOW / 2 < sent {
            progress.notified().await;
        }
    }
    Ok(ws)
}

async fn receive(mut ws: Ws, total: u64, received: Arc<AtomicU64>, progress: Arc<Notify>) -> anyhow::Result<Ws> {
    let mut n = 0;
    while n < total {
        match ws.next().await {
            Some(Ok(Message::Text(_))) => {
                n += 1;
                received.store(n, Ordering::Release);
                progress.notify_one();
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("receiver closed after {n} of {total}"),
        }
    }
    Ok(ws)
}
