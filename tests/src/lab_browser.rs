//! Real Chromium inside a place of a [`NatLab`], so that its network can be
//! cut like any lab host's while the test keeps driving it.
//!
//! chromedriver runs in the place's network namespace, listening on that
//! namespace's own 127.0.0.1 (Chromium, which it starts, is in the namespace
//! too and talks to it over a DevTools port on the same loopback). The test
//! runs in another namespace and cannot reach that address, but namespaces
//! share the filesystem, and a Unix socket crosses them:
//!
//! ```text
//!  test's namespace                        │  the place's namespace
//!  fantoccini ─> 127.0.0.1:<free port> ─> <dir>/driver.sock ─> 127.0.0.1:9515 chromedriver ─> Chromium
//!               (tokio relay, this process)  │ (python3 relay)
//! ```
//!
//! Nothing here adds an interface to either namespace: the test's stays
//! loopback-only, and cutting the place's network (iptables on its `eth0`)
//! cuts Chromium's calls and signaling but not the WebDriver session.
//! Dropping a [`LabDriver`] kills chromedriver, its browsers and the relay,
//! and removes the socket and the browsers' profiles, also when a test fails.

use crate::browser::{Browser, CHROMEDRIVER, CHROMIUM, FAKE_UI, FLAGS, session};
use crate::netlab::{NatLab, Place};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// chromedriver's port inside the place (a namespace of the test's own).
const DRIVER_PORT: u16 = 9515;

/// Longest wait for chromedriver and the relay to listen.
const DRIVER_START: Duration = Duration::from_secs(15);

/// The relay inside the place: every connection to the Unix socket `argv[1]`
/// is piped to 127.0.0.1:`argv[2]`.
const RELAY: &str = r#"
import socket, sys, threading
path, port = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(64)

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def serve(client):
    try:
        upstream = socket.create_connection(("127.0.0.1", port))
    except OSError:
        client.close()
        return
    back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    back.start()
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()

while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// chromedriver (and the browsers it starts) inside one place of a lab.
#[derive(Debug)]
pub struct LabDriver {
    driver: Child,
    relay: Child,
    forward: Option<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
    url: String,
    sessions: AtomicU32,
}

impl LabDriver {
    /// Starts chromedriver in `place` and the relays to it; waits until
    /// WebDriver answers through them.
    pub async fn start(lab: &NatLab, place: Place) -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: scripts/test installs chromium and chromium-driver"
            );
        }
        static DRIVERS: AtomicU32 = AtomicU32::new(0);
        let n = DRIVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("switchboard-labdriver-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the driver's socket");
        let socket = dir.join("driver.sock");
        let ns = lab.ns(place);
        // Its own process group: chromedriver's browsers die with it.
        let driver = Command::new("ip")
            .args(["netns", "exec", &ns, CHROMEDRIVER, &format!("--port={DRIVER_PORT}"), "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let relay = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3", "-c", RELAY])
            .arg(&socket)
            .arg(DRIVER_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the relay starts (python3)");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port for WebDriver");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let mut lab_driver = Self { driver, relay, forward: None, dir, url, sessions: AtomicU32::new(0) };

        // Ready when chromedriver answers inside the place and the socket is there.
        let status = format!("http://127.0.0.1:{DRIVER_PORT}/status");
        let deadline = tokio::time::Instant::now() + DRIVER_START;
        loop {
            let answers = || lab.run(place, &["curl", "-sf", "--max-time", "1", &status]).status.success();
            if socket.exists() && answers() {
                break;
            }
            for (what, child) in [("chromedriver", &mut lab_driver.driver), ("the relay", &mut lab_driver.relay)] {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("{what} in {place:?} exited early: {exit}");
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver in {place:?} did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lab_driver.forward = Some(tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
            }
        }));
        lab_driver
    }

    /// A new browser in the place, with fake camera and microphone, access
    /// granted. It gathers the place's interfaces (no loopback candidates:
    /// its peers are elsewhere in the lab).
    ///
    /// `origin` (`http://10.99.0.1:8080`) is where its pages come from: a
    /// plain-http page on a lab address is no secure context, which has no
    /// `getUserMedia`, so the browser is told to treat that origin as secure
    /// (as it treats `localhost`).
    pub async fn browser(&self, label: &str, origin: &str) -> Browser {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let secure = format!("--unsafely-treat-insecure-origin-as-secure={origin}");
        let flags = FLAGS.iter().copied().filter(|f| *f != "--allow-loopback-in-peer-connection");
        session(&self.url, label, flags.chain([FAKE_UI, &secure]), self.dir.join(format!("profile-{n}"))).await
    }
}

impl Drop for LabDriver {
    fn drop(&mut self) {
        if let Some(forward) = self.forward.take() {
            forward.abort();
        }
        // `ip netns exec` execs the program: the child is chromedriver, the
        // leader of the group its browsers are in.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
        let _ = self.relay.kill();
        let _ = self.relay.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
