//! A NAT lab made of network namespaces: two clients, each behind its own
//! symmetric NAT router, and a "public" network holding the servers.
//!
//! ```text
//!  client-a 192.168.1.2 ── 192.168.1.1 router-a 10.99.0.2 ─┐
//!                                                         br0 10.99.0.1  public (coturn, signaling)
//!  client-b 192.168.2.2 ── 192.168.2.1 router-b 10.99.0.3 ─┤
//!  host 10.99.0.9 (no NAT) ───────────────────────────────┘
//! ```
//!
//! Routers masquerade with `--random-fully` (a new random port for every
//! mapping: symmetric NAT) and forward only LAN to WAN plus the replies, so a
//! direct path between the clients cannot work and only a relay can. Veth
//! pairs are created straight between the lab's namespaces: nothing touches
//! the namespace the tests run in, and nothing can reach outside the lab.
//! Dropping the lab kills what runs in it and deletes every namespace, also
//! when a test fails.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The public network's address (coturn and the signaling server).
pub const PUBLIC_IP: &str = "10.99.0.1";
/// The address of [`Place::Host`].
pub const HOST_IP: &str = "10.99.0.9";

/// One of the lab's places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The servers' network.
    Public,
    /// NAT router of client A.
    RouterA,
    /// NAT router of client B.
    RouterB,
    /// Client A, behind router A.
    ClientA,
    /// Client B, behind router B.
    ClientB,
    /// A host of its own on the public network, without NAT.
    Host,
}

impl Place {
    const ALL: [Self; 6] = [Self::Public, Self::RouterA, Self::RouterB, Self::ClientA, Self::ClientB, Self::Host];

    fn suffix(self) -> &'static str {
        match self {
            Self::Public => "pub",
            Self::RouterA => "ra",
            Self::RouterB => "rb",
            Self::ClientA => "ca",
            Self::ClientB => "cb",
            Self::Host => "ho",
        }
    }
}

/// A running lab.
#[derive(Debug)]
pub struct NatLab {
    prefix: String,
    processes: Vec<Child>,
}

