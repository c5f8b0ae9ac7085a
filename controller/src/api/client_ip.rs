//! Who a request comes from, for the login limiter: the peer address of its
//! connection or, when that peer is a trusted proxy (`ORCH_TRUSTED_PROXIES`),
//! the client the proxies name in `X-Forwarded-For`. Without trusted proxies
//! the header is ignored, since any client can send it.

use super::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Most `X-Forwarded-For` entries looked at, right to left: more proxies
/// than this in a row is a misconfiguration, and the list is client input.
const MAX_HOPS: usize = 32;

/// The header a proxy appends the address of its own peer to.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The networks of the proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// What one `X-Forwarded-For` entry says.
enum Hop {
    /// An address: a client, or a proxy if it is a trusted one.
    Address(IpAddr),
    /// Not an address: nothing to its left can be believed.
    Malformed,
}

impl TrustedProxies {
    /// Trusts the proxies in `networks` (addresses are networks of one).
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`:
    /// `peer` itself unless it is a trusted proxy; else the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (entries further
    /// left were written by whoever the client is, so cannot be believed).
    /// If every entry is a trusted proxy, the leftmost; if one is not an
    /// address, the last proxy before it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        for hop in forwarded_right_to_left(headers).take(MAX_HOPS) {
            match hop {
                Hop::Address(ip) if self.contains(ip) => client = ip,
                Hop::Address(ip) => return ip,
                Hop::Malformed => return client,
            }
        }
        client
    }
}

/// The entries of every `X-Forwarded-For` line, nearest proxy first.
fn forwarded_right_to_left(headers: &HeaderMap) -> impl Iterator<Item = Hop> + '_ {
    headers.get_all(&X_FORWARDED_FOR).iter().rev().flat_map(|line| {
        let entries: Vec<Hop> = match line.to_str() {
            Ok(text) => text.rsplit(',').map(parse_hop).collect(),
            Err(_) => vec![Hop::Malformed],
        };
        entries
    })
}

/// One entry: an address, possibly with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(entry: &str) -> Hop {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .map_or(Hop::Malformed, |ip| Hop::Address(ip.to_canonical()))
}

/// The client a request comes from (see [`TrustedProxies::client`]);
/// absent when the server does not know the peer (in-process calls).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(
            peer.map(|peer| state.trusted_proxies.client(peer, &parts.headers)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.1/32".parse().unwrap(),
        ])
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The client [`proxies`] find for a request from `peer` with these
    /// `X-Forwarded-For` lines.
    fn client_of(peer: &str, lines: &[&str]) -> IpAddr {
        proxies().client(ip(peer), &headers(lines))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(client_of("198.51.100.1", &["203.0.113.9"]), ip("198.51.100.1"));
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_entry() {
        let client = ip("203.0.113.9");
        assert_eq!(
            client_of("192.0.2.1", &["1.1.1.1, 203.0.113.9, 10.1.2.3"]),
            client
        );
        assert_eq!(
            client_of("192.0.2.1", &["1.1.1.1, 203.0.113.9", "10.1.2.3"]),
            client
        );
        assert_eq!(client_of("10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses_are_read() {
        assert_eq!(client_of("10.0.0.1", &["[2001:db8::7]:4711"]), ip("2001:db8::7"));
        assert_eq!(
            client_of("::ffff:10.0.0.1", &["203.0.113.9:80"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_last_proxy() {
        assert_eq!(
            client_of("10.0.0.1", &["203.0.113.9, unknown, 10.1.2.3"]),
            ip("10.1.2.3")
        );
        assert_eq!(client_of("10.0.0.1", &["10.9.9.9, 10.1.2.3"]), ip("10.9.9.9"));
    }
}
