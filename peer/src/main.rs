//! `switchboard-peer`: join a room from the command line.
//!
//! Lines typed on stdin go to every participant on the reliable `chat` data
//! channel; `/state TEXT` uses the unreliable `state` channel and `/room TEXT`
//! the room chat on the signaling socket. End of input leaves the room,
//! unless `--duration` says how long to stay (a peer run in the background
//! has no input). SIGINT and SIGTERM leave the room too, so the others see
//! `left` at once instead of `reconnecting` for the resume grace.
//!
//! `turn-check` diagnoses STUN and TURN: see [`switchboard_peer::turn_check`].

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
        /// Connect through TURN only (relay candidates), e.g. to prove the relay works.
        #[arg(long)]
        relay_only: bool,
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
        /// Send back whatever media arrives (an echo).
        #[arg(long, conflicts_with_all = ["video", "audio", "no_media"])]
        reflect: bool,
        /// Record every remote track into this directory (VP8 as IVF, Opus as Ogg).
        #[arg(long)]
        record: Option<std::path::PathBuf>,
        /// Print each link's stats (bitrate, loss, jitter, RTT) this often, seconds; 0: never.
        #[arg(long, default_value_t = 0)]
        stats: u64,
        /// Do not reconnect after a signaling drop (by default: backoff from 0.5 s doubling to 15 s,
        /// with jitter, and resume the session).
        #[arg(long)]
        no_reconnect: bool,
        /// Leave the room after this many seconds; stdin is then not read
        /// for chat and its end does not leave (for scripts and load runs).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Check STUN and TURN: a binding and an authenticated allocation per
    /// server, with a diagnosis. Exits 1 when any check fails.
    TurnCheck {
        /// The signaling server (`ws://host/v1/ws` or `https://host`): check
        /// the servers it hands out, with credentials from its
        /// /v1/turn-credentials. Or one `stun:`/`turn:` URL.
        target: String,
        /// Join token for the credentials endpoint (servers with an auth secret).
        #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// TURN username (with a turn: URL).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// TURN password (with a turn: URL).
        #[arg(long, requires = "username")]
        password: Option<String>,
        /// coturn's static-auth-secret: mint credentials here (with a turn: URL).
        #[arg(long, env = "SWITCHBOARD_TURN_SECRET", hide_env_values = true, conflicts_with = "username")]
        secret: Option<String>,
        /// Lifetime of minted credentials, seconds.
        #[arg(long, default_value_t = 600)]
        ttl: u64,
        /// Print one JSON object per check.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    let Command::Join {
        url,
        room,
        name,
        token,
        loopback_only,
        relay_only,
        json,
        video,
        audio,
        no_media,
        reflect,
        stats,
        record,
        no_reconnect,
        duration,
    } = command
    else {
        let Command::TurnCheck { target, token, username, password, secret, ttl, json } = command else {
            unreachable!("two commands")
        };
        let all_ok = turn_check(&target, token, username.zip(password), secret, ttl, json).await?;
        std::process::exit(if all_ok { 0 } else { 1 });
    };
    let media = match (no_media, video, audio) {
        _ if reflect => MediaSource::Reflect,
        (true, _, _) => MediaSource::None,
        (false, None, None) => MediaSource::Default,
        (false, video, audio) => {
            let read = |p: Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                p.map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display()))).transpose()
            };
            MediaSource::Files { video: read(video)?, audio: read(audio)? }
        }
    };
    let stay = duration
        .map(|s| {
            std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--duration is a positive number of seconds")
        })
        .transpose()?;
    // Installed before joining: a signal that comes while joining leaves
    // as soon as the peer is in, instead of killing it with its seat held.
    let mut stopping = std::pin::pin!(stop_signal()?);
    let rtc = RtcOptions { loopback_only, relay_only };
    let reconnect = (!no_reconnect).then(switchboard_peer::ReconnectPolicy::default);
    let mut peer = Peer::join(PeerOptions { url, room, name, token, rtc, media, record, reconnect }).await?;
    let w = &peer.welcome;
    let (ws_ms, welcome_ms) = (ms(peer.connected_after), ms(peer.welcome_after));
    let fields = serde_json::json!({
        "room": w.room, "you": w.you.id, "peers": w.peers.len(), "ws_connected_ms": ws_ms, "welcome_ms": welcome_ms,
    });
    print_line(json, "joined", &fields, || {
        format!(
            "joined {} as {} with {} other participant(s) (WebSocket {ws_ms:.1} ms, welcome {welcome_ms:.1} ms)",
            w.room,
            w.you.id,
            w.peers.len()
        )
    });
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(stats.max(1)));
    tick.tick().await;
    let mut last_bytes: std::collections::HashMap<(String, &'static str), u64> = std::collections::HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let until = tokio::time::sleep(stay.unwrap_or(std::time::Duration::MAX / 4));
    tokio::pin!(until);
    let reason = loop {
        tokio::select! {
            () = &mut until, if stay.is_some() => break "duration",
            signal = &mut stopping => break signal,
            line = lines.next_line(), if stay.is_none() => {
                let Ok(Some(line)) = line else { break "end of input" };
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
                let Some(event) = event else { break "session ended" };
                print_event(json, &event);
            }
            _ = tick.tick(), if stats > 0 => {
                let Ok(reports) = peer.report().await else { break "session ended" };
                for r in reports {
                    for t in &r.tracks {
                        let key = (r.remote.to_string(), t.kind);
                        let before = last_bytes.insert(key, t.bytes).unwrap_or(0);
                        let kbps = (t.bytes.saturating_sub(before) * 8) as f64 / 1000.0 / stats as f64;
                        let rtt = r.rtt.map(ms);
                        let pair = r.selected_pair.as_ref().map(|(l, r)| format!("{l}-{r}"));
                        let fields = serde_json::json!({
                            "peer": r.remote, "kind": t.kind, "packets": t.packets, "lost": t.lost,
                            "kbps": kbps, "jitter_ms": t.jitter_us as f64 / 1000.0, "rtt_ms": rtt, "pair": pair,
                        });
                        print_line(json, "stats", &fields, || {
                            format!(
                                "  {} {}: {:.0} kbit/s, {} packets, {} lost, jitter {:.1} ms, RTT {}, path {}",
                                r.remote, t.kind, kbps, t.packets, t.lost, t.jitter_us as f64 / 1000.0,
                                rtt.map_or("-".into(), |v| format!("{v:.1} ms")),
                                pair.as_deref().unwrap_or("-")
                            )
                        });
                    }
                }
            }
        }
    };
    peer.leave().await;
    print_line(json, "left", &serde_json::json!({ "reason": reason }), || format!("left the room ({reason})"));
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves with
/// the name of the first that comes.
fn stop_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

/// Runs the checks and prints one line (or JSON object) each; true when
/// every check passed.
async fn turn_check(
    target: &str,
    token: Option<String>,
    credentials: Option<(String, String)>,
    secret: Option<String>,
    ttl: u64,
    json: bool,
) -> anyhow::Result<bool> {
    use switchboard_peer::turn_check;
    use switchboard_protocol::IceServer;
    let servers = if target.starts_with("stun:") || target.starts_with("turn:") || target.starts_with("turns:") {
        let (username, credential) = match (credentials, secret) {
            (Some((u, p)), _) => (Some(u), Some(p)),
            (None, Some(secret)) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
                let username = format!("{}:turn-check", now + ttl);
                let password = switchboard_protocol::turn_password::password(&secret, &username);
                (Some(username), Some(password))
            }
            (None, None) => (None, None),
        };
        vec![IceServer { urls: vec![target.to_string()], username, credential }]
    } else {
        let (url, token) = (target.to_string(), token);
        tokio::task::spawn_blocking(move || turn_check::fetch_credentials(&url, token.as_deref())).await??
    };
    if servers.is_empty() {
        anyhow::bail!("{target} hands out no STUN or TURN server");
    }
    let results = turn_check::check_all(&servers).await;
    for r in &results {
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!("{}", r.describe());
        }
    }
    Ok(results.iter().all(turn_check::Diagnosis::ok))
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints one line of output. A reader that went away (a closed pipe) is
/// not an error worth a panic: the peer carries on, and still leaves.
fn print_line(json: bool, kind: &str, fields: &serde_json::Value, human: impl FnOnce() -> String) {
    use std::io::Write as _;
    let line = if json {
        let mut obj = fields.clone();
        obj["event"] = serde_json::Value::from(kind);
        obj.to_string()
    } else {
        human()
    };
    let _ = writeln!(std::io::stdout(), "{line}");
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
        PeerEvent::Phase { remote, phase, at } => {
            print_line(json, "phase", &json!({ "peer": remote, "phase": phase, "ms": ms(*at) }), || {
                format!("  {remote}: {} at {:.1} ms", phase.name(), ms(*at))
            });
        }
        PeerEvent::TrackStarted { remote, kind, codec } => {
            print_line(json, "track", &json!({ "peer": remote, "kind": kind, "codec": codec }), || {
                format!("  {remote}: receiving {kind} ({codec})")
            });
        }
        PeerEvent::RecordingClosed { remote, path } => {
            print_line(json, "recording", &json!({ "peer": remote, "path": path }), || {
                format!("  {remote}: recorded {}", path.display())
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
        PeerEvent::IceRestarting { remote, attempt } => {
            print_line(json, "ice_restarting", &json!({ "peer": remote, "attempt": attempt }), || {
                format!("  {remote}: ICE down, restarting (attempt {attempt})")
            });
        }
        PeerEvent::IceRestarted { remote } => {
            print_line(json, "ice_restarted", &json!({ "peer": remote }), || format!("  {remote}: ICE restarted"));
        }
        PeerEvent::PeerReconnecting { remote, reconnecting } => {
            print_line(json, "peer_reconnecting", &json!({ "peer": remote, "reconnecting": reconnecting }), || {
                if *reconnecting { format!("~ {remote} is reconnecting") } else { format!("~ {remote} is back") }
            });
        }
        PeerEvent::Signaling(state) => {
            let (name, detail) = match state {
                switchboard_peer::SignalState::Connected => ("connected", String::new()),
                switchboard_peer::SignalState::Reconnecting { attempt, retry_in, reason } => {
                    ("reconnecting", format!("{reason}; attempt {} in {:.1} s", attempt + 1, retry_in.as_secs_f64()))
                }
                switchboard_peer::SignalState::Closed { reason } => ("closed", reason.clone()),
            };
            print_line(json, "signaling", &json!({ "state": name, "detail": detail }), || {
                format!("! signaling {name} {detail}")
            });
        }
        PeerEvent::SignalingResumed => {
            print_line(json, "signaling_resumed", &json!({}), || "! signaling resumed, nothing missed".into());
        }
        PeerEvent::Rejoined { id } => {
            print_line(json, "rejoined", &json!({ "id": id }), || format!("! joined afresh as {id}"));
        }
        PeerEvent::SignalingClosed => {
            print_line(json, "signaling_closed", &json!({}), || "! signaling connection closed; links stay up".into());
        }
    }
}