/// A process in the lab, with its output lines.
#[derive(Debug)]
pub struct LabProcess {
    index: usize,
    /// Its standard input (kept open: a peer leaves at end of input).
    pub stdin: Option<ChildStdin>,
    /// Its standard output, line by line.
    pub lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl NatLab {
    /// Builds the lab (about a quarter of a second).
    pub fn new() -> Self {
        crate::require_loopback_namespace();
        let prefix = format!("sb{}x", std::process::id());
        let lab = Self { prefix, processes: Vec::new() };
        lab.build();
        lab
    }

    /// The namespace name of a place.
    pub fn ns(&self, place: Place) -> String {
        format!("{}{}", self.prefix, place.suffix())
    }

    /// Starts `argv` inside `place`, reading its standard output.
    pub fn spawn(&mut self, place: Place, argv: &[&str]) -> LabProcess {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(place)])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?} in {place:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.processes.push(child);
        LabProcess { index: self.processes.len() - 1, stdin, lines, seen: Vec::new() }
    }

    /// Stops one process (SIGKILL).
    pub fn kill(&mut self, process: &LabProcess) {
        let child = &mut self.processes[process.index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the signaling server binary on the public network, at
    /// `PUBLIC_IP:8080` (STUN on 3480), with open rooms and short pings (1 s,
    /// silence after 3 s: a cut is noticed within seconds by the server and
    /// by the clients, which adopt the welcome's interval), plus `extra`
    /// flags, and waits until it is ready. Its address (`host:port`).
    pub fn start_signaling(&mut self, extra: &[&str]) -> String {
        let server_bin = crate::workspace_binary("switchboard");
        let bind = format!("{PUBLIC_IP}:8080");
        let mut argv = vec![
            server_bin.as_str(),
            "--bind",
            &bind,
            "--insecure-open-rooms",
            "--stun-port",
            "3480",
            "--ping-interval-ms",
            "1000",
            "--ping-timeout-ms",
            "3000",
            "--log",
            "warn",
        ];
        argv.extend_from_slice(extra);
        let _server = self.spawn(Place::Public, &argv);
        let probe = format!("http://{bind}/readyz");
        let ready = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            self.run(Place::Public, &["curl", "-sf", "--max-time", "1", &probe]).status.success()
        });
        assert!(ready, "the signaling server did not get ready");
        bind
    }

    /// Runs a command inside `place` to completion; its output.
    pub fn run(&self, place: Place, argv: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(place)])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?} in {place:?}: {e}"))
    }

    /// Cuts [`Place::Host`] off the network (`true`) or reconnects it: every
    /// frame to or from its port on the public bridge is dropped there. The
    /// host notices nothing but silence (its interface stays up and its
    /// sends succeed), as when a link further away fails.
    pub fn cut_host(&self, cut: bool) {
        let public = self.ns(Place::Public);
        let nft = |script: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &public, "nft", script])
                .output()
                .unwrap_or_else(|e| panic!("nft {script}: {e}"));
            assert!(out.status.success(), "nft {script}: {}", String::from_utf8_lossy(&out.stderr));
        };
        if cut {
            nft("add table bridge cut");
            nft("add chain bridge cut in { type filter hook prerouting priority 0; }");
            nft("add chain bridge cut out { type filter hook postrouting priority 0; }");
            nft("add rule bridge cut in iifname p9 drop");
            nft("add rule bridge cut out oifname p9 drop");
        } else {
            nft("delete table bridge cut");
        }
    }

    fn build(&self) {
        for place in Place::ALL {
            sh(&["ip", "netns", "add", &self.ns(place)]);
            sh(&["ip", "-n", &self.ns(place), "link", "set", "lo", "up"]);
            // An IPv4 lab: without this every veth gets an IPv6 link-local
            // address, webrtc-rs pairs them too, and a call that connected
            // over IPv4 can move to a link-local pair that carries nothing.
            for key in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
                sh(&["ip", "netns", "exec", &self.ns(place), "sysctl", "-qw", key]);
            }
        }
        let public = self.ns(Place::Public);
        sh(&["ip", "-n", &public, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &public, "addr", "add", &format!("{PUBLIC_IP}/24"), "dev", "br0"]);
        sh(&["ip", "-n", &public, "link", "set", "br0", "up"]);
        // Like a server on the internet, the public network has a default
        // route: packets to private addresses it cannot reach leave it and
        // vanish (into a veth pair that leads nowhere) instead of failing to
        // send, which makes coturn drop the relay session.
        sh(&["ip", "-n", &public, "link", "add", "uplink", "type", "veth", "peer", "name", "nowhere"]);
        sh(&["ip", "-n", &public, "link", "set", "nowhere", "up"]);
        sh(&["ip", "-n", &public, "link", "set", "uplink", "up"]);
        sh(&["ip", "-n", &public, "route", "add", "default", "dev", "uplink"]);
        let host = self.ns(Place::Host);
        sh(&["ip", "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", "p9", "netns", &public]);
        sh(&["ip", "-n", &public, "link", "set", "p9", "master", "br0", "up"]);
        sh(&["ip", "-n", &host, "addr", "add", &format!("{HOST_IP}/24"), "dev", "eth0"]);
        sh(&["ip", "-n", &host, "link", "set", "eth0", "up"]);
        for (router, client, n) in [(Place::RouterA, Place::ClientA, 1), (Place::RouterB, Place::ClientB, 2)] {
            let (router, client) = (self.ns(router), self.ns(client));
            let port = format!("p{n}");
            sh(&[
                "ip", "link", "add", "wan", "netns", &router, "type", "veth", "peer", "name", &port, "netns", &public,
            ]);
            sh(&["ip", "-n", &public, "link", "set", &port, "master", "br0", "up"]);
            sh(&["ip", "-n", &router, "addr", "add", &format!("10.99.0.{}/24", n + 1), "dev", "wan"]);
            sh(&["ip", "-n", &router, "link", "set", "wan", "up"]);
            sh(&[
                "ip", "link", "add", "lan", "netns", &router, "type", "veth", "peer", "name", "eth0", "netns", &client,
            ]);
            sh(&["ip", "-n", &router, "addr", "add", &format!("192.168.{n}.1/24"), "dev", "lan"]);
            sh(&["ip", "-n", &router, "link", "set", "lan", "up"]);
            sh(&["ip", "-n", &client, "addr", "add", &format!("192.168.{n}.2/24"), "dev", "eth0"]);
            sh(&["ip", "-n", &client, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &client, "route", "add", "default", "via", &format!("192.168.{n}.1")]);
            let exec = |argv: &[&str]| {
                let mut full = vec!["ip", "netns", "exec", router.as_str()];
                full.extend_from_slice(argv);
                sh(&full);
            };
            exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            exec(&["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE", "--random-fully"]);
            exec(&["iptables", "-P", "FORWARD", "DROP"]);
            exec(&["iptables", "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"]);
            exec(&[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-o",
                "lan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
        }
    }
}

impl Default for NatLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for place in Place::ALL {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(place)]).status();
        }
    }
}

impl LabProcess {
    /// Waits for an output line for which `pred` holds; panics after `wait`
    /// with everything seen.
    pub fn wait_for(&mut self, what: &str, wait: Duration, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; output so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Writes a line to its standard input.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush");
    }
}

fn sh(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(out.status.success(), "{argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}
