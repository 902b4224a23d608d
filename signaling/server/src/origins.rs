//! Which web pages may open a WebSocket here. A browser sends `Origin`
//! with every upgrade; a page on another site that a visitor happens to open
//! must not drive rooms through the visitor's browser (open rooms on a
//! laptop, or a token in an intranet page).
//!
//! By default only the server's own origin is allowed: the scheme, host and
//! port of `--public-url` (`wss:` is `https:`), and the address it listens
//! on (with `localhost` for a loopback bind). The `Host` header is never
//! trusted for this: a DNS-rebinding page has its own name in `Host`.
//! Operators allow other pages with `--allowed-origin`, or any page with
//! `--allowed-origin '*'`. Requests without `Origin` (native clients) are
//! not browsers and are let through: tokens are the access control.

use axum::http::{HeaderMap, header};
use std::net::SocketAddr;

/// The origins allowed to connect.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    allowed: Vec<String>,
    any: bool,
}

impl Origins {
    /// `configured` (`*` for any) plus the server's own origins, from its
    /// public URL and the address it is bound to.
    pub fn new(configured: &[String], public_url: Option<&str>, bound: SocketAddr) -> Self {
        let any = configured.iter().any(|o| o.trim() == "*");
        let mut allowed: Vec<String> = configured.iter().filter(|o| o.trim() != "*").map(|o| normalize(o)).collect();
        if let Some(origin) = public_url.and_then(origin_of_url) {
            allowed.push(origin);
        }
        allowed.extend(own_origins(bound));
        allowed.sort();
        allowed.dedup();
        Self { allowed, any }
    }

    /// Whether an upgrade with these headers may proceed.
    pub fn allow(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else { return false };
        self.allowed.contains(&normalize(origin))
    }

    /// The origins allowed besides any configured wildcard, for the log.
    pub fn listed(&self) -> &[String] {
        &self.allowed
    }
}

/// Lower-cased, without a trailing slash, and without the default port of
/// its scheme: the form origins are compared in.
pub fn normalize(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if origin.starts_with(scheme)
            && let Some(stripped) = origin.strip_suffix(port)
        {
            return stripped.to_owned();
        }
    }
    origin
}

/// The page origin of a `ws:`/`wss:`/`http:`/`https:` URL.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())?;
    Some(normalize(&format!("{scheme}://{authority}")))
}

/// The origins a page served by this very listener has.
fn own_origins(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let ip = bound.ip();
    if ip.is_unspecified() {
        // Which name clients use is unknown: only --public-url can say.
        return Vec::new();
    }
    let mut hosts = vec![match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }];
    if ip.is_loopback() {
        hosts.push("localhost".into());
    }
    hosts.into_iter().map(|h| normalize(&format!("http://{h}:{port}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        h.insert(header::ORIGIN, origin.parse().expect("origin"));
        h
    }

    #[test]
    fn only_the_servers_own_origin_by_default() {
        let o = Origins::new(&[], Some("wss://Signal.example.org/v1/ws"), "127.0.0.1:8080".parse().expect("addr"));
        assert!(o.allow(&HeaderMap::new()), "native clients send no Origin");
        assert!(o.allow(&with_origin("https://signal.example.org", "signal.example.org")));
        assert!(o.allow(&with_origin("https://signal.example.org:443/", "x")));
        assert!(o.allow(&with_origin("http://127.0.0.1:8080", "127.0.0.1:8080")));
        assert!(o.allow(&with_origin("http://localhost:8080", "localhost:8080")));
        assert!(!o.allow(&with_origin("https://evil.example", "signal.example.org")));
        assert!(!o.allow(&with_origin("http://signal.example.org", "signal.example.org")), "scheme matters");
        // DNS rebinding: the attacker's name resolves to us, so Host agrees
        // with Origin; neither is ours.
        assert!(!o.allow(&with_origin("http://rebind.example:8080", "rebind.example:8080")));
    }

    #[test]
    fn configured_and_wildcard() {
        let bound = "0.0.0.0:8080".parse().expect("addr");
        let o = Origins::new(&["https://APP.example/".into()], None, bound);
        assert!(o.allow(&with_origin("https://app.example", "x")));
        assert!(!o.allow(&with_origin("http://0.0.0.0:8080", "x")), "a wildcard bind has no own origin");
        let any = Origins::new(&["*".into()], None, bound);
        assert!(any.allow(&with_origin("https://anything.example", "x")));
    }
}
