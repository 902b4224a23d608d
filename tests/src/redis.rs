//! A real Redis (Debian's `redis-server`), started and stopped by the
//! tests: on a unix socket in a directory of its own, with no persistence,
//! so that nothing outlives the test and no TCP port can clash.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Redis binary.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Longest wait for Redis to listen (it takes about 40 ms).
const READY: Duration = Duration::from_secs(10);

/// A running Redis; dropping it stops it and removes its directory.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    /// Its unix socket.
    pub socket: PathBuf,
}

impl Redis {
    /// Starts Redis and waits until its socket answers.
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: scripts/test installs it (apt-get install redis-server)"
        );
        let dir = std::env::temp_dir().join(format!("switchboard-redis-{}-{}", std::process::id(), crate::free_port()));
        std::fs::create_dir_all(&dir).expect("redis directory");
        let socket = dir.join("redis.sock");
        let mut redis = Self { child: None, dir, socket };
        redis.restart().await;
        redis
    }

    /// `redis+unix://` URL of its socket, as `--redis-url` takes it.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// SIGKILL: gone at once, its data with it (there is no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it (again) on the same socket.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY;
        while tokio::net::UnixStream::connect(&self.socket).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not listen on {}", self.socket.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
