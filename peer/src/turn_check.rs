//! `turn-check`: is STUN/TURN working, and if not, why? It performs a STUN
//! binding and an authenticated TURN allocation (released at once) against
//! each server and gives a diagnosis a person can act on: unreachable,
//! credentials refused (expired, or wrong secret), forbidden, or allocated
//! with the relayed address and the round-trip time.
//!
//! Credentials come from the signaling server's `/v1/turn-credentials`
//! (given its URL and a join token), or are given directly, or are minted
//! from the shared secret (for operators checking coturn itself).

use anyhow::{Context, bail};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress};
use stun_rs::attributes::turn::{LifeTime, RequestedTrasport, XorRelayedAddress};
use stun_rs::methods::{ALLOCATE, BINDING, REFRESH};
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageMethod,
    StunMessage, StunMessageBuilder, TransactionId,
};
use switchboard_protocol::IceServer;
use tokio::net::UdpSocket;

/// Tries per request (STUN over UDP retransmits; RFC 8489 suggests 7, a
/// diagnosis wants an answer sooner).
pub const ATTEMPTS: u32 = 3;
/// Wait for an answer to one try; it doubles per retry.
pub const FIRST_WAIT: Duration = Duration::from_millis(500);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 1500;

/// What a check found, for one server URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Diagnosis {
    /// No answer at all.
    Unreachable {
        /// The URL checked.
        url: String,
        /// The address tried.
        addr: SocketAddr,
    },
    /// A STUN server answered a binding.
    StunOk {
        /// The URL checked.
        url: String,
        /// Our address as the server saw it.
        mapped: SocketAddr,
        /// Round-trip time, microseconds.
        rtt_us: u64,
    },
    /// TURN refused the credentials (401).
    CredentialsRefused {
        /// The URL checked.
        url: String,
        /// Why, as far as can be told from here.
        cause: RefusalCause,
        /// The server's reason phrase.
        reason: String,
    },
    /// TURN answered with another error (403 forbidden, 486 quota, ...).
    TurnError {
        /// The URL checked.
        url: String,
        /// STUN error code.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// TURN allocated a relay (and it was released again).
    Allocated {
        /// The URL checked.
        url: String,
        /// The relayed transport address peers would send to.
        relayed: SocketAddr,
        /// Our address as the server saw it.
        mapped: Option<SocketAddr>,
        /// Round-trip time of the authenticated allocation, microseconds.
        rtt_us: u64,
        /// Allocation lifetime granted, seconds.
        lifetime_s: u32,
    },
    /// The URL cannot be checked by this tool.
    Skipped {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
}

/// Why TURN credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCause {
    /// The expiry in the username has passed.
    Expired,
    /// Not expired, so the password does not match: the secret differs
    /// between the signaling server and coturn, or the username was altered.
    WrongPassword,
}

impl Diagnosis {
    /// True when the check passed.
    pub fn ok(&self) -> bool {
        matches!(self, Self::StunOk { .. } | Self::Allocated { .. })
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let ms = |us: &u64| *us as f64 / 1000.0;
        match self {
            Self::Unreachable { url, addr } => format!(
                "{url}: UNREACHABLE: no answer from {addr} after {ATTEMPTS} tries (is the server running, is UDP \
                 open on that port?)"
            ),
            Self::StunOk { url, mapped, rtt_us } => {
                format!("{url}: ok: STUN binding answered, our address is {mapped}, RTT {:.1} ms", ms(rtt_us))
            }
            Self::CredentialsRefused { url, cause: RefusalCause::Expired, reason } => format!(
                "{url}: CREDENTIALS REFUSED ({reason}): they have expired; fetch fresh ones (the signaling server \
                 hands them out)"
            ),
            Self::CredentialsRefused { url, cause: RefusalCause::WrongPassword, reason } => format!(
                "{url}: CREDENTIALS REFUSED ({reason}): not expired, so the password is wrong: coturn's \
                 static-auth-secret and the signaling server's --turn-secret differ, or the credentials were altered"
            ),
            Self::TurnError { url, code, reason } => format!("{url}: TURN ERROR {code} {reason}"),
            Self::Allocated { url, relayed, mapped, rtt_us, lifetime_s } => format!(
                "{url}: ok: relay allocated at {relayed} (our address {}), RTT {:.1} ms, lifetime {lifetime_s} s; \
                 released",
                mapped.map_or("unknown".into(), |m| m.to_string()),
                ms(rtt_us)
            ),
            Self::Skipped { url, why } => format!("{url}: skipped: {why}"),
        }
    }
}

