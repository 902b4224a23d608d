//! A TCP proxy for fault tests: between clients and the server, it can
//! swallow what the server sends or cut every connection at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to the server that can swallow everything the server sends
/// (the client hears nothing, as on a dying network) and cut every
/// connection it carries.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    /// While set, nothing the server sends reaches the client.
    pub swallow: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    /// A proxy to `server` on a free loopback port.
    pub async fn start(server: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let swallow = Arc::new(AtomicBool::new(false));
        let (cut, cuts) = watch::channel(0u64);
        let swallowing = swallow.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server).await else { continue };
                tokio::spawn(carry(client, upstream, swallowing.clone(), cuts.clone()));
            }
        });
        Self { addr, swallow, cut }
    }

    /// Closes every connection carried so far.
    pub fn cut_all(&self) {
        self.swallow.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn carry(client: TcpStream, upstream: TcpStream, swallow: Arc<AtomicBool>, mut cut: watch::Receiver<u64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let up = tokio::io::copy(&mut client_read, &mut up_write);
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut up_read, &mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            if !swallow.load(Ordering::SeqCst) && client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    cut.borrow_and_update();
    tokio::select! {
        _ = up => {}
        () = down => {}
        _ = cut.changed() => {}
    }
}
