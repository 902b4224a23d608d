//! `switchboard-sfu`: forward media for one SFU room of a Switchboard server.

use clap::Parser;
use switchboard_rtc::RtcOptions;
use switchboard_sfu::{SfuOptions, run_room};

#[derive(Debug, Parser)]
#[command(name = "switchboard-sfu", version, about = "sfu-lite: forward media for one SFU room")]
struct Cli {
    /// Signaling URL.
    #[arg(default_value = "ws://127.0.0.1:8080/v1/ws")]
    url: String,
    /// The SFU room to serve.
    #[arg(long)]
    room: String,
    /// A join token with `"role": "sfu"` for that room.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: String,
    /// Gather loopback candidates only (tests and local demos).
    #[arg(long)]
    loopback_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rtc = RtcOptions { loopback_only: cli.loopback_only, relay_only: false };
    run_room(SfuOptions { url: cli.url, room: cli.room, token: cli.token, rtc, internal_key: None }).await
}
