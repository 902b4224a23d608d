//! The `switchboard` binary as an operator runs it: signals, logs, refusals.

mod common;

use common::{Client, WAIT, http_get};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use switchboard_core::{Claims, TokenVerifier, mint_token};
use switchboard_protocol::{RoomName, ServerMessage};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TURN_SECRET: &str = "LEAKCHECK-turn-secret-0123";
const SECRET: &str = "LOGLEAK-secret-0123456789-abcdefghijkl";

/// A running binary whose stderr lines are collected.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(BIN).args(args).env_remove("SWITCHBOARD_AUTH_SECRET"))
    }

    /// Starts the binary with at most `fds` open files (a small server, as
    /// some operators run it).
    fn start_with_fd_limit(fds: u32, args: &[&str]) -> Self {
        let script = format!(r#"ulimit -n {fds} && exec "$0" "$@""#);
        Self::spawn(Command::new("sh").arg("-c").arg(script).arg(BIN).args(args).env_remove("SWITCHBOARD_AUTH_SECRET"))
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Tests run side by side: each server's STUN gets its own port.
            .env("SWITCHBOARD_STUN_PORT", "0")
            .spawn()
            .expect("spawn switchboard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {needle:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn addr(&mut self) -> SocketAddr {
        let line = self.wait_for("listening");
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        json["addr"].as_str().expect("addr field").parse().expect("socket address")
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Collect the rest of the log.
                while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_millis(500)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "did not exit after SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn logs_never_contain_sdp_candidates_addresses_tokens_or_secrets() {
    let mut proc = Proc::start(&[
        "--bind",
        "127.0.0.1:0",
        "--auth-secret",
        SECRET,
        "--turn-secret",
        TURN_SECRET,
        "--turn-url",
        "turn:127.0.0.1:3479?transport=udp",
        "--log-format",
        "json",
        "--log",
        "info,switchboard_server=debug,switchboard_core=debug",
    ]);
    let addr = proc.addr();
    let exp = switchboard_server::clock::now().unix_ms / 1000 + 600;
    let token_a = mint_token(
        SECRET.as_bytes(),
        &Claims { room: "leak".into(), sub: "LOGLEAK-ident-a".into(), exp, ..Claims::default() },
    );
    let token_b = mint_token(
        SECRET.as_bytes(),
        &Claims { room: "leak".into(), sub: "LOGLEAK-ident-b".into(), exp, ..Claims::default() },
    );
    let mut a = Client::connect(addr).await;
    a.send(format!(r#"{{"type":"join","room":"leak","name":"LOGLEAK-name","token":"{token_a}"}}"#)).await;
    a.expect_welcome().await;
    let mut b = Client::connect(addr).await;
    b.send(format!(r#"{{"type":"join","room":"leak","name":"Bob","token":"{token_b}"}}"#)).await;
    let wb = b.expect_welcome().await;
    let to = wb.you.id;
    a.send(format!(r#"{{"type":"offer","to":"{to}","description":{{"type":"offer","sdp":"v=0\r\no=- LOGLEAK-SDP 2 IN IP4 203.0.113.9\r\n"}}}}"#)).await;
    a.send(format!(
        r#"{{"type":"candidate","to":"{to}","candidate":{{"candidate":"candidate:1 1 udp 1 198.51.100.77 50000 typ host","usernameFragment":"LOGLEAK-ufrag"}}}}"#
    ))
    .await;
    a.send(r#"{"type":"chat","client_id":"c1","text":"LOGLEAK-chat"}"#).await;
    // Bad input too: error paths must not echo payloads into the logs.
    a.send(r#"{"type":"offer","to":"pX","description":{"type":"offer","sdp":"LOGLEAK-bad-sdp 192.0.2.55"}}"#).await;
    a.send("{LOGLEAK-malformed 192.0.2.66").await;
    a.sync().await;
    b.recv_until("chat", |m| matches!(m, ServerMessage::Chat(_))).await;
    let status = proc.terminate();
    assert!(status.success(), "exit status {status}");
    let log = proc.seen.join("\n");
    assert!(log.contains("joined"), "the log should show activity:\n{log}");
    for line in &proc.seen {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let leaks =
            ["LOGLEAK", "203.0.113.9", "198.51.100.77", "192.0.2.", SECRET, TURN_SECRET, &token_a, &token_b, "v=0"];
        for secret in leaks {
            assert!(!line.contains(secret), "log leaks {secret:?}: {line}");
        }
        if line.contains("127.0.0.1") {
            // Only the server's own addresses may appear.
            let own = line.contains("listening") || line.contains("STUN server ready");
            assert!(own, "a client address reached the log: {line}");
        }
    }
}

#[tokio::test]
async fn sigterm_sends_going_away_and_exits_cleanly() {
    let mut proc = Proc::start(&["--bind", "127.0.0.1:0", "--log-format", "json"]);
    let addr = proc.addr();
    let mut a = Client::connect(addr).await;
    a.join("term", "a").await;
    let mut b = Client::connect(addr).await;
    b.join("term", "b").await;
    let status = tokio::task::spawn_blocking(move || {
        let status = proc.terminate();
        (status, proc)
    });
    for c in [&mut a, &mut b] {
        c.recv_until("going_away", |m| matches!(m, ServerMessage::GoingAway(_))).await;
        let close = c.expect_close().await.expect("close frame");
        assert_eq!(u16::from(close.code), 1001);
    }
    let (status, _proc) = status.await.expect("join");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn refuses_open_rooms_off_loopback() {
    // It never binds: the check runs before any socket is opened.
    let out =
        Command::new(BIN).args(["--bind", "0.0.0.0:0"]).env_remove("SWITCHBOARD_AUTH_SECRET").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve open rooms"), "{stderr}");
}

#[test]
fn an_empty_secret_is_refused_not_taken_for_open_rooms() {
    for (args, env) in [(&["--auth-secret", ""][..], None), (&[][..], Some("")), (&[][..], Some(&*" ".repeat(40)))] {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("SWITCHBOARD_AUTH_SECRET");
        if let Some(value) = env {
            command.env("SWITCHBOARD_AUTH_SECRET", value);
        }
        let out = command.output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("empty or blank"), "{stderr}");
    }
}

#[tokio::test]
async fn open_mode_is_announced_loudly_at_start() {
    let mut proc = Proc::start(&["--bind", "127.0.0.1:0", "--log-format", "json"]);
    proc.addr();
    let line = proc.wait_for("OPEN ROOMS");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn token_subcommand_mints_a_valid_token() {
    let out = Command::new(BIN)
        .args(["token", "--auth-secret", SECRET, "--room", "demo", "--identity", "ada", "--ttl", "60"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf8");
    let now_s = switchboard_server::clock::now().unix_ms / 1000;
    let claims = TokenVerifier::new(SECRET.as_bytes())
        .verify(token.trim(), &RoomName::new("demo").expect("room"), now_s)
        .expect("valid token");
    assert_eq!(claims.sub, "ada");
    assert!(claims.exp <= now_s + 61);
}

#[test]
fn token_subcommand_refuses_what_the_server_would_refuse() {
    let run = |args: &[&str]| {
        let mut all = vec!["token", "--auth-secret", SECRET];
        all.extend_from_slice(args);
        Command::new(BIN).args(&all).output().expect("run")
    };
    for args in [
        &["--room", "demo", "--identity", "ada", "--ttl", "18446744073709551615"][..],
        &["--room", "demo", "--identity", "ada", "--ttl", "0"],
        &["--room", "has space", "--identity", "ada"],
        &["--room", "demo", "--identity", ""],
        &["--room", "demo", "--identity", "a\u{202E}b"],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no token printed");
    }
}

/// Opens a TCP connection from `source` (another loopback address: the
/// attacker is not the client it tries to lock out) and sends the start of
/// a request that never ends.
async fn half_request(source: std::net::IpAddr, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut stream = tokio::time::timeout(WAIT, socket.connect(to)).await.ok()?.ok()?;
    // The server may already have closed it (over a cap): that is fine.
    let _ = stream.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await;
    Some(stream)
}

#[tokio::test]
async fn half_sent_requests_cannot_lock_out_a_client_or_the_health_check() {
    // 1024 file descriptors, as on the server the slowloris took down.
    let mut proc = Proc::start_with_fd_limit(
        1024,
        &[
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--header-read-timeout-ms",
            "3000",
            "--trusted-proxy",
            "none",
        ],
    );
    let addr = proc.addr();
    let attacker = std::net::IpAddr::from([127, 0, 0, 2]);
    let mut held = Vec::new();
    for _ in 0..2000 {
        if let Some(stream) = half_request(attacker, addr).await {
            held.push(stream);
        }
    }
    assert!(held.len() > 1000, "the attack opened {} connections", held.len());
    // While they are held, someone else joins a room and the health check
    // answers.
    let (status, _) = tokio::time::timeout(WAIT, http_get(addr, "/healthz")).await.expect("healthz in time");
    assert_eq!(status, 200);
    let mut client = tokio::time::timeout(WAIT, Client::connect(addr)).await.expect("connect in time");
    let welcome = client.join("open", "Ada").await;
    assert_eq!(welcome.room.as_str(), "open");
    // Every half request is closed by the server: over the per-source cap at
    // once, the rest when the header timeout passes.
    let closed_all = async {
        use tokio::io::AsyncReadExt;
        for stream in &mut held {
            let mut buf = [0u8; 512];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {} // a 408 or 400 before the close is fine
                }
            }
        }
    };
    tokio::time::timeout(WAIT, closed_all).await.expect("every half request closed within the header timeout");
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_readme_configuration_example_starts_with_its_own_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let start = readme.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let toml = &readme[start..start + readme[start..].find("```").expect("end of the example")];
    let command = readme
        .split('`')
        .find(|s| s.contains("--config switchboard.toml") && s.contains("cargo run"))
        .expect("the README's start command");
    let (env_part, args) = command.split_once("cargo run").expect("cargo run");
    let args: Vec<&str> = args.split_once(" -- ").expect("-- before the server's flags").1.split_whitespace().collect();
    let dir = std::env::temp_dir().join(format!("switchboard-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, toml).expect("write the example");
    let args: Vec<String> = args
        .iter()
        .map(|a| if *a == "switchboard.toml" { config.display().to_string() } else { (*a).to_owned() })
        .collect();
    let mut cmd = Command::new(BIN);
    cmd.args(&args);
    // Every variable the command sets, with a value of the length it asks for.
    for assignment in env_part.split_whitespace() {
        let (name, _) = assignment.split_once('=').expect("NAME=value");
        cmd.env(name, "readme-example-secret-0123456789abcdef");
    }
    // Only where it listens differs: a free loopback port, not 0.0.0.0:8080.
    cmd.env("SWITCHBOARD_BIND", "127.0.0.1:0");
    let mut proc = Proc::spawn(&mut cmd);
    let addr = proc.addr();
    let (status, _) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200);
    assert!(proc.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}