/// A `stun:`/`turn:` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `stun`, `stuns`, `turn` or `turns`.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port (3478 by default, 5349 for the TLS schemes).
    pub port: u16,
    /// `udp` or `tcp` (TURN only; UDP by default).
    pub transport: String,
}

/// Parses `turn:host:port?transport=udp` and friends (RFC 7064/7065).
pub fn parse_url(url: &str) -> anyhow::Result<ServerUrl> {
    let (scheme, rest) = url.split_once(':').context("no scheme")?;
    if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
        bail!("not a STUN or TURN URL: {url}");
    }
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let default_port = if scheme.ends_with('s') { 5349 } else { 3478 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').context("unclosed [")?;
        (host.to_string(), after.strip_prefix(':').map(str::parse).transpose()?.unwrap_or(default_port))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.parse().context("bad port")?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        bail!("no host in {url}");
    }
    let transport = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("transport="))
        .unwrap_or(if scheme.ends_with('s') { "tcp" } else { "udp" })
        .to_ascii_lowercase();
    Ok(ServerUrl { scheme: scheme.into(), host, port, transport })
}

/// Checks every server in `ice_servers`: a binding for `stun:` URLs, a
/// binding-free authenticated allocation for UDP `turn:` URLs.
pub async fn check_all(ice_servers: &[IceServer]) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    for server in ice_servers {
        for url in &server.urls {
            out.push(check_url(url, server.username.as_deref(), server.credential.as_deref()).await);
        }
    }
    out
}

/// Checks one URL.
pub async fn check_url(url: &str, username: Option<&str>, password: Option<&str>) -> Diagnosis {
    let skipped = |why: String| Diagnosis::Skipped { url: url.into(), why };
    let parsed = match parse_url(url) {
        Ok(p) => p,
        Err(err) => return skipped(format!("{err:#}")),
    };
    if parsed.transport != "udp" || parsed.scheme.ends_with('s') {
        return skipped("only UDP STUN/TURN is checked (TLS and TCP are for browsers behind strict firewalls)".into());
    }
    let resolved = tokio::net::lookup_host((parsed.host.as_str(), parsed.port)).await.map(|mut a| a.next());
    let Ok(Some(addr)) = resolved else {
        return skipped(format!("cannot resolve {}", parsed.host));
    };
    let result = if parsed.scheme == "stun" {
        stun_binding(url, addr).await
    } else {
        match (username, password) {
            (Some(u), Some(p)) => turn_allocate(url, addr, u, p).await,
            _ => Ok(skipped("a TURN URL needs a username and password".into())),
        }
    };
    result.unwrap_or_else(|err| skipped(format!("{err:#}")))
}

/// A STUN binding against `addr`.
pub async fn stun_binding(url: &str, addr: SocketAddr) -> anyhow::Result<Diagnosis> {
    let socket = socket_for(addr).await?;
    let request =
        StunMessageBuilder::new(BINDING, MessageClass::Request).with_attribute(Fingerprint::default()).build();
    let Some((reply, rtt)) = transact(&socket, addr, &request).await? else {
        return Ok(Diagnosis::Unreachable { url: url.into(), addr });
    };
    let mapped = reply
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
        .map(|a| *a.socket_address())
        .context("the binding answer has no XOR-MAPPED-ADDRESS")?;
    Ok(Diagnosis::StunOk { url: url.into(), mapped, rtt_us: micros(rtt) })
}

