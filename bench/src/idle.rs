//! Server memory per idle connection: open N joined connections that then
//! stay silent, and read the server's resident set size.

use crate::process::ServerProc;
use crate::target::{Endpoint, Kind, Ws};
use futures_util::StreamExt;
use std::time::Duration;

/// Connections opened at once while filling up.
pub const CONNECT_CONCURRENCY: usize = 200;
/// Participants per room in the Switchboard runs.
pub const ROOM_SIZE: usize = 8;
/// Time given to the server (and Node's GC) to settle before reading RSS.
pub const SETTLE: Duration = Duration::from_secs(2);

/// RSS at one connection count.
#[derive(Debug, Clone, Copy)]
pub struct IdlePoint {
    /// Open connections.
    pub connections: usize,
    /// Server RSS, bytes.
    pub rss: u64,
    /// (RSS - RSS with no connections) / connections.
    pub per_connection: f64,
}

/// Fills the server up to each of `steps` connections.
pub async fn run(ep: Endpoint, server: &ServerProc, steps: &[usize]) -> anyhow::Result<(u64, Vec<IdlePoint>)> {
    tokio::time::sleep(SETTLE).await;
    let base = server.rss()?;
    let mut held: Vec<Ws> = Vec::new();
    let mut points = Vec::new();
    for &target in steps {
        let start = held.len();
        let joined: Vec<anyhow::Result<(Ws, String)>> = futures_util::stream::iter(start..target)
            .map(|i| async move {
                let room = match ep.kind {
                    Kind::Switchboard => format!("idle{}", i / ROOM_SIZE),
                    Kind::PeerJs => String::new(),
                };
                ep.join(&room, &format!("idle{i}")).await
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        for j in joined {
            held.push(j?.0);
        }
        tokio::time::sleep(SETTLE).await;
        let rss = server.rss()?;
        points.push(IdlePoint {
            connections: target,
            rss,
            per_connection: (rss.saturating_sub(base)) as f64 / target as f64,
        });
    }
    drop(held);
    Ok((base, points))
}
