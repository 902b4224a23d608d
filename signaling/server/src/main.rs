//! `switchboard`: run the signaling server, or mint a join token.

use clap::Parser;
use std::process::ExitCode;
use switchboard_core::{Claims, check_claims, mint_token};
use switchboard_server::config::{Cli, Command};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.serve.load_file().and_then(|file| cli.serve.resolve(file)) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("switchboard: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token { room, identity, ttl }) = cli.command {
        let Some(secret) = settings.auth_secret else {
            eprintln!("switchboard: token needs --auth-secret or SWITCHBOARD_AUTH_SECRET");
            return ExitCode::from(2);
        };
        let exp = (switchboard_server::clock::now().unix_ms / 1000).saturating_add(ttl);
        let claims = Claims { room, sub: identity, exp, ..Claims::default() };
        // Never mint what the server would refuse.
        if let Err(why) = check_claims(&claims) {
            eprintln!("switchboard: {why}");
            return ExitCode::from(2);
        }
        println!("{}", mint_token(secret.as_bytes(), &claims));
        return ExitCode::SUCCESS;
    }
    switchboard_server::telemetry::init_logging(&settings);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = settings.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("switchboard: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: switchboard_server::config::Settings) -> anyhow::Result<()> {
    let open = settings.auth_secret.is_none();
    let server = switchboard_server::start(settings).await?;
    info!(addr = %server.local_addr(), open_rooms = open, "listening");
    if open {
        warn!(
            "OPEN ROOMS: there is no auth secret, so anyone who can reach {} can join any room and read its chat. \
             Fine on a laptop; anywhere else set --auth-secret",
            server.local_addr()
        );
    }
    shutdown_signal().await;
    info!("shutting down");
    server.shutdown().await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
