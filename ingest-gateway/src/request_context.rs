//! Where a request came from, kept with each of its events (README, "Request
//! context"): the client's IP, its `User-Agent`, and the page's `Origin` and
//! `Referer`.
//!
//! The client IP is the TCP peer, unless the peer is a proxy the operator
//! trusts (`POWEHI_TRUSTED_PROXIES`): then `X-Forwarded-For` is read from its
//! right end, each trusted hop vouching for the address it appended, and the
//! first address no trusted proxy owns is the client. A header sent by anyone
//! else is ignored, since the client writes whatever it likes into it; so is
//! what lies left of a value that is not an address (nobody vouches for it).

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

use actix_web::http::header::{HeaderMap, HeaderName, ORIGIN, REFERER, USER_AGENT};
use actix_web::HttpRequest;
use proto::text::prefix;
use proto::RequestContext;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Longest value kept of each header, in bytes: a client sends them, and every
/// event of its request carries them to Kafka and ClickHouse.
const MAX_USER_AGENT_BYTES: usize = 512;
const MAX_ORIGIN_BYTES: usize = 256;
const MAX_REFERER_BYTES: usize = 1024;
/// `X-Forwarded-For` hops looked at, from the right: more than any real chain.
const MAX_FORWARDED_HOPS: usize = 16;

/// An address range, `10.0.0.0/8` or `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let parsed = IpAddr::from_str(address)
            .map_err(|_| format!("{text:?} is not an IP address or a CIDR range"))?;
        // `::ffff:10.0.0.0/104` is 10.0.0.0/8: peers are compared in their IPv4 form.
        let network = canonical(parsed);
        let bits = if parsed.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let prefix = if network.is_ipv4() && parsed.is_ipv6() {
            prefix.checked_sub(96).ok_or_else(|| {
                format!("{text:?}: an IPv4-mapped range needs a prefix of 96 or more")
            })?
        } else {
            prefix
        };
        Ok(Self { network, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xff_u8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The client's address: see the module doc.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Lossy, not `to_str`: a proxy that appends to a line holding a client's
    // non-ASCII bytes still vouches for its own entry on the right.
    let lines: Vec<String> = headers
        .get_all(X_FORWARDED_FOR)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let hops: Vec<&str> = lines.iter().flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, perhaps bracketed or with a port
/// (`[v6]`, `[v6]:p`, `v4:p`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    IpAddr::from_str(hop)
        .ok()
        .or_else(|| std::net::SocketAddr::from_str(hop).ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| IpAddr::from_str(h).ok())
        })
        .map(canonical)
}

/// The context of `request`, owned (it outlives the borrow of the request's
/// headers in the records built from it).
pub fn of(request: &HttpRequest, trusted: &[IpNet]) -> RequestContext<'static> {
    let headers = request.headers();
    let header = |name: &HeaderName, limit: usize| -> Cow<'static, str> {
        headers.get(name).map_or(Cow::Borrowed(""), |value| {
            Cow::Owned(prefix(&String::from_utf8_lossy(value.as_bytes()), limit).to_string())
        })
    };
    let ip = client_ip(request.peer_addr().map(|a| a.ip()), headers, trusted);
    RequestContext {
        ip: ip.map_or(Cow::Borrowed(""), |ip| Cow::Owned(ip.to_string())),
        user_agent: header(&USER_AGENT, MAX_USER_AGENT_BYTES),
        origin: header(&ORIGIN, MAX_ORIGIN_BYTES),
        referer: header(&REFERER, MAX_REFERER_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(X_FORWARDED_FOR, value);
            }
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn ranges_parse_and_match() {
        let net: Result<IpNet, _> = "10.1.0.0/16".parse();
        let Ok(net) = net else { panic!("{net:?}") };
        assert!(net.contains("10.1.200.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!net.contains("10.2.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        let mapped = "::ffff:10.1.2.3"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(net.contains(mapped), "an IPv4 peer on a dual-stack socket");
        assert!("fd00::/8".parse::<IpNet>().is_ok());
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        let mapped_net: Result<IpNet, _> = "::ffff:10.0.0.0/104".parse();
        assert_eq!(mapped_net, "10.0.0.0/8".parse::<IpNet>());
        let odd: Result<IpNet, _> = "192.168.0.0/23".parse();
        let Ok(odd) = odd else { panic!() };
        assert!(odd.contains([192, 168, 1, 9].into()) && !odd.contains([192, 168, 2, 9].into()));
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let headers = forwarded(&["198.51.100.7"]);
        // From an untrusted peer the header is whatever the client wrote.
        assert_eq!(
            client_ip(ip("203.0.113.5"), &headers, &trusted),
            ip("203.0.113.5")
        );
        // Behind a trusted proxy, the address it vouches for.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // Nothing trusted configured: the peer.
        assert_eq!(client_ip(ip("127.0.0.1"), &headers, &[]), ip("127.0.0.1"));
    }

    #[test]
    fn a_spoofed_left_entry_is_not_believed() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client sent "1.2.3.4"; the edge proxy appended the real client,
        // an inner proxy appended the edge.
        let headers = forwarded(&["1.2.3.4, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // Garbage where an address should be: the last vouched address.
        let headers = forwarded(&["198.51.100.7, unknown, 10.0.0.2"]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &headers, &trusted),
            ip("10.0.0.2")
        );
        // Ports are tolerated.
        let headers = forwarded(&["[2001:db8::1]"]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &headers, &trusted),
            ip("2001:db8::1")
        );
        let headers = forwarded(&["[2001:db8::1]:4711", "198.51.100.8:80"]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &headers, &trusted),
            ip("198.51.100.8")
        );
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let text = "é".repeat(600);
        let cut = prefix(&text, MAX_USER_AGENT_BYTES);
        assert!(cut.len() <= MAX_USER_AGENT_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
