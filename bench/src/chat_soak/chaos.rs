//! Connection churn: one TCP proxy gate per member between it and the
//! server, and the seeded plan of when each member's connection is cut.
//!
//! A gate copies bytes both ways and keeps a handle on every live
//! connection through it. A cut resets both TCP halves at once (zero
//! linger, so an RST rather than an orderly close, and whatever the proxy
//! held in flight is gone), as a failing network would: the server sees its
//! socket fail, the client sees its socket end, reconnects through the same
//! gate and resumes. One gate per member, on its own port, so that the
//! proxy knows whose connection it is without reading the HTTP upgrade.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Live connections one gate keeps. A member holds one, and briefly a
/// second while it reconnects; past the bound a new connection is closed at
/// once (the member sees a failed attempt and retries).
pub const LINKS_PER_GATE: usize = 8;

/// Cut requests queued for a gate; the soak sends one at a time.
const CUT_QUEUE: usize = 4;

/// Longest wait for the connection to the server; past it the member's
/// connection is closed and it retries.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept (out of file descriptors), so that the gate
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A proxy for one member's connections, on a free loopback port.
#[derive(Debug)]
pub struct Gate {
    addr: SocketAddr,
    cuts: mpsc::Sender<oneshot::Sender<usize>>,
    task: JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        // The task owns the links; they are reset as it goes.
        self.task.abort();
    }
}

impl Gate {
    /// Listens on 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn open(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (cuts, requests) = mpsc::channel(CUT_QUEUE);
        let task = tokio::spawn(serve(listener, upstream, requests));
        Ok(Self { addr, cuts, task })
    }

    /// Where the member connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every live connection through the gate; returns how many
    /// there were (0: the member was between connections).
    pub async fn cut(&self) -> usize {
        let (reply, count) = oneshot::channel();
        if self.cuts.send(reply).await.is_err() {
            return 0;
        }
        count.await.unwrap_or(0)
    }
}

/// One proxied connection: dropping `cut` (or sending on it) resets it.
struct Link {
    cut: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The gate's task: owns the listener and the links.
async fn serve(listener: TcpListener, upstream: SocketAddr, mut requests: mpsc::Receiver<oneshot::Sender<usize>>) {
    let mut links: Vec<Link> = Vec::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                links.retain(|l| !l.task.is_finished());
                if links.len() >= LINKS_PER_GATE {
                    continue;
                }
                let (cut, cut_rx) = oneshot::channel();
                links.push(Link { cut, task: tokio::spawn(relay(client, upstream, cut_rx)) });
            }
            request = requests.recv() => {
                let Some(reply) = request else { break };
                let mut count = 0;
                for link in links.drain(..).filter(|l| !l.task.is_finished()) {
                    count += 1;
                    let _ = link.cut.send(());
                }
                let _ = reply.send(count);
            }
        }
    }
}

/// Copies bytes both ways until either side closes or the link is cut.
async fn relay(mut client: TcpStream, upstream: SocketAddr, mut cut: oneshot::Receiver<()>) {
    let connect = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream));
    let mut server = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(server)) => server,
            Ok(Err(_)) | Err(_) => return,
        },
        _ = &mut cut => {
            reset(&client);
            return;
        }
    };
    // Signaling frames are small and must go at once, as without the proxy.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut_now = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = &mut cut => true,
    };
    if cut_now {
        reset(&client);
        reset(&server);
    }
}

/// Makes the coming close of `socket` an RST that discards unsent data.
fn reset(socket: &TcpStream) {
    let _ = socket.set_zero_linger();
}

/// When members' connections are cut: for each of `members` members,
/// exponential gaps with mean `mean` (a Poisson process, so cuts land at
/// any point of the protocol, including mid-reconnect) within `duration`,
/// drawn from `seed`. Sorted by time; each entry is (offset, member index).
/// A zero mean plans no cuts.
pub fn cut_plan(seed: u64, members: usize, mean: Duration, duration: Duration) -> Vec<(Duration, usize)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan = Vec::new();
    if mean.is_zero() {
        return plan;
    }
    for member in 0..members {
        let mut at = Duration::ZERO;
        loop {
            // 1 - u is in (0, 1], so the logarithm is finite and <= 0.
            let gap = -mean.as_secs_f64() * (1.0 - rng.random::<f64>()).ln();
            at += Duration::from_secs_f64(gap);
            if at >= duration {
                break;
            }
            plan.push((at, member));
        }
    }
    plan.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_plan_is_seeded_sorted_and_near_its_mean() {
        let (mean, duration) = (Duration::from_secs(10), Duration::from_secs(1000));
        let plan = cut_plan(7, 20, mean, duration);
        assert_eq!(plan, cut_plan(7, 20, mean, duration), "same seed, same plan");
        assert_ne!(plan, cut_plan(8, 20, mean, duration));
        assert!(plan.windows(2).all(|w| w[0] <= w[1]));
        assert!(plan.iter().all(|(at, m)| *at < duration && *m < 20));
        // 20 members x 100 expected cuts each.
        assert!((1800..2200).contains(&plan.len()), "{}", plan.len());
        assert!(cut_plan(7, 20, Duration::ZERO, duration).is_empty());
    }

    #[tokio::test]
    async fn a_cut_resets_both_halves_and_the_next_connection_passes() {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let gate = Gate::open(upstream.local_addr().unwrap()).await.unwrap();
        let mut client = TcpStream::connect(gate.addr()).await.unwrap();
        client.write_all(b"hi").await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        assert_eq!(gate.cut().await, 1);
        let wait = Duration::from_secs(5);
        let ended = |r: std::io::Result<usize>| matches!(r, Ok(0) | Err(_));
        assert!(ended(tokio::time::timeout(wait, client.read(&mut buf)).await.unwrap()), "client side ends");
        assert!(ended(tokio::time::timeout(wait, server.read(&mut buf)).await.unwrap()), "server side ends");
        assert_eq!(gate.cut().await, 0, "nothing left to cut");

        let mut again = TcpStream::connect(gate.addr()).await.unwrap();
        again.write_all(b"ok").await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }
}
