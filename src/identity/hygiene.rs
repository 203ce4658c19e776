//! Header hygiene: no client copy of an identity, scope, forwarding or assertion header ever reaches the
//! upstream.
//!
//! Names are compared after folding case, `_` and `.` to one spelling, because the servers behind a proxy
//! often do (CGI, PHP, WSGI turn `X_Forwarded_User` and `x.forwarded.user` into the same variable): that
//! is the alias class of oauth2-proxy CVE-2025-64484 and Traefik's 2026 advisories. The same rule is
//! applied to trailers, and `Connection`-nominated removal happens before scopegate injects its own
//! headers, so a client can neither smuggle nor remove them.

use std::collections::HashSet;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Version};

use crate::error::Refusal;

type FastSet = HashSet<String, foldhash::fast::RandomState>;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the non-standard ones proxies meet in practice.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The h2c upgrade's settings (RFC 7540 §3.2.1, deprecated by RFC 9113 §3.1), meant for the immediate
/// connection only; scopegate never honours the upgrade. A client is supposed to nominate it in
/// `Connection`, but one that does not must not get it forwarded: it is dropped either way. Removed by
/// name rather than through the first-byte table, which would send `Host` (every request) down the
/// slow path.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Identity and assertion headers that some upstream, somewhere, trusts. None of them may come from a
/// client; scopegate sets the ones its profile needs itself.
const ALWAYS_MANAGED: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-openclaw-scopes",
    "tailscale-user-login",
    "tailscale-user-name",
    "tailscale-user-profile-pic",
    "tailscale-app-capabilities",
    "tailscale-funnel-request",
    "tailscale-headers-info",
    "remote-user",
    "x-remote-user",
    "x-user",
    "x-auth-user",
    "x-authenticated-user",
    "x-webauth-user",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-pomerium-jwt-assertion",
    "cf-access-jwt-assertion",
    "cf-access-authenticated-user-email",
    "cf-connecting-ip",
    "x-goog-iap-jwt-assertion",
    "x-goog-authenticated-user-email",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "authorization",
];

/// Every `x-forwarded-*` and `x-scopegate-*` header is managed.
const MANAGED_PREFIXES: &[&str] = &["x-forwarded-", "x-scopegate-"];

