//! A real coturn (Debian's `turnserver`), configured from the repository's
//! own `turn-config/dev.conf.in`, started and stopped by the tests.

use crate::require_loopback_namespace;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The coturn binary.
pub const TURNSERVER: &str = "/usr/bin/turnserver";

/// Longest wait for coturn to answer (it is ready ~0.2 s after start).
const READY: Duration = Duration::from_secs(10);

/// Relay ports a test's coturn may use.
const RELAY_PORTS: (u16, u16) = (50_000, 50_999);

/// A running coturn; dropping it stops it and removes its directory.
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    dir: PathBuf,
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// Everything it logged, for failure messages.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The command line, for a restart.
    argv: Vec<String>,
}

impl Coturn {
    /// Starts coturn on 127.0.0.1, accepting `secrets`.
    pub async fn start(secrets: &[&str]) -> Self {
        require_loopback_namespace();
        Self::start_with(secrets, "127.0.0.1", &[], &[]).await
    }

    /// Starts coturn on `ip`, prefixed by `runner` (for example
    /// `["ip", "netns", "exec", "public"]`), with `extra` configuration lines.
    pub async fn start_with(secrets: &[&str], ip: &str, runner: &[&str], extra: &[&str]) -> Self {
        assert!(std::path::Path::new(TURNSERVER).exists(), "{TURNSERVER} is missing: scripts/test installs coturn");
        let port = crate::free_port();
        let dir = std::env::temp_dir().join(format!("switchboard-coturn-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("coturn directory");
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../turn-config/dev.conf.in"),
        )
        .expect("turn-config/dev.conf.in");
        let secret_lines: String = secrets.iter().map(|s| format!("static-auth-secret={s}\n")).collect();
        let config = template
            .replace("@IP@", ip)
            .replace("@PORT@", &port.to_string())
            .replace("@MIN_PORT@", &RELAY_PORTS.0.to_string())
            .replace("@MAX_PORT@", &RELAY_PORTS.1.to_string())
            .replace("@DIR@", &dir.display().to_string())
            .replace("@SECRETS@", &secret_lines)
            + &extra.iter().map(|l| format!("{l}\n")).collect::<String>();
        let path = dir.join("turnserver.conf");
        std::fs::write(&path, config).expect("coturn config");
        let mut argv: Vec<String> = runner.iter().map(|s| (*s).to_string()).collect();
        argv.extend(["stdbuf".into(), "-oL".into(), TURNSERVER.into(), "-c".into(), path.display().to_string()]);
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let child = spawn(&argv, &log);
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
        let coturn = Self { child, dir, addr, log, argv };
        if runner.is_empty() {
            coturn.wait_ready().await;
        } else {
            coturn.wait_ready_in(runner).await;
        }
        coturn
    }

    /// Starts it again after [`Coturn::kill`], on the same address with the
    /// same configuration (on loopback only).
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.argv, &self.log);
        self.wait_ready().await;
    }

    /// Waits until coturn answers coturn's own STUN client, run through
    /// `runner` (coturn is in a namespace this process cannot reach).
    async fn wait_ready_in(&self, runner: &[&str]) {
        let deadline = tokio::time::Instant::now() + READY;
        let (ip, port) = (self.addr.ip().to_string(), self.addr.port().to_string());
        loop {
            let out = tokio::process::Command::new(runner[0])
                .args(&runner[1..])
                .args(["timeout", "1", "turnutils_stunclient", "-p", &port, &ip])
                .output()
                .await
                .expect("turnutils_stunclient runs");
            if String::from_utf8_lossy(&out.stdout).contains("reflexive addr") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "coturn did not answer; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until coturn answers a STUN binding.
    pub async fn wait_ready(&self) {
        let url = self.stun_url();
        let deadline = tokio::time::Instant::now() + READY;
        loop {
            let answer = switchboard_peer::turn_check::stun_binding(&url, self.addr).await;
            if matches!(answer, Ok(ref d) if d.ok()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "coturn did not answer; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `turn:ip:port?transport=udp`.
    pub fn url(&self) -> String {
        format!("turn:{}?transport=udp", self.addr)
    }

    /// `stun:ip:port`.
    pub fn stun_url(&self) -> String {
        format!("stun:{}", self.addr)
    }

    /// What coturn logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }

    /// Stops coturn now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(argv: &[String], log: &std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> Child {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("coturn starts");
    let stdout = child.stdout.take().expect("stdout");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
        }
    });
    child
}
