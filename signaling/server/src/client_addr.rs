//! Who a request comes from, for per-source fairness: the TCP peer, or,
//! when the TCP peer is a proxy the operator trusts, the address the proxy
//! says it forwarded for (`X-Forwarded-For`, else `Forwarded: for=`).
//!
//! Headers from anyone else are ignored: a client cannot pick its own
//! bucket by writing a header. The PROXY protocol is not read (see decision
//! 0013).

use axum::http::HeaderMap;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix in {s:?}"))?
            }
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (full, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts these ranges.
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(ranges)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address: `peer` itself unless it is a trusted proxy;
    /// then the nearest address in the forwarding chain that is not a
    /// trusted proxy (the rightmost untrusted entry: entries to its left
    /// were written by the client and prove nothing). The chain is read
    /// from the right and stops at an entry it cannot read, so an unknown
    /// entry never lets a client-written one to its left count. Without
    /// `X-Forwarded-For` or `Forwarded`, `X-Real-IP` (nginx's other usual
    /// header) is read.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded_chain(headers).iter().rev() {
            let Some(ip) = entry else { break };
            client = *ip;
            if !self.contains(*ip) {
                break;
            }
        }
        client
    }
}

/// One entry of a forwarding header: an address, with or without a port,
/// IPv6 in brackets or not; `None` for what cannot be read (`unknown`, an
/// obfuscated name).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

/// The forwarded-for chain, leftmost (claimed origin) first; an entry that
/// cannot be read is `None`.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().map(|v| v.to_str().map(str::to_owned).unwrap_or_default()).collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff.iter().flat_map(|v| v.split(',')).map(parse_entry).collect();
    }
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                // `for=` in each element; an element without one is skipped.
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.trim().eq_ignore_ascii_case("for").then(|| parse_entry(value))
                })
            })
            .collect();
    }
    values("x-real-ip").iter().map(|v| parse_entry(v)).collect()
}

/// The address a per-source limit counts by: an IPv4 address (or an
/// IPv4-mapped IPv6 one) as itself, an IPv6 address by its /64, since one
/// host or customer commonly holds a whole /64 and would otherwise be as
/// many sources as it likes.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Whether `ip` is loopback, also as an IPv4-mapped IPv6 address (a
/// dual-stack `[::]` bind sees local IPv4 peers as `::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Whether a request carries forwarding headers at all: a sign that the
/// server sits behind a proxy (so binding to loopback does not make it
/// private).
pub fn looks_proxied(headers: &HeaderMap) -> bool {
    ["x-forwarded-for", "forwarded", "x-real-ip"].iter().any(|h| headers.contains_key(*h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ranges() {
        let net: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.9.9.9")), "mapped v4");
        let one: Cidr = "192.0.2.7".parse().expect("single");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/33".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:7fff::1")) && !v6.contains(ip("2001:db8:8000::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let trusted =
            TrustedProxies::new(vec!["127.0.0.1".parse().expect("cidr"), "10.0.0.0/8".parse().expect("cidr")]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.5".parse().expect("header"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.9"), "rightmost untrusted");
        assert_eq!(trusted.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"), "untrusted peer: header ignored");
        let mut f = HeaderMap::new();
        f.insert("forwarded", r#"for="[2001:db8::1]:4711";proto=https, for=192.0.2.60:80"#.parse().expect("header"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &f), ip("192.0.2.60"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
        assert!(looks_proxied(&h) && !looks_proxied(&HeaderMap::new()));
        // An entry that cannot be read stops the walk: the client-written
        // one to its left does not count.
        let mut u = HeaderMap::new();
        u.insert("x-forwarded-for", "6.6.6.6, unknown".parse().expect("header"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &u), ip("127.0.0.1"));
        let mut p = HeaderMap::new();
        p.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9:5678, [2001:db8::7]".parse().expect("header"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &p), ip("2001:db8::7"));
        let mut r = HeaderMap::new();
        r.insert("x-real-ip", "198.51.100.4".parse().expect("header"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &r), ip("198.51.100.4"));
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), source_key(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(source_key(ip("2001:db8:1:2::1")), source_key(ip("2001:db8:1:3::1")));
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert!(is_loopback(ip("::ffff:127.0.0.1")));
    }
}