/// An authenticated TURN allocation against `addr`, released right after.
pub async fn turn_allocate(url: &str, addr: SocketAddr, username: &str, password: &str) -> anyhow::Result<Diagnosis> {
    let socket = socket_for(addr).await?;
    // 1. Unauthenticated: the server answers 401 with its realm and a nonce.
    let probe = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
        .with_attribute(RequestedTrasport::from(stun_rs::protocols::UDP))
        .with_attribute(Fingerprint::default())
        .build();
    let Some((challenge, _)) = transact(&socket, addr, &probe).await? else {
        return Ok(Diagnosis::Unreachable { url: url.into(), addr });
    };
    let realm = challenge.get::<Realm>().and_then(|a| a.as_realm().ok()).map(|r| r.as_str().to_string());
    let nonce = challenge.get::<Nonce>().and_then(|a| a.as_nonce().ok()).map(|n| n.as_str().to_string());
    let (Some(realm), Some(nonce)) = (realm, nonce) else {
        let (code, reason) = error_of(&challenge).unwrap_or((0, "no realm and nonce in the challenge".into()));
        return Ok(Diagnosis::TurnError { url: url.into(), code, reason });
    };
    // 2. Authenticated with the long-term credential mechanism.
    let key = HMACKey::new_long_term(username, &realm, password, Algorithm::from(AlgorithmId::MD5))
        .context("the credentials are not valid STUN strings")?;
    let signed = |method: MessageMethod, lifetime: Option<u32>| -> anyhow::Result<StunMessage> {
        let mut builder = StunMessageBuilder::new(method, MessageClass::Request);
        if method == ALLOCATE {
            builder = builder.with_attribute(RequestedTrasport::from(stun_rs::protocols::UDP));
        }
        if let Some(seconds) = lifetime {
            builder = builder.with_attribute(LifeTime::new(seconds));
        }
        Ok(builder
            .with_attribute(UserName::new(username)?)
            .with_attribute(Realm::new(&realm)?)
            .with_attribute(Nonce::new(&nonce)?)
            .with_attribute(MessageIntegrity::new(key.clone()))
            .with_attribute(Fingerprint::default())
            .build())
    };
    let Some((reply, rtt)) = transact(&socket, addr, &signed(ALLOCATE, None)?).await? else {
        return Ok(Diagnosis::Unreachable { url: url.into(), addr });
    };
    if reply.class() == MessageClass::ErrorResponse {
        let (code, reason) = error_of(&reply).unwrap_or((0, "error without a code".into()));
        if code == 401 {
            let cause = if expired(username) { RefusalCause::Expired } else { RefusalCause::WrongPassword };
            return Ok(Diagnosis::CredentialsRefused { url: url.into(), cause, reason });
        }
        return Ok(Diagnosis::TurnError { url: url.into(), code, reason });
    }
    let relayed = reply
        .get::<XorRelayedAddress>()
        .and_then(|a| a.as_xor_relayed_address().ok())
        .map(|a| *a.socket_address())
        .context("the allocation has no XOR-RELAYED-ADDRESS")?;
    let mapped =
        reply.get::<XorMappedAddress>().and_then(|a| a.as_xor_mapped_address().ok()).map(|a| *a.socket_address());
    let lifetime_s = reply.get::<LifeTime>().and_then(|a| a.as_life_time().ok()).map_or(0, |l| l.as_u32());
    // 3. Release the relay: a Refresh with lifetime 0.
    let _ = transact(&socket, addr, &signed(REFRESH, Some(0))?).await;
    Ok(Diagnosis::Allocated { url: url.into(), relayed, mapped, rtt_us: micros(rtt), lifetime_s })
}

/// True when the `<expiry>:` prefix of a TURN REST username has passed.
fn expired(username: &str) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    username.split_once(':').and_then(|(e, _)| e.parse::<u64>().ok()).is_some_and(|e| e < now)
}

fn error_of(msg: &StunMessage) -> Option<(u16, String)> {
    let attr = msg.get::<ErrorCode>()?.as_error_code().ok()?;
    let code = attr.error_code();
    Some((code.error_code(), code.reason().to_string()))
}

