//! Invariants over untrusted input, shared by the cargo-fuzz targets (`fuzz/`) and the corpus
//! regression test (`tests/fuzz_corpus.rs`), so the committed corpus is replayed on stable Rust in every
//! `cargo test` and a fuzzer finding becomes a permanent test by dropping its input into the corpus.
//!
//! Each function takes raw fuzzer bytes, must never panic, and panics only when an invariant breaks.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::Config;
use crate::identity::hygiene::{self, Hygiene};
use crate::identity::jwt;
use crate::policy::routes::canonical_path;
use crate::policy::Policy;

/// The OpenClaw profile's default policy, compiled once.
fn openclaw_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let cfg = Config::parse(
            "[upstream]\nurl = \"http://127.0.0.1:18789\"\nprofile = \"openclaw\"\n\
             [trusted_proxy]\npeers = [\"127.0.0.1/32\"]\nuser_header = \"x-forwarded-user\"\n",
            None,
        )
        .expect("the built-in fuzz policy parses");
        Policy::compile(&cfg)
    })
}

fn hygiene() -> &'static Hygiene {
    static HYGIENE: OnceLock<Hygiene> = OnceLock::new();
    HYGIENE.get_or_init(|| {
        let user = HeaderName::from_static("x-forwarded-user");
        let groups = HeaderName::from_static("x-forwarded-groups");
        let assertion = HeaderName::from_static("x-scopegate-assertion");
        Hygiene::new(&[&user, &groups, &assertion], &[&user, &groups])
    })
}

/// Path canonicalisation and route matching: an accepted path is returned unchanged (the upstream
/// receives exactly what was authorised), has no dot or empty segments, no escaped separator or dot;
/// matching it never panics, and a case variant of a known route never inherits that route's access.
pub fn path_and_routes(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let (path, method) = match raw.split_once('\n') {
        Some((m, p)) => (p, Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)),
        None => (raw, Method::POST),
    };
    let Ok(accepted) = canonical_path(path) else {
        return;
    };
    assert_eq!(accepted, path, "canonicalisation must not rewrite the path");
    assert!(accepted.starts_with('/'));
    for seg in accepted[1..].split('/') {
        assert!(seg != "." && seg != "..", "dot segment accepted: {path:?}");
    }
    let lower = accepted.to_ascii_lowercase();
    for banned in ["%2f", "%5c", "%2e", "%25", "%3b", ";", "\\"] {
        assert!(!lower.contains(banned), "{banned} accepted in {path:?}");
    }
    let policy = openclaw_policy();
    let m = policy.routes.find(&method, accepted, false);
    let _ = policy.routes.label(m);
    if let Some(route) = policy.routes.route(m) {
        // Only a byte-exact (case-sensitive) match may select a route.
        assert!(route.matches(&method, accepted, false));
    }
}

/// Header hygiene: after `scrub`, no managed, hop-by-hop or `Connection`-nominated header survives,
/// whatever the spelling; the Authorization header never survives.
pub fn header_hygiene(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(64) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let nominated = hygiene::connection_nominated(&headers);
    let h = hygiene();
    let _ = h.smuggled_alias(&headers);
    let mut trailers = headers.clone();
    h.scrub(&mut headers);
    h.scrub_trailers(&mut trailers);
    assert!(!headers.contains_key(http::header::AUTHORIZATION));
    assert!(!headers.contains_key("http2-settings"));
    for name in headers.keys() {
        let s = name.as_str();
        assert!(!h.is_managed(s), "managed header {s} survived scrub");
        assert!(
            !nominated
                .iter()
                .any(|n| hygiene::fold(n) == hygiene::fold(s)),
            "Connection-nominated header {s} survived scrub"
        );
    }
    for name in trailers.keys() {
        assert!(
            !h.is_managed(name.as_str()),
            "managed trailer {name} survived"
        );
    }
}

