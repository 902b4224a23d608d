//! Relay latency at a fixed open-loop rate: senders send on a schedule
//! whatever the replies do, each frame carries its send time, and receivers
//! in the same process record the difference.

use crate::target::{Endpoint, Ws, sample_candidate};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

/// What one run measured.
#[derive(Debug)]
pub struct LatencyRun {
    /// Latencies in microseconds (after the warm-up).
    pub histogram: Histogram<u64>,
    /// Messages relayed in the measured window.
    pub messages: u64,
    /// Server CPU over the measured window (every process `cpu` counts).
    pub server_cpu: Duration,
}

/// Reads the CPU time used so far by the server side (one process, or a
/// cluster's nodes and Redis together).
pub type CpuReader<'a> = &'a dyn Fn() -> anyhow::Result<Duration>;

const MARK: &str = " xb";

/// `rate` messages/s over `pairs` pairs for `warmup + measure`, each pair
/// joined to `ep`.
pub async fn run(
    ep: Endpoint,
    cpu: CpuReader<'_>,
    pairs: usize,
    rate: u32,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LatencyRun> {
    run_across(ep, ep, cpu, pairs, rate, warmup, measure).await
}

/// As [`run`], with each pair's sender joined to `from` and its receiver
/// to `to` (two nodes of a cluster: every relay crosses between them).
pub async fn run_across(
    from: Endpoint,
    to: Endpoint,
    cpu: CpuReader<'_>,
    pairs: usize,
    rate: u32,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LatencyRun> {
    let ep = from;
    let mut sockets = Vec::with_capacity(pairs);
    for i in 0..pairs {
        sockets.push(from.pair_with(&to, 1000 + i).await?);
    }
    let base = Instant::now();
    let measure_from = base + warmup;
    let end = measure_from + measure;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let period = Duration::from_secs_f64(pairs as f64 / f64::from(rate));
    let mut tasks = Vec::new();
    for (a, b, b_id) in sockets {
        tasks.push(tokio::spawn(send(ep, a, b_id, base, period, end)));
        tasks.push(tokio::spawn(receive(b, base, measure_from, end, histogram.clone())));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = cpu()?;
    tokio::time::sleep_until(end.into()).await;
    let server_cpu = cpu()? - cpu0;
    for task in tasks {
        task.await??;
    }
    let histogram = Arc::try_unwrap(histogram).map_err(|_| anyhow::anyhow!("histogram still shared"))?.into_inner();
    let messages = histogram.len();
    Ok(LatencyRun { histogram, messages, server_cpu })
}

async fn send(
    ep: Endpoint,
    mut ws: Ws,
    to: String,
    base: Instant,
    period: Duration,
    end: Instant,
) -> anyhow::Result<()> {
    let line = sample_candidate();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        // The actual send time, fixed width so every frame has one size.
        let nanos = now.duration_since(base).as_nanos();
        let frame = ep.candidate(&to, &format!("{line}{MARK}{nanos:020}"));
        ws.send(Message::text(frame)).await?;
    }
    // Keep the socket open until receivers are done with the tail.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn receive(
    mut ws: Ws,
    base: Instant,
    measure_from: Instant,
    end: Instant,
    histogram: Arc<Mutex<Histogram<u64>>>,
) -> anyhow::Result<()> {
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let stop = end + Duration::from_millis(300);
    loop {
        let next = tokio::time::timeout_at(stop.into(), ws.next()).await;
        let Ok(Some(Ok(Message::Text(text)))) = next else { break };
        let now = Instant::now();
        let Some(at) = text.find(MARK) else { continue };
        let Some(digits) = text.get(at + MARK.len()..at + MARK.len() + 20) else { continue };
        let sent = base + Duration::from_nanos(digits.parse()?);
        if sent >= measure_from && sent < end {
            local.record(u64::try_from(now.duration_since(sent).as_micros()).unwrap_or(u64::MAX).max(1))?;
        }
    }
    histogram.lock().await.add(&local)?;
    Ok(())
}
