//! Chat resent after a resume is stored once, however many messages were
//! waiting for their echo: the peer reads the replay (which carries the
//! echoes of what the server did store) before it resends. Loopback-only
//! namespace only.

mod common;

use common::{require_loopback_namespace, server, wait_for};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchboard_peer::{MediaSource, Peer, PeerEvent, PeerOptions, ReconnectPolicy, RtcOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to the server that can swallow everything the server sends
/// (the client hears nothing, as on a dying network) and cut every
/// connection it carries.
struct Proxy {
    addr: std::net::SocketAddr,
    swallow: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(server: std::net::SocketAddr) -> Self {
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

    fn cut_all(&self) {
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

#[tokio::test]
async fn a_bot_with_many_unechoed_chats_at_a_drop_stores_each_once() {
    require_loopback_namespace();
    let srv = server().await;
    let proxy = Proxy::start(srv.local_addr()).await;
    let options = |url: String, name: &str| PeerOptions {
        media: MediaSource::None,
        record: None,
        reconnect: Some(ReconnectPolicy::default()),
        url,
        room: "resend".into(),
        name: name.into(),
        token: None,
        rtc: RtcOptions { loopback_only: true, relay_only: false },
    };
    let mut observer =
        Peer::join(options(format!("ws://{}/v1/ws", srv.local_addr()), "Observer")).await.expect("joins");
    let mut bot = Peer::join(options(format!("ws://{}/v1/ws", proxy.addr), "Bot")).await.expect("joins");
    let bot_id = bot.id().clone();
    wait_for(&mut observer, "the bot", |e| matches!(e, PeerEvent::PeerJoined { .. })).await;

    // The network starts dying: the bot hears nothing more, while what it
    // sends still arrives. It sends far more chat than the server
    // remembers client ids for (64), and sees none of the echoes.
    proxy.swallow.store(true, Ordering::SeqCst);
    const SENT: usize = 150;
    for i in 0..SENT {
        bot.chat(format!("m{i}")).await.expect("chat");
    }
    let mut stored = 0;
    while stored < SENT {
        let e = wait_for(&mut observer, "the bot's chat", |e| matches!(e, PeerEvent::Chat(_))).await;
        if matches!(&e, PeerEvent::Chat(c) if c.from == bot_id) {
            stored += 1;
        }
    }
    // Then the connection breaks; the bot resumes through a working one.
    proxy.cut_all();
    wait_for(&mut bot, "the resume", |e| matches!(e, PeerEvent::SignalingResumed)).await;
    // Nothing it sent is stored twice: after a marker from the observer, the
    // room has exactly the bot's 150 messages.
    observer.chat("marker").await.expect("chat");
    let mut again = 0;
    loop {
        let e = wait_for(&mut observer, "the marker", |e| matches!(e, PeerEvent::Chat(_))).await;
        match e {
            PeerEvent::Chat(c) if c.text == "marker" => break,
            PeerEvent::Chat(c) if c.from == bot_id => again += 1,
            _ => {}
        }
    }
    assert_eq!(again, 0, "messages stored a second time after the resume");
    // The bot itself saw every echo once (in the replay).
    let mut echoes = 0;
    while echoes < SENT {
        let e = wait_for(&mut bot, "the bot's echoes", |e| matches!(e, PeerEvent::Chat(_))).await;
        if matches!(&e, PeerEvent::Chat(c) if c.from == bot_id) {
            echoes += 1;
        }
    }
}