/// Folds a lower-case header name to its canonical comparison form: `_` and `.` become `-`.
pub fn fold(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .bytes()
        .any(|b| b == b'_' || b == b'.' || b.is_ascii_uppercase())
    {
        std::borrow::Cow::Owned(
            name.bytes()
                .map(|b| match b {
                    b'_' | b'.' => '-',
                    b => b.to_ascii_lowercase() as char,
                })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The managed-name set of one config snapshot.
#[derive(Debug, Clone)]
pub struct Hygiene {
    /// First bytes of every name that may need removing: most request headers (host, accept, user-agent,
    /// content-*) are ruled out with one table lookup.
    first_bytes: [bool; 256],
    managed: FastSet,
    /// Names scopegate itself reads from trusted peers; an alias spelling of one of these from a
    /// trusted peer means a client smuggled it through the proxy.
    read_from_peers: FastSet,
}

impl Hygiene {
    /// `extra` are the configured names (user/groups headers, assertion header, scopes header).
    pub fn new(extra: &[&HeaderName], read_from_peers: &[&HeaderName]) -> Hygiene {
        let mut managed: FastSet = ALWAYS_MANAGED.iter().map(|s| s.to_string()).collect();
        for h in extra {
            managed.insert(fold(h.as_str()).into_owned());
        }
        let mut read: FastSet = read_from_peers
            .iter()
            .map(|h| fold(h.as_str()).into_owned())
            .collect();
        for h in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "tailscale-user-login",
            "tailscale-user-name",
            "tailscale-app-capabilities",
            "x-request-id",
        ] {
            read.insert(h.to_string());
        }
        let mut first_bytes = [false; 256];
        for name in managed
            .iter()
            .map(String::as_str)
            .chain(HOP_BY_HOP.iter().copied())
            .chain(MANAGED_PREFIXES.iter().copied())
        {
            if let Some(&b) = name.as_bytes().first() {
                first_bytes[b as usize] = true;
            }
        }
        Hygiene {
            first_bytes,
            managed,
            read_from_peers: read,
        }
    }

    /// True when a (lower-case) header name must never be forwarded from a client.
    pub fn is_managed(&self, name: &str) -> bool {
        let folded = fold(name);
        self.managed.contains(folded.as_ref())
            || MANAGED_PREFIXES.iter().any(|p| folded.starts_with(p))
    }

    /// From a trusted peer: an alias spelling (`x_forwarded_user`) of a header scopegate reads. A real
    /// proxy never sends one, so its presence means client bytes slipped through — refuse, don't guess.
    pub fn smuggled_alias<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers.keys().map(|k| k.as_str()).find(|name| {
            name.bytes().any(|b| b == b'_' || b == b'.')
                && self.read_from_peers.contains(fold(name).as_ref())
        })
    }

    /// Removes hop-by-hop, `Connection`-nominated and managed headers. Call after identification has
    /// read what it needs, and before anything is injected.
    pub fn scrub(&self, headers: &mut HeaderMap) {
        // The credential was consumed by identification; it never goes upstream.
        headers.remove(header::AUTHORIZATION);
        headers.remove(HTTP2_SETTINGS);
        // `Trailer` announces the trailer fields to come (hyper only sends announced ones); it stays,
        // minus any name that would be dropped from the trailers anyway.
        if headers.contains_key(header::TRAILER) {
            self.scrub_trailer_announcement(headers);
        }
        let has_connection = headers.contains_key(header::CONNECTION);
        // Most request headers (host, accept, user-agent, content-*) are ruled out by their first byte.
        let doomed = |name: &HeaderName| {
            let s = name.as_str();
            let candidate = s
                .as_bytes()
                .first()
                .is_some_and(|&b| self.first_bytes[b as usize]);
            (candidate || has_connection)
                && (HOP_BY_HOP.contains(&s)
                    || self.is_managed(s)
                    || (has_connection && nominated_by_connection(headers, s)))
        };
        if !headers.keys().any(doomed) {
            return;
        }
        let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
        for name in names {
            headers.remove(&name);
        }
    }

    fn scrub_trailer_announcement(&self, headers: &mut HeaderMap) {
        let kept: Vec<String> = headers
            .get_all(header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty() && !self.trailer_forbidden(n))
            .collect();
        headers.remove(header::TRAILER);
        if let Ok(v) = http::HeaderValue::from_str(&kept.join(", ")) {
            if !kept.is_empty() {
                headers.insert(header::TRAILER, v);
            }
        }
    }

    fn trailer_forbidden(&self, s: &str) -> bool {
        HOP_BY_HOP.contains(&s)
            || self.is_managed(s)
            || matches!(
                s,
                "content-length" | "host" | "trailer" | "authorization" | "http2-settings"
            )
    }

    /// Trailers get the same treatment as headers (Traefik GHSA-v67p-phpq-fc8x smuggled names there).
    pub fn scrub_trailers(&self, trailers: &mut HeaderMap) {
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in trailers.keys() {
            if self.trailer_forbidden(name.as_str()) {
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            trailers.remove(&name);
        }
    }
}

/// True when a `Connection` header nominates `name` (compared after folding), without allocating.
pub fn nominated_by_connection(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let t = t.trim();
                t.len() == name.len()
                    && t.bytes().zip(name.bytes()).all(|(a, b)| {
                        let fa = match a.to_ascii_lowercase() {
                            b'_' | b'.' => b'-',
                            c => c,
                        };
                        let fb = match b {
                            b'_' | b'.' => b'-',
                            c => c,
                        };
                        fa == fb
                    })
            })
        })
    })
}