/// JWT pre-parsing: never panics, never accepts an unsigned (`alg: none` style) or oversized token, and
/// agrees with the cheap shape test (anything it accepts also looks like a JWT).
pub fn jwt_preparse(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let looks = jwt::looks_like_jwt(token);
    match jwt::parse_compact(token, 8 * 1024) {
        Ok(compact) => {
            assert!(token.len() <= 8 * 1024);
            assert!(looks, "pre-parser accepted a token of the wrong shape");
            assert!(
                token.starts_with(compact.signing_input),
                "signing input is not the token's own prefix"
            );
            assert!(!compact.signature_b64.is_empty(), "unsigned token accepted");
        }
        Err(e) => {
            let _ = (e.code(), e.message());
        }
    }
}

/// Config parsing: arbitrary text yields a config or a located error, never a panic; a config that
/// parses also compiles into a policy.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, None) {
        Ok(cfg) => {
            let _ = Policy::compile(&cfg);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The WebSocket `connect` frame check: never panics; anything accepted is a JSON object with
/// `type: "req"`, `method: "connect"`, a string or number id and a params object.
pub fn ws_connect_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((id, frame)) = crate::upstream::openclaw::inband::parse_connect(text) {
        assert!(id.is_string() || id.is_number());
        assert_eq!(frame["type"], "req");
        assert_eq!(frame["method"], "connect");
        assert!(frame["params"].is_object());
    }
}

/// An upstream response as scopegate's own client reads it: the first byte picks the request method
/// (odd: `HEAD`) and how the rest is cut into reads; the rest is what the upstream sent before closing.
/// Invariants: no panic; the outcome (head, body bytes, trailers, or an error) does not depend on how
/// the bytes arrive; a body framed by length is exactly that long; a consumed head leaves the buffer
/// holding only what followed it.
pub fn upstream_response(data: &[u8]) {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let method = if control & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let step = usize::from(control >> 1).max(1);
    let whole = read_response(&method, wire, wire.len().max(1));
    let pieces = read_response(&method, wire, step);
    assert_eq!(
        whole, pieces,
        "the outcome depends on how the bytes were split"
    );
}

/// What reading `wire` (delivered `step` bytes per read, then EOF) produced, in comparable form.
fn read_response(method: &Method, wire: &[u8], step: usize) -> String {
    use crate::upstream::wire::codec::{parse_head, BodyDecoder, BodyEvent, Framing};
    use bytes::BytesMut;
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut feed = |buf: &mut BytesMut| -> bool {
        let end = (fed + step).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        let more = end > fed;
        fed = end;
        more
    };
    let head = loop {
        match parse_head(&mut buf, method) {
            Err(e) => return format!("head error: {e}"),
            Ok(Some(head)) => break head,
            Ok(None) => {
                if !feed(&mut buf) {
                    return "truncated head".into();
                }
            }
        }
    };
    let mut out = format!(
        "{} {:?} {:?} keep-alive={}\n",
        head.response.status(),
        head.response.headers(),
        head.framing,
        head.keep_alive
    );
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    let mut eof = false;
    loop {
        match decoder.decode(&mut buf, eof) {
            Err(e) => {
                out.push_str(&format!("body error: {e}"));
                return out;
            }
            Ok(Some(BodyEvent::Data(d))) => {
                assert!(!d.is_empty(), "an empty data frame");
                body.extend_from_slice(&d);
            }
            Ok(Some(BodyEvent::Trailers(t))) => out.push_str(&format!("trailers {t:?}\n")),
            Ok(Some(BodyEvent::End)) => break,
            Ok(None) => {
                assert!(!eof, "the decoder asked for more after EOF");
                eof = !feed(&mut buf);
            }
        }
    }
    if let Framing::Length(n) = head.framing {
        assert_eq!(
            body.len() as u64,
            n,
            "a length-framed body of another length"
        );
    }
    // What follows the response stays for the next one (the connection is then not reused).
    while feed(&mut buf) {}
    out.push_str(&format!("body {body:?}\nafter {:?}", &buf[..]));
    out
}
