//! The client's address, and the forwarding facts a trusted peer vouches for.
//!
//! `X-Forwarded-For` is read only from a trusted peer, and walked from the right: each hop a trusted
//! proxy appended is skipped, and the first hop that is not itself trusted is the client. Reading the
//! leftmost entry — which the client wrote — is the mistake oauth2-proxy is still fixing (#3478).

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::{canonical_ip, peer_matches, PeerMatch};
use crate::error::Refusal;

/// What the request's forwarding headers establish, given whether the peer is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The original client, when known (a unix peer without XFF has none).
    pub client_ip: Option<IpAddr>,
    /// `https`/`http` as vouched for by a trusted peer.
    pub proto: Option<&'static str>,
    /// The host the client asked for, as vouched for by a trusted peer.
    pub host: Option<String>,
}

/// Resolves the client address. `trusted_hops` are every peer net scopegate trusts for forwarding
/// (Tailscale peers and trusted proxies); `peer_trusted` says whether this connection's peer is one.
pub fn resolve(
    headers: &HeaderMap,
    peer_ip: Option<IpAddr>,
    peer_trusted: bool,
    trusted_hops: &[PeerMatch],
) -> Result<Forwarded, Refusal> {
    if !peer_trusted {
        return Ok(Forwarded {
            client_ip: peer_ip,
            proto: None,
            host: None,
        });
    }
    let mut hops: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let s = v
            .to_str()
            .map_err(|_| malformed("X-Forwarded-For is not ASCII"))?;
        hops.extend(s.split(',').map(str::trim).filter(|h| !h.is_empty()));
    }
    let mut client = peer_ip;
    for hop in hops.iter().rev() {
        let ip = parse_hop(hop).ok_or_else(|| {
            malformed(
                "X-Forwarded-For from a trusted peer names a client that is not an IP address",
            )
        })?;
        client = Some(ip);
        if !peer_matches(trusted_hops, Some(ip)) {
            break;
        }
    }
    let proto = match headers.get("x-forwarded-proto").map(|v| v.to_str()) {
        None => None,
        Some(Ok(p)) if p.eq_ignore_ascii_case("https") => Some("https"),
        Some(Ok(p)) if p.eq_ignore_ascii_case("http") => Some("http"),
        Some(_) => {
            return Err(malformed(
                "X-Forwarded-Proto from a trusted peer is neither http nor https",
            ))
        }
    };
    let host = match headers.get("x-forwarded-host").map(|v| v.to_str()) {
        None => None,
        Some(Ok(h)) if valid_host(h) => Some(h.to_string()),
        Some(_) => {
            return Err(malformed(
                "X-Forwarded-Host from a trusted peer is not a host",
            ))
        }
    };
    Ok(Forwarded {
        client_ip: client,
        proto,
        host,
    })
}

fn malformed(msg: &str) -> Refusal {
    Refusal::bad_request("malformed_forwarding", msg)
}

/// One XFF entry: an IP, an `IP:port`, or a bracketed IPv6 with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    None
}

/// A host or host:port: no spaces, slashes, `@` or control bytes.
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<PeerMatch> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_ignores_xff() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let f = resolve(&h, Some(ip("203.0.113.9")), false, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(f.client_ip, Some(ip("203.0.113.9")));
        assert_eq!(f.proto, None);
    }

    #[test]
    fn walks_from_the_right_skipping_trusted_hops() {
        let mut h = HeaderMap::new();
        // The client wrote the first entry; two trusted proxies appended theirs.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 198.51.100.7, 10.0.0.5"),
        );
        let f = resolve(&h, Some(ip("10.0.0.1")), true, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(f.client_ip, Some(ip("198.51.100.7")));
    }

    #[test]
    fn multiple_xff_lines_are_one_list() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        let f = resolve(&h, Some(ip("10.0.0.1")), true, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(f.client_ip, Some(ip("198.51.100.7")));
    }

    #[test]
    fn garbage_only_matters_where_trusted_hops_vouch_for_it() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("garbage, 198.51.100.7"),
        );
        let f = resolve(&h, Some(ip("10.0.0.1")), true, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(f.client_ip, Some(ip("198.51.100.7")));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, garbage"),
        );
        assert!(resolve(&h, Some(ip("10.0.0.1")), true, &nets(&["10.0.0.0/8"])).is_err());
    }

    #[test]
    fn mapped_ipv6_and_ports() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        let f = resolve(&h, None, true, &nets(&["unix"])).unwrap();
        assert_eq!(f.client_ip, Some(ip("2001:db8::1")));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("::ffff:100.64.0.7"),
        );
        let f = resolve(&h, None, true, &nets(&["unix"])).unwrap();
        assert_eq!(f.client_ip, Some(ip("100.64.0.7")));
    }

    #[test]
    fn proto_and_host_are_validated() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("gw.example.ts.net"),
        );
        let f = resolve(&h, Some(ip("127.0.0.1")), true, &nets(&["127.0.0.1"])).unwrap();
        assert_eq!(f.proto, Some("https"));
        assert_eq!(f.host.as_deref(), Some("gw.example.ts.net"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil/path"));
        assert!(resolve(&h, Some(ip("127.0.0.1")), true, &nets(&["127.0.0.1"])).is_err());
    }
}
