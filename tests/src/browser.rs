//! Real Chromium through chromedriver: one driver process per test, one
//! WebDriver session (one browser, so one fake camera) per participant.

use crate::{POLL, WAIT, require_loopback_namespace};
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Debian's browser and its driver (the same version).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags every session needs on these machines (see
/// ../shared/docs/testing-real-peers.md): headless without a GPU or sandbox,
/// no background traffic, and loopback ICE candidates.
pub(crate) const FLAGS: [&str; 12] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
];

/// Grants camera and microphone without a prompt.
pub(crate) const FAKE_UI: &str = "--use-fake-ui-for-media-stream";

/// Longest wait for chromedriver to listen.
const DRIVER_START: Duration = Duration::from_secs(10);

/// A running chromedriver. Dropping it kills its whole process group, so no
/// browser outlives a failed test.
#[derive(Debug)]
pub struct Driver {
    child: std::process::Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it listens.
    pub async fn start() -> Self {
        require_loopback_namespace();
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: scripts/test installs chromium and chromium-driver"
            );
        }
        let port = crate::free_port();
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = tokio::time::Instant::now() + DRIVER_START;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not listen on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A new browser with fake camera and microphone, access granted.
    pub async fn browser(&self, label: &str) -> Browser {
        self.launch(label, true).await
    }

    /// A new browser whose camera and microphone requests are denied.
    pub async fn browser_denying_media(&self, label: &str) -> Browser {
        self.launch(label, false).await
    }

    async fn launch(&self, label: &str, grant_media: bool) -> Browser {
        static SESSIONS: AtomicU32 = AtomicU32::new(0);
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("switchboard-e2e-{}-{n}", std::process::id()));
        let flags = FLAGS.iter().copied().chain(grant_media.then_some(FAKE_UI));
        session(&self.url, label, flags, profile).await
    }
}

/// Starts a browser with `flags` and a fresh profile in `profile` through
/// the chromedriver at `url`.
pub(crate) async fn session<'a>(
    url: &str,
    label: &str,
    flags: impl Iterator<Item = &'a str>,
    profile: PathBuf,
) -> Browser {
    let _ = std::fs::remove_dir_all(&profile);
    let mut args: Vec<String> = flags.map(String::from).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = Capabilities::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(url)
        .await
        .expect("a chromium session starts");
    Browser { client, profile, label: label.into() }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the browsers it started share its process group.
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// One browser: one participant.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    profile: PathBuf,
    /// A name for failure messages.
    pub label: String,
}

impl Browser {
    /// Opens the page of `base` and joins `room` as `name` through the lobby
    /// form, as a person would.
    pub async fn join(&self, base: &str, room: &str, name: &str) {
        self.open(base, room).await;
        self.type_into("#name", name).await;
        self.click("#join").await;
        self.wait_until(&format!("joined {room}"), "window.switchboard?.joined === true").await;
    }

    /// Opens the room's shareable link and leaves the lobby form unsent.
    pub async fn open(&self, base: &str, room: &str) {
        self.client.goto(&format!("{base}/?room={room}")).await.expect("page loads");
    }

    /// Clears an input and types into it.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let input = self.client.find(Locator::Css(selector)).await.expect(selector);
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("typing");
    }

    pub async fn click(&self, selector: &str) {
        self.client.find(Locator::Css(selector)).await.expect(selector).click().await.expect("click");
    }

    /// Runs a script (a function body: use `return`); promises are awaited.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("{}: script failed: {e}", self.label))
    }

    /// The session's snapshot: every link's state, statistics and data.
    pub async fn snapshot(&self) -> Value {
        self.eval("return window.switchboard ? window.switchboard.snapshot() : null", vec![]).await
    }

    /// Polls a JavaScript expression (or a promise of one) until it is
    /// truthy; panics after [`WAIT`] with the session's snapshot.
    pub async fn wait_until(&self, what: &str, expression: &str) {
        let script = format!("return Promise.resolve({expression}).then(Boolean)");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.eval(&script, vec![]).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let snapshot = self.snapshot().await;
                panic!("{}: timed out waiting for {what} ({expression}); session: {snapshot:#}", self.label);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The id this browser was given in its room.
    pub async fn peer_id(&self) -> String {
        self.eval("return window.switchboard.me", vec![]).await.as_str().expect("joined").to_string()
    }

    /// Waits until the link to `remote` reports counters for which `done`
    /// holds; returns them.
    pub async fn wait_for_stats(&self, remote: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let snapshot = self.snapshot().await;
            let peer = &snapshot["peers"][remote];
            if done(peer) {
                return peer.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{}: timed out waiting for {what} from {remote}; session: {snapshot:#}", self.label);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of every element matching `selector`, in document order.
    pub async fn texts(&self, selector: &str) -> Vec<String> {
        let value = self
            .eval(
                "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
                vec![json!(selector)],
            )
            .await;
        serde_json::from_value(value).expect("strings")
    }

    /// Ends the session (the browser exits) and removes its profile.
    pub async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