/// The header names a `Connection` header nominates as hop-by-hop (lower-case, `close`/`keep-alive`
/// included; they are removed either way).
pub fn connection_nominated(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            for token in s.split(',') {
                let t = token.trim();
                if !t.is_empty() {
                    out.push(t.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

/// True when some `name` header lists `token` (comma-separated, compared case-insensitively).
pub(crate) fn lists_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A request that asks for a WebSocket: `Connection` has an `upgrade` token (Firefox sends
/// `keep-alive, Upgrade`) and `Upgrade` names `websocket`. Only a claim — whether it is a valid opening
/// handshake is [`websocket_handshake`]'s to say.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    lists_token(headers, header::CONNECTION, "upgrade")
        && lists_token(headers, header::UPGRADE, "websocket")
}

/// Checks that a request claiming a WebSocket upgrade is a valid opening handshake (RFC 6455 §4.1,
/// §4.2.1) and returns its `Sec-WebSocket-Key`.
///
/// Anything less is refused rather than forwarded: an upgrade is relayed without a body, so a declared
/// one would leave the upstream reading the client's first tunnel bytes as that body (two readings of
/// one byte stream), and an upstream cannot prove a handshake without a real key. A refusal for a body closes the
/// connection (see `Refusal::poisons_connection`): its bytes have no trustworthy reading.
pub(crate) fn websocket_handshake<'h>(
    method: &Method,
    version: Version,
    headers: &'h HeaderMap,
) -> Result<&'h HeaderValue, Refusal> {
    if version != Version::HTTP_11 {
        return Err(Refusal::bad_request(
            "websocket_http_version",
            format!("a WebSocket upgrade is an HTTP/1.1 request; this one is {version:?}"),
        ));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::bad_request(
            "websocket_body",
            "a WebSocket upgrade has no body; this one has Transfer-Encoding",
        ));
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        if len.to_str().ok().and_then(|l| l.parse::<u64>().ok()) != Some(0) {
            return Err(Refusal::bad_request(
                "websocket_body",
                format!(
                    "a WebSocket upgrade has no body; this one declares Content-Length: {}",
                    String::from_utf8_lossy(len.as_bytes())
                ),
            ));
        }
    }
    if method != Method::GET {
        return Err(Refusal::bad_request(
            "websocket_method",
            format!("a WebSocket upgrade is a GET; this one is {method}"),
        ));
    }
    let key = single(headers, header::SEC_WEBSOCKET_KEY)
        .map_err(|why| Refusal::bad_request("websocket_key", format!("Sec-WebSocket-Key {why}")))?;
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.as_bytes());
    if !decoded.is_ok_and(|d| d.len() == 16) {
        return Err(Refusal::bad_request(
            "websocket_key",
            "Sec-WebSocket-Key is not the base64 of 16 bytes",
        ));
    }
    let v = single(headers, header::SEC_WEBSOCKET_VERSION).map_err(|why| {
        Refusal::bad_request("websocket_version", format!("Sec-WebSocket-Version {why}"))
    })?;
    if v.as_bytes() != b"13" {
        return Err(Refusal::bad_request(
            "websocket_version",
            format!(
                "only WebSocket version 13 is supported; the request asks for {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ),
        ));
    }
    Ok(key)
}

/// The one value of a header that must appear exactly once, or what is wrong with it.
fn single(headers: &HeaderMap, name: HeaderName) -> Result<&HeaderValue, &'static str> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err("is missing"),
        (Some(_), Some(_)) => Err("was sent more than once"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hygiene() -> Hygiene {
        let user = HeaderName::from_static("x-auth-who");
        let assertion = HeaderName::from_static("x-scopegate-assertion");
        Hygiene::new(&[&user, &assertion], &[&user])
    }

    #[test]
    fn folding() {
        assert_eq!(fold("x_forwarded_user"), "x-forwarded-user");
        assert_eq!(fold("x.forwarded.user"), "x-forwarded-user");
        assert_eq!(fold("X_Forwarded.User"), "x-forwarded-user");
        assert_eq!(fold("content-type"), "content-type");
    }

    #[test]
    fn aliases_of_every_managed_header_are_removed() {
        let h = hygiene();
        let mut headers = HeaderMap::new();
        for name in [
            "x-openclaw-scopes",
            "x_openclaw_scopes",
            "x.openclaw.scopes",
            "x-forwarded-user",
            "x_forwarded_for",
            "x.forwarded.host",
            "tailscale_user_login",
            "tailscale.user.name",
            "x-auth-who",
            "x_auth_who",
            "x-scopegate-assertion",
            "x_scopegate_assertion",
            "forwarded",
            "x_real_ip",
            "authorization",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-openclaw-model", HeaderValue::from_static("m"));
        h.scrub(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["content-type", "x-openclaw-model"]);
    }

    #[test]
    fn connection_nominated_headers_go_too() {
        let h = hygiene();
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Custom-Hop, x_other"),
        );
        headers.insert("x-custom-hop", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        h.scrub(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn http2_settings_goes_whether_or_not_connection_nominates_it() {
        let h = hygiene();
        for connection in [None, Some("keep-alive"), Some("Upgrade, HTTP2-Settings")] {
            let mut headers = HeaderMap::new();
            if let Some(c) = connection {
                headers.insert("connection", HeaderValue::from_static(c));
            }
            headers.insert(
                "http2-settings",
                HeaderValue::from_static("AAMAAABkAAQAAP__"),
            );
            headers.insert("host", HeaderValue::from_static("gw"));
            h.scrub(&mut headers);
            let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, vec!["host"], "Connection: {connection:?}");
        }
        let mut trailers = HeaderMap::new();
        trailers.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        h.scrub_trailers(&mut trailers);
        assert!(trailers.is_empty());
    }

    #[test]
    fn smuggled_alias_from_trusted_peer_is_found() {
        let h = hygiene();
        let mut headers = HeaderMap::new();
        headers.insert("x-auth-who", HeaderValue::from_static("alice"));
        assert_eq!(h.smuggled_alias(&headers), None);
        headers.insert("x_auth_who", HeaderValue::from_static("admin"));
        assert_eq!(h.smuggled_alias(&headers), Some("x_auth_who"));
    }

    #[test]
    fn trailers_are_scrubbed() {
        let h = hygiene();
        let mut t = HeaderMap::new();
        t.insert(
            "x-openclaw-scopes",
            HeaderValue::from_static("operator.admin"),
        );
        t.insert("x_forwarded_user", HeaderValue::from_static("admin"));
        t.insert("x-checksum", HeaderValue::from_static("abc"));
        h.scrub_trailers(&mut t);
        assert_eq!(
            t.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["x-checksum"]
        );
    }

    #[test]
    fn websocket_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        assert!(!is_websocket_upgrade(&h));
    }

    #[test]
    fn only_a_complete_opening_handshake_is_an_upgrade() {
        const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
        let get = Method::GET;
        let post = Method::POST;
        let h11 = Version::HTTP_11;
        // (case, method, version, extra headers beyond Connection/Upgrade, expected code or None)
        type Pairs = Vec<(&'static str, &'static str)>;
        let cases: Vec<(&str, &Method, Version, Pairs, Option<&str>)> = vec![
            (
                "valid",
                &get,
                h11,
                vec![("sec-websocket-key", KEY), ("sec-websocket-version", "13")],
                None,
            ),
            (
                "Content-Length: 0 is no body",
                &get,
                h11,
                vec![
                    ("content-length", "0"),
                    ("sec-websocket-key", KEY),
                    ("sec-websocket-version", "13"),
                ],
                None,
            ),
            (
                "HTTP/1.0",
                &get,
                Version::HTTP_10,
                vec![("sec-websocket-key", KEY), ("sec-websocket-version", "13")],
                Some("websocket_http_version"),
            ),
            (
                "POST with a body",
                &post,
                h11,
                vec![
                    ("content-length", "32"),
                    ("sec-websocket-key", KEY),
                    ("sec-websocket-version", "13"),
                ],
                Some("websocket_body"),
            ),
            (
                "GET with a chunked body",
                &get,
                h11,
                vec![
                    ("transfer-encoding", "chunked"),
                    ("sec-websocket-key", KEY),
                    ("sec-websocket-version", "13"),
                ],
                Some("websocket_body"),
            ),
            (
                "POST without a body",
                &post,
                h11,
                vec![("sec-websocket-key", KEY), ("sec-websocket-version", "13")],
                Some("websocket_method"),
            ),
            (
                "no key",
                &get,
                h11,
                vec![("sec-websocket-version", "13")],
                Some("websocket_key"),
            ),
            (
                "key of 12 bytes",
                &get,
                h11,
                vec![
                    ("sec-websocket-key", "AAAAAAAAAAAAAAAA"),
                    ("sec-websocket-version", "13"),
                ],
                Some("websocket_key"),
            ),
            (
                "key not base64",
                &get,
                h11,
                vec![
                    ("sec-websocket-key", "not base64 at all!!"),
                    ("sec-websocket-version", "13"),
                ],
                Some("websocket_key"),
            ),
            (
                "two keys",
                &get,
                h11,
                vec![
                    ("sec-websocket-key", KEY),
                    ("sec-websocket-key", KEY),
                    ("sec-websocket-version", "13"),
                ],
                Some("websocket_key"),
            ),
            (
                "version 8",
                &get,
                h11,
                vec![("sec-websocket-key", KEY), ("sec-websocket-version", "8")],
                Some("websocket_version"),
            ),
            (
                "no version",
                &get,
                h11,
                vec![("sec-websocket-key", KEY)],
                Some("websocket_version"),
            ),
            (
                "version list",
                &get,
                h11,
                vec![
                    ("sec-websocket-key", KEY),
                    ("sec-websocket-version", "13, 8"),
                ],
                Some("websocket_version"),
            ),
        ];
        for (name, method, version, extra, expected) in cases {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static("Upgrade"));
            h.insert("upgrade", HeaderValue::from_static("websocket"));
            for (k, v) in extra {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            assert!(is_websocket_upgrade(&h), "{name}");
            let got = websocket_handshake(method, version, &h);
            match expected {
                None => assert_eq!(
                    got.map(|k| k.as_bytes()).ok(),
                    Some(KEY.as_bytes()),
                    "{name}"
                ),
                Some(code) => assert_eq!(got.err().map(|r| r.code), Some(code), "{name}"),
            }
        }
    }
}
