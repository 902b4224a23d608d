//! A cluster of real processes for fault tests: `switchboard` nodes (the
//! binary, so that one can be SIGKILLed) on a real Redis, behind a real
//! HAProxy running the repository's own `deploy/haproxy.cfg` with its ports
//! replaced by free ones.

use crate::{POLL, Redis, WAIT, free_port, http_get, workspace_binary};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The HAProxy binary.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// One node process; dropping it kills it.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its node id.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    redis_url: String,
    extra: Vec<String>,
}

impl NodeProcess {
    /// Starts node `id` on a free port and waits until it is ready and has
    /// reached Redis.
    pub async fn start(redis: &Redis, id: &str) -> Self {
        Self::start_with(redis, id, &[]).await
    }

    /// As [`NodeProcess::start`], with more command-line flags.
    pub async fn start_with(redis: &Redis, id: &str, extra: &[&str]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn(&redis.url(), id, addr, &extra);
        let node = Self { id: id.into(), addr, child, redis_url: redis.url(), extra };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.ready().await {
            assert!(tokio::time::Instant::now() < deadline, "node {} did not become ready", self.id);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether it answers `/readyz` with ready and Redis up.
    pub async fn ready(&self) -> bool {
        tokio::net::TcpStream::connect(self.addr).await.is_ok()
            && http_get(self.addr, "/readyz").await == (200, "ready\nredis: up\n".into())
    }

    /// Sends SIGTERM: the node drains (hands its rooms over) and exits.
    pub fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(status.success(), "SIGTERM to {}", self.id);
    }

    /// Whether the process has exited (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Starts the node again, same id, same address and flags (a new
    /// version deployed in its place), and waits until it is ready. The
    /// old process must have exited.
    pub async fn restart(&mut self) {
        self.respawn();
        self.wait_ready().await;
    }

    /// Starts the node again (as [`NodeProcess::restart`]) without waiting.
    pub fn respawn(&mut self) {
        assert!(self.exited().is_some(), "{} is still running", self.id);
        self.child = spawn(&self.redis_url, &self.id, self.addr, &self.extra);
    }
    /// `ws://` URL of this node.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// `GET /v1/cluster` of this node, parsed.
    pub async fn view(&self) -> serde_json::Value {
        let (status, body) = http_get(self.addr, "/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// `GET /v1/cluster`, or `None` when the node does not answer (killed).
    pub async fn try_view(&self) -> Option<serde_json::Value> {
        tokio::net::TcpStream::connect(self.addr).await.ok()?;
        Some(self.view().await)
    }

    /// SIGKILL: no goodbye to clients or Redis.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(redis_url: &str, id: &str, addr: SocketAddr, extra: &[String]) -> Child {
    Command::new(workspace_binary("switchboard"))
        .args(["--bind", &addr.to_string(), "--no-stun", "--redis-url", redis_url, "--node-id", id])
        .args(["--log", "warn"])
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("switchboard starts")
}

/// Three nodes (`node-1` to `node-3`) started with `extra` flags, once each
/// lists all three.
pub async fn three_nodes(redis: &Redis, extra: &[&str]) -> Vec<NodeProcess> {
    let mut nodes = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        nodes.push(NodeProcess::start_with(redis, id, extra).await);
    }
    for node in &nodes {
        listed_by_all(&nodes, &node.id).await;
    }
    nodes
}

/// Waits until every live node lists `id`, not draining.
pub async fn listed_by_all(nodes: &[NodeProcess], id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    for node in nodes {
        loop {
            let view = node.view().await;
            let listed =
                view["nodes"].as_array().is_some_and(|all| all.iter().any(|n| n["id"] == id && n["draining"] == false));
            if listed {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} does not list {id}", node.id);
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The node that holds `room`, by its `/v1/cluster` view.
pub async fn owner_of(nodes: &[NodeProcess], room: &str) -> Option<usize> {
    for (i, node) in nodes.iter().enumerate() {
        let Some(view) = node.try_view().await else { continue };
        if view["rooms"].as_array().is_some_and(|r| r.iter().any(|n| n == room)) {
            return Some(i);
        }
    }
    None
}

/// A running HAProxy; dropping it stops it.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// The address clients connect to.
    pub addr: SocketAddr,
}

impl Haproxy {
    /// Runs `deploy/haproxy.cfg` in front of `nodes` (three).
    pub async fn start(nodes: &[&NodeProcess]) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], free_port())), nodes).await
    }

    /// As [`Haproxy::start`], listening on `addr` (chosen before the nodes
    /// start, so that they can allow the origin of pages served through
    /// it).
    pub async fn start_on(addr: SocketAddr, nodes: &[&NodeProcess]) -> Self {
        assert!(std::path::Path::new(HAPROXY).exists(), "{HAPROXY} is missing: scripts/test installs haproxy");
        assert_eq!(nodes.len(), 3, "the repository's configuration has three nodes");
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
        let mut text = std::fs::read_to_string(&config).expect("deploy/haproxy.cfg");
        text = text.replace("bind 127.0.0.1:8080", &format!("bind {addr}"));
        for (i, node) in nodes.iter().enumerate() {
            let from = format!("server node-{} 127.0.0.1:808{}", i + 1, i + 1);
            assert!(text.contains(&from), "deploy/haproxy.cfg lists {from}");
            text = text.replace(&from, &format!("server {} {}", node.id, node.addr));
        }
        let dir = std::env::temp_dir().join(format!("switchboard-haproxy-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).expect("haproxy directory");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, text).expect("haproxy.cfg");
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let proxy = Self { child, dir, addr };
        let deadline = tokio::time::Instant::now() + WAIT;
        while http_get_ok(addr).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "haproxy did not listen on {addr}");
            tokio::time::sleep(POLL).await;
        }
        proxy
    }

    /// `ws://` URL through the balancer.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }
}

async fn http_get_ok(addr: SocketAddr) -> Option<()> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    (http_get(addr, "/healthz").await.0 == 200).then_some(())
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
