//! `switchboard`: run the signaling server, or mint a join token.

use clap::Parser;
use std::process::ExitCode;
use switchboard_core::{Claims, check_claims, mint_token};
use switchboard_server::config::{Cli, Command};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Drain { url, token }) = &cli.command {
        return match request_drain(url, token.as_deref()) {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("switchboard: drain: {err}");
                ExitCode::FAILURE
            }
        };
    }
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
    let mut signals = Signals::install();
    let server = switchboard_server::start(settings).await?;
    info!(addr = %server.local_addr(), open_rooms = open, "listening");
    if open {
        warn!(
            "OPEN ROOMS: there is no auth secret, so anyone who can reach {} can join any room and read its chat. \
             Fine on a laptop; anywhere else set --auth-secret",
            server.local_addr()
        );
    }
    // Signals that end the drain at once: the second one. After a drain
    // asked for over HTTP (an orchestrator's pre-stop hook, followed by its
    // SIGTERM), the SIGTERM joins the drain and only a later one cuts it.
    let mut signals_to_exit = 2;
    tokio::select! {
        () = signals.next() => signals_to_exit -= 1,
        () = server.drain_requested() => {}
    }
    // A drain first (a cluster's rooms move to other nodes), then the
    // shutdown.
    info!("draining, then shutting down (signal again to exit at once)");
    let stopped = async {
        server.drain().await;
        server.shutdown().await
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            result = &mut stopped => return result,
            () = signals.next() => {
                signals_to_exit -= 1;
                if signals_to_exit == 0 {
                    warn!("second signal: exiting now");
                    return Ok(());
                }
                info!("signal received: the drain goes on (signal again to exit at once)");
            }
        }
    }
}

/// SIGTERM and SIGINT, installed once at start (so that a second one is
/// never missed between two waits).
struct Signals {
    listening: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Self { listening: Some((term, int)) },
            _ => {
                error!("cannot install signal handlers; stop with SIGKILL");
                Self { listening: None }
            }
        }
    }

    async fn next(&mut self) {
        let Some((term, int)) = &mut self.listening else { return std::future::pending().await };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// `switchboard drain`: `POST /v1/drain` to a running node (plain HTTP:
/// the operator endpoint is reached on the node itself, not through TLS).
fn request_drain(url: &str, token: Option<&str>) -> Result<String, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("--url must be http://HOST:PORT (the node itself)")?;
    let host = rest.trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| format!("connecting to {host}: {e}"))?;
    let timeout = Some(std::time::Duration::from_secs(10));
    let _ = stream.set_read_timeout(timeout);
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request =
        format!("POST /v1/drain HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("sending: {e}"))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("reading the answer: {e}"))?;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_owned();
    if status.contains(" 202 ") { Ok(body) } else { Err(format!("{status}: {body}")) }
}