async fn socket_for(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    UdpSocket::bind(local).await.context("binding a UDP socket")
}

/// Sends `request` (retransmitting) and returns the answer with the same
/// transaction id and the round-trip time of the try it answered, or `None`
/// when nothing came back.
async fn transact(
    socket: &UdpSocket,
    addr: SocketAddr,
    request: &StunMessage,
) -> anyhow::Result<Option<(StunMessage, Duration)>> {
    let mut out = [0u8; MAX_DATAGRAM];
    let size = MessageEncoderBuilder::default().build().encode(&mut out, request).context("encoding STUN")?;
    let id: TransactionId = *request.transaction_id();
    let decoder = MessageDecoderBuilder::default().build();
    let mut buffer = [0u8; MAX_DATAGRAM];
    let mut wait = FIRST_WAIT;
    for _ in 0..ATTEMPTS {
        let sent = Instant::now();
        socket.send_to(&out[..size], addr).await.context("sending")?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await {
                Err(_) => break,
                // ICMP port unreachable surfaces as an error: treat as silence.
                Ok(Err(_)) => break,
                Ok(Ok((len, from))) if from == addr => {
                    if let Ok((msg, _)) = decoder.decode(&buffer[..len])
                        && *msg.transaction_id() == id
                    {
                        return Ok(Some((msg, sent.elapsed())));
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
        wait *= 2;
    }
    Ok(None)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// TURN credentials from a signaling server's `/v1/turn-credentials`, as
/// ICE servers. `url` may be the WebSocket URL (`ws://host/v1/ws`) or the
/// server's base (`http(s)://host`).
pub fn fetch_credentials(url: &str, token: Option<&str>) -> anyhow::Result<Vec<IceServer>> {
    let endpoint = credentials_endpoint(url)?;
    let mut request = ureq::get(&endpoint).timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
    }
    match request.call() {
        Ok(response) => Ok(response.into_json::<Reply>().context("reading the credentials")?.ice_servers),
        Err(ureq::Error::Status(code, response)) => {
            let body = response.into_string().unwrap_or_default();
            bail!("{endpoint} answered {code}: {body}")
        }
        Err(err) => bail!("{endpoint}: {err}"),
    }
}

/// `ws://h/v1/ws` → `http://h/v1/turn-credentials`.
pub fn credentials_endpoint(url: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("no scheme in the signaling URL")?;
    let scheme = match scheme {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => bail!("unsupported scheme {other}"),
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        bail!("no host in {url}");
    }
    Ok(format!("{scheme}://{host}/v1/turn-credentials"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stun_and_turn_urls() {
        let u = parse_url("turn:turn.example.org:3479?transport=udp").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.transport.as_str()),
            ("turn", "turn.example.org", 3479, "udp")
        );
        assert_eq!(parse_url("stun:127.0.0.1").unwrap().port, 3478);
        assert_eq!(parse_url("turns:t.example").unwrap().port, 5349);
        assert_eq!(parse_url("turns:t.example").unwrap().transport, "tcp");
        let v6 = parse_url("stun:[::1]:4000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4000));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("turn:").is_err());
    }

    #[test]
    fn finds_the_credentials_endpoint() {
        assert_eq!(
            credentials_endpoint("ws://127.0.0.1:8080/v1/ws").unwrap(),
            "http://127.0.0.1:8080/v1/turn-credentials"
        );
        assert_eq!(credentials_endpoint("wss://sig.example/v1/ws").unwrap(), "https://sig.example/v1/turn-credentials");
        assert_eq!(credentials_endpoint("https://sig.example").unwrap(), "https://sig.example/v1/turn-credentials");
        assert!(credentials_endpoint("ftp://x").is_err());
    }

    #[test]
    fn tells_expired_from_wrong() {
        assert!(expired("1000:ada"));
        assert!(!expired("99999999999:ada"));
        assert!(!expired("ada"));
    }
}
