//! Starting the servers and reading their CPU time and memory from /proc.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed on drop.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("server did not listen on {addr} within 20 s")
}

impl ServerProc {
    /// Starts the Switchboard release binary with limits raised for load
    /// (the defaults would rate-limit a load generator, correctly).
    pub fn switchboard(bin: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(bin)
            .args(["--bind", &addr.to_string(), "--log", "warn", "--no-stun"])
            .args(["--max-connections", "19000", "--max-rooms", "19000", "--max-peers-per-room", "1000"])
            // Connections are opened as fast as the client can: no admission rate.
            .args(["--admissions-per-second", "0", "--admissions-per-source-per-second", "0"])
            .args(["--max-http-connections", "4096"])
            .args(["--messages-per-second", "1000000", "--message-burst", "1000000"])
            .args(["--outbound-queue", "65536", "--ping-timeout-ms", "600000", "--ping-interval-ms", "300000"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        wait_listening(addr, &mut child)?;
        Ok(Self { child, addr })
    }

    /// Starts PeerJS server from an npm install directory, with its
    /// connection limit raised and its liveness timeout out of the way.
    pub fn peerjs(node_modules: &Path) -> anyhow::Result<Self> {
        let script = node_modules.join("peer/dist/bin/peerjs.js");
        if !script.exists() {
            bail!("{} not found: run scripts/bench-signaling (it installs peer@1.0.2)", script.display());
        }
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .args(["--concurrent_limit", "19000", "--alive_timeout", "600000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node")?;
        wait_listening(addr, &mut child)?;
        Ok(Self { child, addr })
    }

    /// Starts a `redis-server` on a free loopback port, without persistence
    /// (the cluster bench).
    #[allow(dead_code)]
    pub fn redis() -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting redis-server")?;
        wait_listening(addr, &mut child)?;
        Ok(Self { child, addr })
    }

    /// SIGKILL, now (the cluster bench's failover).
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (the process drains and exits).
    #[allow(dead_code)]
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(())
    }

    /// Waits for the process to exit.
    #[allow(dead_code)]
    pub fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// User + system CPU time used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields overall.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
    }

    /// Resident memory now, bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
        let kb: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
        Ok(kb * 1024)
    }
}

/// Kernel clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
