//! `switchboard-peer`: join a room from the command line.
//!
//! Lines typed on stdin go to every participant on the reliable `chat` data
//! channel; `/state TEXT` uses the unreliable `state` channel and `/room TEXT`
//! the room chat on the signaling socket. End of input leaves the room.

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_peer::{Channel, MediaSource, Peer, PeerEvent, PeerOptions, RtcOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
#[command(name = "switchboard-peer", version, about = "Headless WebRTC peer for Switchboard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a room and talk to everyone in it.
    Join {
        /// Signaling URL.
        #[arg(default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// Room to join.
        #[arg(long, default_value = "demo")]
        room: String,
        /// Display name.
        #[arg(long, default_value = "headless")]
        name: String,
        /// Join token (servers with an auth secret).
        #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Gather loopback candidates only, mDNS off (tests and local demos).
        #[arg(long)]
        loopback_only: bool,
        /// Print events as JSON lines.
        #[arg(long)]
        json: bool,
        /// VP8 video to send, as IVF [default: the built-in test pattern].
        #[arg(long)]
        video: Option<std::path::PathBuf>,
        /// Opus audio to send, as Ogg with one packet per page [default: the built-in tone].
        #[arg(long)]
        audio: Option<std::path::PathBuf>,
        /// Send no media (data channels only).
        #[arg(long, conflicts_with_all = ["video", "audio"])]
        no_media: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Command::Join { url, room, name, token, loopback_only, json, video, audio, no_media } = Cli::parse().command;
    let media = match (no_media, video, audio) {
        (true, _, _) => MediaSource::None,
        (false, None, None) => MediaSource::Default,
        (false, video, audio) => {
            let read = |p: Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                p.map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display()))).transpose()
            };
            MediaSource::Files { video: read(video)?, audio: read(audio)? }
        }
    };
    let rtc = RtcOptions { loopback_only };
    let mut peer = Peer::join(PeerOptions { url, room, name, token, rtc, media }).await?;
    let w = &peer.welcome;
    print_line(json, "joined", &serde_json::json!({ "room": w.room, "you": w.you.id, "peers": w.peers.len() }), || {
        format!("joined {} as {} with {} other participant(s)", w.room, w.you.id, w.peers.len())
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                let result = if let Some(text) = line.strip_prefix("/state ") {
                    peer.send(Channel::State, text).await.map(|_| ())
                } else if let Some(text) = line.strip_prefix("/room ") {
                    peer.chat(text).await
                } else {
                    peer.send(Channel::Chat, line).await.map(|_| ())
                };
                if let Err(err) = result {
                    eprintln!("send failed: {err:#}");
                }
            }
            event = peer.events.recv() => {
                let Some(event) = event else { break };
                print_event(json, &event);
            }
        }
    }
    peer.leave().await;
    Ok(())
}

fn print_line(json: bool, kind: &str, fields: &serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        let mut obj = fields.clone();
        obj["event"] = serde_json::Value::from(kind);
        println!("{obj}");
    } else {
        println!("{}", human());
    }
}

fn print_event(json: bool, event: &PeerEvent) {
    use serde_json::json;
    match event {
        PeerEvent::PeerJoined(p) => {
            print_line(json, "peer_joined", &json!({ "peer": p.id, "name": p.name }), || {
                format!("+ {} ({}) joined", p.name, p.id)
            });
        }
        PeerEvent::PeerLeft { remote, reason } => {
            print_line(json, "peer_left", &json!({ "peer": remote, "reason": reason }), || {
                format!("- {remote} left ({})", reason.as_str())
            });
        }
        PeerEvent::ConnectionState { remote, state } => {
            print_line(json, "connection", &json!({ "peer": remote, "state": state }), || {
                format!("  {remote}: {state}")
            });
        }
        PeerEvent::ChannelOpen { remote, channel } => {
            print_line(json, "channel_open", &json!({ "peer": remote, "channel": channel.label() }), || {
                format!("  {remote}: {} channel open", channel.label())
            });
        }
        PeerEvent::TrackStarted { remote, kind, codec } => {
            print_line(json, "track", &json!({ "peer": remote, "kind": kind, "codec": codec }), || {
                format!("  {remote}: receiving {kind} ({codec})")
            });
        }
        PeerEvent::Data { remote, channel, text } => {
            print_line(json, "data", &json!({ "peer": remote, "channel": channel.label(), "text": text }), || {
                format!("[{} {remote}] {text}", channel.label())
            });
        }
        PeerEvent::Chat(c) => {
            print_line(json, "chat", &json!({ "seq": c.seq, "from": c.from, "name": c.name, "text": c.text }), || {
                format!("#{} {}: {}", c.seq, c.name, c.text)
            });
        }
        PeerEvent::Error { remote, message } => {
            print_line(json, "error", &json!({ "peer": remote, "message": message }), || format!("! {message}"));
        }
        PeerEvent::SignalingClosed => {
            print_line(json, "signaling_closed", &json!({}), || "! signaling connection closed; links stay up".into());
        }
    }
}
