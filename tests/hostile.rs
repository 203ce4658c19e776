//! The attack suite: request smuggling, path differentials, header attacks, WebSocket abuse and
//! resource abuse, over real sockets, against a recording upstream that counts what reaches it.
//!
//! Each table row is one hostile case; every case asserts the status, the error body (when scopegate
//! answers; hyper's own parse errors have an empty body), and what the upstream saw. The case counts
//! are asserted so the suite cannot shrink silently (≥ 80 in total, see `SECURITY.md`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::client::{self, bearer, raw_json, raw_status};
use support::keys::{TestKey, AUDIENCE, ISSUER};
use support::proxy::{self, base, TestProxy};
use support::upstream::Upstream;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Gate {
    up: Upstream,
    proxy: TestProxy,
    reader: String,
    writer: String,
    key: TestKey,
}

/// scopegate (openclaw profile) with a static Ed25519 IdP key, a trusted proxy that loopback is NOT
/// part of, and tight limits.
async fn gate(extra_server: &str) -> Gate {
    gate_with(extra_server, "").await
}

/// [`gate`] with further config sections appended (e.g. `[limits]`).
async fn gate_with(extra_server: &str, sections: &str) -> Gate {
    let up = Upstream::start().await;
    let key = TestKey::ed25519("idp");
    let dir = tempfile::tempdir().unwrap();
    let entry = key.toml_entry(dir.path());
    let cfg = base(&up.url(), "openclaw").replace(
        "workers = 2\n",
        &format!(
            "workers = 2\nmax_header_bytes = \"8KiB\"\nmax_headers = 40\nmax_body_bytes = \"1MiB\"\n{extra_server}"
        ),
    ) + &format!(
        "\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{entry}\n\
         [trusted_proxy]\npeers = [\"10.0.0.0/8\"]\nuser_header = \"x-forwarded-user\"\ngroups_header = \"x-forwarded-groups\"\n{sections}"
    );
    let proxy = proxy::start_in(dir, &cfg);
    let reader = key.token("reader@example.com", &["operator.read"]);
    let writer = key.token("writer@example.com", &["operator.write"]);
    Gate {
        up,
        proxy,
        reader,
        writer,
        key,
    }
}

/// Writes `bytes`, then reads everything until the peer closes or `limit` passes.
async fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The JSON body of the first response in `text` (which may hold several).
fn first_json(text: &str) -> Value {
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return Value::Null;
    };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(rest.len());
    serde_json::from_str(&rest[..len.min(rest.len())]).unwrap_or(Value::Null)
}

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

// ── request smuggling and framing ──────────────────────────────────────────────────────────────

/// What a framing case expects.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Refused by scopegate with this status and error code; nothing forwarded. Framing refusals close
    /// the connection (`true`); the others keep it, and the follow-up request is judged on its own.
    Refused(u16, &'static str, bool),
    /// A malformed chunked body: the head was already streamed upstream, so the upstream sees a request
    /// whose body is cut short (never a complete one); the client gets 400 and the connection closes.
    BodyRejected,
    /// Refused by the HTTP parser (400, empty body); nothing forwarded; connection closed.
    ParseError,
    /// Forwarded exactly once, re-framed: the upstream saw this many body bytes and no framing or
    /// hop-by-hop header of the client's.
    ForwardedOnce { body_len: u64 },
}

#[tokio::test]
async fn smuggling_and_framing_attacks_are_refused_or_reframed() {
    let g = gate("").await;
    let auth = format!("Authorization: Bearer {}\r\n", g.writer);
    let post = |extra: &str, body: &str| {
        format!("POST /v1/responses HTTP/1.1\r\nHost: gw\r\n{auth}{extra}\r\n{body}")
    };
    // Each smuggled follow-up request carries no credential and names a path the attacker wants.
    let smuggled = "GET /sessions/x/kill HTTP/1.1\r\nHost: gw\r\n\r\n";
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "CL then TE",
            post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            Expect::ForwardedOnce { body_len: 0 },
        ),
        (
            "TE then CL with a smuggled request in the CL reading",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n",
                &format!("0\r\n\r\n{smuggled}"),
            ),
            Expect::ForwardedOnce { body_len: 0 },
        ),
        (
            "two different Content-Length",
            post("Content-Length: 2\r\nContent-Length: 3\r\n", "abc"),
            Expect::ParseError,
        ),
        (
            "Content-Length list",
            post("Content-Length: 3, 3\r\n", "abc"),
            Expect::ParseError,
        ),
        (
            "signed Content-Length",
            post("Content-Length: +3\r\n", "abc"),
            Expect::ParseError,
        ),
        (
            "negative Content-Length",
            post("Content-Length: -1\r\n", "abc"),
            Expect::ParseError,
        ),
        (
            "hex Content-Length",
            post("Content-Length: 0x3\r\n", "abc"),
            Expect::ParseError,
        ),
        (
            "Content-Length with trailing garbage",
            post("Content-Length: 3a\r\n", "abc"),
            Expect::ParseError,
        ),
        (
            "Transfer-Encoding: xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            Expect::Refused(400, "unsupported_transfer_coding", true),
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "Transfer-Encoding twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Expect::Refused(400, "unsupported_transfer_coding", true),
        ),
        (
            "space before the colon",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!("POST /v1/responses HTTP/1.0\r\nHost: gw\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "obsolete line folding",
            format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{auth}X-A: a\r\n b\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "obsolete folding hiding an identity header",
            format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{auth}X-A: a\r\n X-Forwarded-User: root\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "bare CR inside the head",
            format!("GET /v1/models HTTP/1.1\r\nHost: gw\rX-A: b\r\n{auth}\r\n"),
            Expect::ParseError,
        ),
        (
            "NUL in a header value",
            format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{auth}X-A: a\0b\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "space inside a header name",
            format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{auth}X A: b\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "header line without a colon",
            format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{auth}XA\r\n\r\n"),
            Expect::ParseError,
        ),
        (
            "HTTP/0.9 request line",
            "GET /v1/models\r\n\r\n".to_string(),
            Expect::ParseError,
        ),
        (
            "space inside the request target",
            format!("GET /v1/mod els HTTP/1.1\r\nHost: gw\r\n{auth}\r\n"),
            Expect::ParseError,
        ),
        (
            "invalid chunk size",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n"),
            Expect::BodyRejected,
        ),
        (
            "chunk longer than declared",
            post("Transfer-Encoding: chunked\r\n", "2\r\nabcdef\r\n0\r\n\r\n"),
            Expect::BodyRejected,
        ),
        (
            "HTTP/1.1 without Host",
            format!("GET /v1/models HTTP/1.1\r\n{auth}\r\n"),
            Expect::Refused(400, "missing_host", false),
        ),
        (
            "two Host headers",
            format!("GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n{auth}\r\n"),
            Expect::Refused(400, "duplicate_host", false),
        ),
        (
            "absolute-form target naming another host",
            format!("GET http://evil.example/v1/models HTTP/1.1\r\nHost: gw\r\n{auth}\r\n"),
            Expect::Refused(400, "authority_mismatch", false),
        ),
        (
            "CONNECT tunnel",
            format!("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n{auth}\r\n"),
            Expect::Refused(400, "path_not_origin_form", false),
        ),
        (
            "asterisk-form OPTIONS",
            format!("OPTIONS * HTTP/1.1\r\nHost: gw\r\n{auth}\r\n"),
            Expect::Refused(400, "path_not_origin_form", false),
        ),
    ];
    let n = cases.len();
    // A request whose body the proxy rejects may already have reached the upstream, which records it
    // only once its (cut-off) body ends: possibly after the client saw its 400 and the next case
    // began. Those cases go last, so their late records can only meet each other (and their check
    // allows any number of cut-off /v1/responses records), never a case that requires silence.
    let mut cases = cases;
    cases.sort_by_key(|(_, _, expect)| matches!(expect, Expect::BodyRejected));
    for (name, bytes, expect) in cases {
        g.up.clear();
        // A second, unauthenticated request follows on the same connection: it must never reach the
        // upstream, whatever the first one did to the framing.
        let wire = format!("{bytes}{smuggled}");
        let (text, closed) = within(
            20,
            name,
            exchange(g.proxy.addr, wire.as_bytes(), Duration::from_secs(3)),
        )
        .await;
        let first = text.split("\r\n\r\n").nth(1).unwrap_or("");
        match expect {
            Expect::Refused(status, code, closes) => {
                assert_eq!(raw_status(&text), status, "{name}: {text}");
                let body = first_json(&text);
                assert_eq!(body["error"]["reason_codes"][0], code, "{name}: {text}");
                if closes {
                    assert!(closed, "{name}: the connection must close");
                    assert_eq!(responses(&text), 1, "{name}: {text}");
                } else {
                    assert!(
                        closed || text.contains("HTTP/1.1 401"),
                        "{name}: the follow-up needs its own credential: {text}"
                    );
                }
                assert_eq!(g.up.count(), 0, "{name}: nothing may reach the upstream");
            }
            Expect::BodyRejected => {
                assert_eq!(raw_status(&text), 400, "{name}: {text}");
                assert_eq!(
                    first_json(&text)["error"]["reason_codes"][0],
                    "bad_request_body"
                );
                assert!(closed, "{name}: the connection must close");
                for seen in g.up.seen() {
                    assert_eq!(seen.uri, "/v1/responses", "{name}: nothing smuggled");
                    assert!(seen.body_len <= 2, "{name}: no complete body upstream");
                }
            }
            Expect::ParseError => {
                assert_eq!(raw_status(&text), 400, "{name}: {text}");
                assert_eq!(responses(&text), 1, "{name}: exactly one response: {text}");
                assert!(closed, "{name}: the connection must close");
                assert_eq!(g.up.count(), 0, "{name}: nothing may reach the upstream");
            }
            Expect::ForwardedOnce { body_len } => {
                assert_eq!(raw_status(&text), 200, "{name}: {text}");
                let _ = first;
                let seen = g.up.seen();
                assert_eq!(seen.len(), 1, "{name}: forwarded once, nothing smuggled");
                assert_eq!(seen[0].uri, "/v1/responses");
                assert_eq!(seen[0].body_len, body_len, "{name}");
                assert!(
                    seen[0].header("transfer-encoding").is_none()
                        || seen[0].header("content-length").is_none(),
                    "{name}: the upstream sees one framing"
                );
                // The smuggled follow-up was parsed as its own request, and refused for lack of a
                // credential.
                assert!(
                    text.contains("HTTP/1.1 401") || closed,
                    "{name}: the follow-up is refused or the connection closed: {text}"
                );
            }
        }
    }
    assert_eq!(n, 29);
}

/// hyper settles a message with both `Transfer-Encoding: chunked` and `Content-Length` before scopegate
/// sees it, in either order: Content-Length is dropped, the body is framed by chunked (RFC 9112 §6.3),
/// and the connection is closed after the response, so bytes after the chunked body — a request in the
/// Content-Length reading — are never parsed at all.
#[tokio::test]
async fn te_with_content_length_is_framed_by_chunked_and_the_connection_closed() {
    let g = gate("").await;
    let auth = format!("Authorization: Bearer {}\r\n", g.writer);
    let smuggled = "GET /sessions/x/kill HTTP/1.1\r\nHost: gw\r\n\r\n";
    let chunked = format!("5\r\nhello\r\n0\r\n\r\n{smuggled}");
    let cases = [
        (
            "Content-Length then Transfer-Encoding",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n".to_string(),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                chunked.len()
            ),
        ),
    ];
    for (name, framing) in cases {
        g.up.clear();
        let wire =
            format!("POST /v1/responses HTTP/1.1\r\nHost: gw\r\n{auth}{framing}\r\n{chunked}");
        let (text, closed) = within(
            20,
            name,
            exchange(g.proxy.addr, wire.as_bytes(), Duration::from_secs(10)),
        )
        .await;
        assert_eq!(raw_status(&text), 200, "{name}: {text}");
        assert_eq!(
            responses(&text),
            1,
            "{name}: the bytes after the body are not a request: {text}"
        );
        assert!(closed, "{name}: the connection must close");
        assert!(
            text.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{name}: the response says it closes: {text}"
        );
        let seen = g.up.seen();
        assert_eq!(seen.len(), 1, "{name}: forwarded once, nothing smuggled");
        assert_eq!(seen[0].uri, "/v1/responses", "{name}");
        assert_eq!(seen[0].body_len, 5, "{name}: framed by chunked");
        assert!(
            seen[0].header("content-length").is_none(),
            "{name}: the client's Content-Length is gone"
        );
    }
}

#[tokio::test]
async fn bare_lf_heads_are_reframed_not_passed_through() {
    // RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator; hyper does. scopegate
    // re-serialises every request, so the upstream only ever sees CRLF and the header set the strict
    // reading gives — no ambiguity survives the hop. One case per placement of the bare LF.
    let g = gate("").await;
    let auth = format!("Authorization: Bearer {}", g.reader);
    let cases = [
        format!("GET /v1/models HTTP/1.1\nHost: gw\n{auth}\n\n"),
        format!("GET /v1/models HTTP/1.1\r\nHost: gw\n{auth}\r\n\r\n"),
        format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-A: 1\nX-Forwarded-User: root\r\n\r\n"),
    ];
    for (i, c) in cases.iter().enumerate() {
        g.up.clear();
        let (text, _) = exchange(g.proxy.addr, c.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(raw_status(&text), 200, "case {i}: {text}");
        let seen = g.up.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].uri, "/v1/models");
        assert_ne!(
            seen[0].header("x-forwarded-user").as_deref(),
            Some("root"),
            "case {i}: a spoofed identity never survives"
        );
        assert_eq!(
            seen[0].header("x-forwarded-user").as_deref(),
            Some("reader@example.com"),
            "case {i}: the upstream's user header is scopegate's own: the token's subject"
        );
    }
}

#[tokio::test]
async fn h2c_upgrade_and_pseudo_header_abuse() {
    let g = gate("").await;
    // An h2c upgrade over HTTP/1.1 is not honoured and its headers are not forwarded.
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        g.reader
    );
    let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(raw_status(&text), 200, "{text}");
    let seen = g.up.last();
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(seen.header(h).is_none(), "{h} reached the upstream");
    }

    // HTTP/2 (prior knowledge): connection-specific headers are a protocol error for h2 and never
    // reach the upstream; `:authority` and `host` must agree.
    let mut h2 = client::h2c(g.proxy.addr).await;
    let before = g.up.count();
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("http://{}/v1/models", g.proxy.addr))
        .header("host", "evil.example")
        .header("authorization", bearer(&g.reader))
        .body(client::empty())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    let got = client::collect(resp).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(got.json()["error"]["reason_codes"][0], "authority_mismatch");
    assert_eq!(g.up.count(), before);

    for (name, value) in [
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let mut h2 = client::h2c(g.proxy.addr).await;
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("http://{}/v1/models", g.proxy.addr))
            .header(name, value)
            .header("authorization", bearer(&g.reader))
            .body(client::empty())
            .unwrap();
        // The h2 client library itself refuses to send most of these; when it does send, the server
        // must reset the stream. Either way the upstream sees nothing with that header.
        if let Ok(resp) = h2.send_request(req).await {
            let got = client::collect(resp).await;
            assert!(got.status.is_success() || got.status.is_client_error());
        }
        for s in g.up.seen().iter().skip(before) {
            assert!(s.header(name).is_none(), "h2 {name} reached the upstream");
        }
    }
}

/// `HTTP2-Settings` belongs to an h2c upgrade, which is never honoured: it is dropped whether or not
/// `Connection` nominates it, over HTTP/1.1 and over HTTP/2.
#[tokio::test]
async fn http2_settings_never_reaches_the_upstream_whether_or_not_connection_lists_it() {
    let g = gate("").await;
    let settings = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    let cases = [
        (
            "nominated",
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n",
        ),
        ("Upgrade: h2c, no Connection", "Upgrade: h2c\r\n"),
        (
            "Connection lists something else",
            "Connection: keep-alive\r\nUpgrade: h2c\r\n",
        ),
        ("on its own", ""),
    ];
    for (name, extra) in cases {
        g.up.clear();
        let req = format!(
            "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n{extra}{settings}\r\n",
            g.reader
        );
        let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(raw_status(&text), 200, "{name}: {text}");
        let seen = g.up.last();
        for h in ["http2-settings", "upgrade", "connection"] {
            assert!(seen.header(h).is_none(), "{name}: {h} reached the upstream");
        }
    }
    // HTTP/2 has no Connection header to nominate it with.
    let mut h2 = client::h2c(g.proxy.addr).await;
    g.up.clear();
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("http://{}/v1/models", g.proxy.addr))
        .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
        .header("authorization", bearer(&g.reader))
        .body(client::empty())
        .unwrap();
    let got = client::collect(
        within(10, "h2 response", h2.send_request(req))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        g.up.last().header("http2-settings").is_none(),
        "h2: http2-settings reached the upstream"
    );
}

// ── path differentials ─────────────────────────────────────────────────────────────────────────

/// What a lenient upstream might make of a path: decode, drop `;params`, collapse `//`, resolve dot
/// segments, drop a trailing slash, turn `\` into `/`. Used to check that no variant the upstream could
/// resolve to a protected route slipped through under a weaker rule.
fn lenient(path: &str) -> String {
    let mut decoded = path.to_string();
    for _ in 0..3 {
        let mut out = Vec::new();
        let b = decoded.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        decoded = String::from_utf8_lossy(&out).into_owned();
    }
    // Overlong UTF-8 for '/' (C0 AF) as old decoders read it.
    let decoded = decoded.replace(['\u{FFFD}', '\\'], "/");
    let decoded = decoded.split('#').next().unwrap_or("").to_string();
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/"))
}

fn variants(prefix: &str, last: &str) -> Vec<String> {
    vec![
        format!("/{prefix}/{last}"),
        format!("//{prefix}/{last}"),
        format!("/{prefix}//{last}"),
        format!("/{prefix}%2F{last}"),
        format!("/{prefix}%2f{last}"),
        format!("/{prefix}%5C{last}"),
        format!("/{prefix}\\{last}"),
        format!("/{prefix}/x/%2e%2e/{last}"),
        format!("/{prefix}/x/%2E./{last}"),
        format!("/{prefix}/x/../{last}"),
        format!("/{prefix}/./{last}"),
        format!("/{prefix}/{last};.css"),
        format!("/{prefix}/{last}%3B"),
        format!("/{prefix}/%{:02X}{}", last.as_bytes()[0], &last[1..]),
        format!("/{prefix}/{last}%00"),
        format!("/{prefix}/%c0%af{last}"),
        format!("/{prefix}/x/%252e%252e/{last}"),
        format!("/{prefix}/{last}/"),
        format!("/{prefix}/{last}/."),
        format!("/{prefix}/{last}#frag"),
        format!(
            "/{}/{}",
            prefix.to_ascii_uppercase(),
            last.to_ascii_uppercase()
        ),
    ]
}

#[tokio::test]
async fn path_variants_are_refused_or_authorised_for_exactly_the_forwarded_path() {
    let g = gate("").await;
    // (method, protected route, its prefix and last segment, caller who lacks its scope)
    let targets = [
        ("POST", "/v1/responses", "v1", "responses", g.reader.clone()),
        ("POST", "/tools/invoke", "tools", "invoke", g.reader.clone()),
        (
            "GET",
            "/sessions/main/kill",
            "sessions/main",
            "kill",
            g.writer.clone(),
        ),
    ];
    let mut cases = 0;
    for (method, protected, prefix, last, token) in &targets {
        for path in variants(prefix, last) {
            cases += 1;
            g.up.clear();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(3)).await;
            let status = raw_status(&text);
            let seen = g.up.seen();
            match status {
                400 | 403 | 404 => {
                    assert!(seen.is_empty(), "{method} {path}: refused but forwarded");
                    if status != 400 || !raw_json(&text).is_null() {
                        let body = raw_json(&text);
                        assert!(
                            body["error"]["message"].is_string(),
                            "{method} {path}: a JSON error body: {text}"
                        );
                    }
                }
                200 => {
                    assert_eq!(seen.len(), 1, "{method} {path}");
                    assert_eq!(
                        seen[0].uri, path,
                        "{method} {path}: the upstream must receive the authorised bytes"
                    );
                    assert_ne!(
                        lenient(&seen[0].uri),
                        *protected,
                        "{method} {path}: forwarded a path that resolves to {protected} without its scope"
                    );
                }
                other => panic!("{method} {path}: unexpected status {other}: {text}"),
            }
            // The exact protected path is the control: it must be refused with the missing scope.
            if path == *protected {
                assert_eq!(status, 403, "{text}");
                let msg = raw_json(&text)["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                assert!(msg.starts_with("missing scope: operator."), "{msg}");
            }
        }
    }
    assert_eq!(cases, 63);
}

// ── header attacks ─────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn managed_headers_in_every_spelling_never_reach_the_upstream() {
    let g = gate("").await;
    // (header as the client spells it, value) — every one names an identity, scope, forwarding or
    // assertion header. From an untrusted peer none may pass, in any spelling.
    let spoofs = [
        ("x-forwarded-user", "root"),
        ("X-Forwarded-User", "root"),
        ("x_forwarded_user", "root"),
        ("x.forwarded.user", "root"),
        ("X-FORWARDED-USER", "root"),
        ("x-forwarded-groups", "admins"),
        ("x_forwarded_groups", "admins"),
        ("x-openclaw-scopes", "operator.admin"),
        ("X_OpenClaw_Scopes", "operator.admin"),
        ("x-scopegate-assertion", "forged.jwt.value"),
        ("x_scopegate_assertion", "forged.jwt.value"),
        ("tailscale-user-login", "boss@example.com"),
        ("Tailscale_User_Login", "boss@example.com"),
        ("tailscale-user-name", "Boss"),
        (
            "tailscale-app-capabilities",
            "{\"example.com/cap/openclaw\":[{\"scopes\":[\"operator.admin\"]}]}",
        ),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=10.0.0.1;proto=https"),
        ("x-real-ip", "10.0.0.1"),
    ];
    for (name, value) in spoofs {
        g.up.clear();
        let got = client::get(
            &format!("{}/v1/models", g.proxy.url()),
            &[("authorization", &bearer(&g.reader)), (name, value)],
        )
        .await;
        assert_eq!(got.status, 200, "{name}: {}", got.text());
        let seen = g.up.last();
        for (k, v) in seen.headers.iter() {
            assert_ne!(
                v.to_str().unwrap_or(""),
                value,
                "{name}: the spoofed value reached the upstream as {k}"
            );
        }
        assert_eq!(
            seen.header("x-openclaw-scopes").as_deref(),
            Some("operator.read,operator.sessions.read"),
            "{name}: scopes are scopegate's own"
        );
        // The OpenClaw profile sends its fixed local client address, never the client's claim.
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("192.0.2.1"));
    }
}

#[tokio::test]
async fn connection_nominated_repeated_and_trailer_headers() {
    let g = gate("").await;
    let url = format!("{}/v1/models", g.proxy.url());
    let auth = bearer(&g.reader);

    // Connection-nominated headers are hop-by-hop: removed, including when they name a managed header
    // (an attempt to make scopegate strip its own injected header is harmless: it injects afterwards).
    for (conn, extra) in [
        ("x-keep", "x-keep"),
        ("X-Keep, close", "x-keep"),
        ("x-openclaw-scopes", "x-openclaw-scopes"),
        ("x-scopegate-assertion", "x-scopegate-assertion"),
    ] {
        g.up.clear();
        let got = client::get(
            &url,
            &[("authorization", &auth), ("connection", conn), (extra, "1")],
        )
        .await;
        assert_eq!(got.status, 200, "{conn}");
        let seen = g.up.last();
        assert_ne!(seen.header(extra).as_deref(), Some("1"), "{conn}");
        assert!(
            seen.header("x-scopegate-assertion").is_some(),
            "{conn}: scopegate's assertion is still injected"
        );
        assert_eq!(
            seen.header("x-openclaw-scopes").as_deref(),
            Some("operator.read,operator.sessions.read")
        );
    }

    // Repeated managed headers: all copies go.
    g.up.clear();
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nX-OpenClaw-Scopes: operator.admin\r\nx-openclaw-scopes: operator.write\r\nX-Forwarded-User: a\r\nx-forwarded-user: b\r\n\r\n",
        g.reader
    );
    let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(raw_status(&text), 200, "{text}");
    let seen = g.up.last();
    assert_eq!(
        seen.header_all("x-openclaw-scopes"),
        vec!["operator.read,operator.sessions.read"]
    );
    assert_eq!(
        seen.header_all("x-forwarded-user"),
        vec!["reader@example.com"]
    );

    // Two Authorization headers: ambiguous credential, refused.
    g.up.clear();
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nAuthorization: Bearer {}\r\n\r\n",
        g.reader, g.writer
    );
    let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(raw_status(&text), 401, "{text}");
    assert!(raw_json(&text)["error"]["message"].is_string());
    assert_eq!(g.up.count(), 0);

    // Managed names in trailers are dropped; harmless trailers pass.
    for (trailer, kept) in [
        ("x-openclaw-scopes: operator.admin", false),
        ("x_forwarded_user: root", false),
        ("x-scopegate-assertion: forged", false),
        ("x-checksum: abc", true),
    ] {
        g.up.clear();
        let req = format!(
            "POST /v1/responses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: {}\r\n\r\n2\r\n{{}}\r\n0\r\n{trailer}\r\n\r\n",
            g.writer,
            trailer.split(':').next().unwrap()
        );
        let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(raw_status(&text), 200, "{trailer}: {text}");
        let seen = g.up.last();
        let name = trailer.split(':').next().unwrap();
        let arrived = seen.trailers.as_ref().is_some_and(|t| {
            t.contains_key(name.replace('_', "-").as_str()) || t.contains_key(name)
        });
        assert_eq!(arrived, kept, "trailer {trailer}");
        let value = trailer.split(": ").nth(1).unwrap();
        assert!(
            seen.headers
                .values()
                .all(|v| v.to_str().unwrap_or("") != value),
            "trailer {trailer} must not be promoted to a header"
        );
    }
}

#[tokio::test]
async fn oversized_and_malformed_header_values() {
    let g = gate("").await;
    let url = format!("{}/v1/models", g.proxy.url());
    let auth = bearer(&g.reader);

    // One header beyond the 8 KiB head limit → 431 with a JSON body.
    let big = "a".repeat(9000);
    let got = client::get(&url, &[("authorization", &auth), ("x-big", &big)]).await;
    assert_eq!(got.status, 431, "{}", got.text());
    assert_eq!(got.json()["error"]["reason_codes"][0], "headers_too_large");

    // Too many headers → 431.
    let names: Vec<String> = (0..60).map(|i| format!("x-h{i}")).collect();
    let mut hs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    hs.push(("authorization", &auth));
    let got = client::get(&url, &hs).await;
    assert_eq!(got.status, 431, "{}", got.text());
    assert_eq!(got.json()["error"]["reason_codes"][0], "too_many_headers");

    // An oversized bearer token → 401 token_too_large, never parsed.
    let huge_token = format!(
        "{}.{}.{}",
        "e".repeat(3000),
        "e".repeat(3000),
        "e".repeat(1500)
    );
    let got = client::get(&url, &[("authorization", &bearer(&huge_token))]).await;
    assert_eq!(got.status, 401, "{}", got.text());

    // CR/LF injected into a header value (raw) → parse error, nothing forwarded.
    for injected in [
        "X-A: a\rb",
        "X-A: a\nX-Forwarded-User: root\r\nX-B: b",
        "X-A: \x7f\x01",
    ] {
        let before = g.up.count();
        let req = format!(
            "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: {auth}\r\n{injected}\r\n\r\n"
        );
        let text = client::raw(g.proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
        let status = raw_status(&text);
        if status == 200 {
            // A bare LF splits the line in two (see bare_lf_heads_…): the spoof is still dropped.
            assert_eq!(
                g.up.last().header("x-forwarded-user").as_deref(),
                Some("reader@example.com")
            );
        } else {
            assert_eq!(status, 400, "{injected:?}: {text}");
            assert_eq!(g.up.count(), before, "{injected:?}");
        }
    }
    assert_eq!(g.up.count(), 1, "only the bare-LF variant is forwarded");

    // An Authorization scheme scopegate does not speak → 401 with a bearer challenge.
    let got = client::get(&url, &[("authorization", "Basic cm9vdDpyb290")]).await;
    assert_eq!(got.status, 401);
    assert!(got
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer"));
}

// ── WebSocket abuse ───────────────────────────────────────────────────────────────────────────

fn connect_frame(token: Option<&str>) -> String {
    let mut params = json!({
        "minProtocol": 3, "maxProtocol": 4,
        "client": {"id": "cli", "mode": "cli", "version": "1", "platform": "linux"},
        "scopes": ["operator.admin"]
    });
    if let Some(t) = token {
        params["auth"] = json!({"token": t});
    }
    json!({"type": "req", "id": "c1", "method": "connect", "params": params}).to_string()
}

/// Reads until the server closes; returns the last `res` frame and the close code.
async fn until_close(ws: &mut support::client::Ws) -> (Option<Value>, Option<u16>) {
    let mut res = None;
    loop {
        match within(10, "websocket close", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["type"] == "res" {
                    res = Some(v);
                }
            }
            Some(Ok(Message::Close(frame))) => return (res, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (res, None),
        }
    }
}

#[tokio::test]
async fn websocket_abuse_before_authentication() {
    // Both people are named, so that their WebSockets reach the gateway (`[openclaw] people`).
    let g = gate_with(
        "",
        "[openclaw]\nusers = [\"reader@example.com\", \"writer@example.com\"]\n",
    )
    .await;
    let ws_url = format!("ws://{}/", g.proxy.addr);

    // 1. A forged Origin (a page on another site riding ambient identity) is refused before upgrade.
    let refused = client::ws_connect(
        &ws_url,
        &[
            ("origin", "https://evil.example"),
            ("authorization", &bearer(&g.writer)),
        ],
    )
    .await;
    match refused {
        Err((status, body)) => {
            assert_eq!(status, 403);
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["reason_codes"][0], "origin_not_allowed");
        }
        Ok(_) => panic!("a cross-site WebSocket was accepted"),
    }
    assert_eq!(g.up.count(), 0);

    // 2. The same-origin browser is accepted (Origin names the host it connected to).
    let host = g.proxy.addr.to_string();
    let ok = client::ws_connect(
        &ws_url,
        &[
            ("origin", &format!("http://{host}")),
            ("authorization", &bearer(&g.writer)),
        ],
    )
    .await;
    assert!(ok.is_ok(), "same-origin WebSocket refused: {:?}", ok.err());
    drop(ok);
    g.up.clear();

    // In-band handshakes: no HTTP credential, the connect frame decides.
    let cases: Vec<(&str, Vec<Message>, u16, &str)> = vec![
        (
            "no credential in connect",
            vec![Message::text(connect_frame(None))],
            1008,
            "UNAUTHORIZED",
        ),
        (
            "forged token in connect",
            vec![Message::text(connect_frame(Some("eyJhbGciOiJFZERTQSJ9.e30.AAAA")))],
            1008,
            "UNAUTHORIZED",
        ),
        (
            "malformed connect frame",
            vec![Message::text("{not json")],
            1008,
            "INVALID_REQUEST",
        ),
        (
            "request before connect",
            vec![Message::text(
                json!({"type":"req","id":"1","method":"chat.send","params":{"sessionKey":"main","message":"hi"}}).to_string(),
            )],
            1008,
            "INVALID_REQUEST",
        ),
        (
            "connect frame above 64 KiB",
            vec![Message::text(format!(
                "{{\"type\":\"req\",\"id\":\"1\",\"method\":\"connect\",\"params\":{{\"pad\":\"{}\"}}}}",
                "x".repeat(70 * 1024)
            ))],
            1008,
            "INVALID_REQUEST",
        ),
    ];
    for (name, frames, close, code) in cases {
        let mut ws = client::ws_connect(&ws_url, &[]).await.expect(name);
        // The challenge comes first.
        let first = within(10, "challenge", ws.next()).await;
        assert!(matches!(first, Some(Ok(Message::Text(_)))), "{name}");
        for f in frames {
            let _ = ws.send(f).await;
        }
        let (res, close_code) = until_close(&mut ws).await;
        assert_eq!(close_code, Some(close), "{name}");
        let res = res.unwrap_or_else(|| panic!("{name}: no error frame"));
        assert_eq!(res["ok"], false, "{name}");
        assert_eq!(res["error"]["code"], code, "{name}: {res}");
        assert_eq!(res["error"]["details"]["source"], "scopegate", "{name}");
        assert_eq!(g.up.count(), 0, "{name}: the gateway saw nothing");
    }

    // A frame flood before auth: the pre-authentication budget cuts the socket; nothing forwarded.
    let mut ws = client::ws_connect(&ws_url, &[]).await.unwrap();
    let _ = within(10, "challenge", ws.next()).await;
    let flood = async {
        for _ in 0..2000 {
            if ws
                .send(Message::Binary(vec![b' '; 1024].into()))
                .await
                .is_err()
            {
                break;
            }
        }
        until_close(&mut ws).await
    };
    let _ = within(20, "frame flood", flood).await;
    assert_eq!(g.up.count(), 0, "frame flood reached the gateway");

    // An oversized single frame before auth (4 MiB) never gets buffered whole: the socket is cut.
    let mut ws = client::ws_connect(&ws_url, &[]).await.unwrap();
    let _ = within(10, "challenge", ws.next()).await;
    let _ = ws.send(Message::text("x".repeat(4 << 20))).await;
    let (res, _) = within(20, "oversized frame", until_close(&mut ws)).await;
    assert!(res.is_none_or(|r| r["ok"] == false));
    assert_eq!(g.up.count(), 0);

    // The proxy still serves.
    let got = client::get(
        &format!("{}/v1/models", g.proxy.url()),
        &[("authorization", &bearer(&g.reader))],
    )
    .await;
    assert_eq!(got.status, 200);
}

// ── resource abuse ────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn slowloris_and_connection_floods_are_bounded() {
    let g = gate("header_read_timeout = \"500ms\"\nmax_connections = 32\n").await;
    // Slowloris: a head that never completes is cut by the header-read timeout.
    let mut s = TcpStream::connect(g.proxy.addr).await.unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = within(10, "slowloris cut", s.read(&mut buf))
        .await
        .unwrap_or(0);
    // hyper either answers 408 or just closes; both end the connection.
    if n > 0 {
        assert!(String::from_utf8_lossy(&buf[..n]).contains(" 408 "));
    }

    // Connection flood: 64 idle connections against a limit of 32; the proxy keeps serving a
    // request on a fresh connection once the flood goes away, and never forwards anything for it.
    let mut flood = Vec::new();
    for _ in 0..64 {
        if let Ok(c) = TcpStream::connect(g.proxy.addr).await {
            flood.push(c);
        }
    }
    drop(flood);
    let got = within(
        15,
        "serving after the flood",
        client::get(
            &format!("{}/v1/models", g.proxy.url()),
            &[("authorization", &bearer(&g.reader))],
        ),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(g.up.count(), 1);
}

#[tokio::test]
async fn huge_bodies_are_refused_without_reaching_the_upstream_whole() {
    let g = gate("").await;
    // Declared too large → 413 before any byte is read.
    let req = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nContent-Length: 5000000\r\n\r\n",
        g.writer
    );
    let (text, closed) = exchange(g.proxy.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(raw_status(&text), 413, "{text}");
    assert_eq!(
        raw_json(&text)["error"]["reason_codes"][0],
        "payload_too_large"
    );
    assert!(closed);
    assert_eq!(g.up.count(), 0);

    // Chunked and too large → cut at the limit with 413; the upstream saw at most the limit.
    let mut s = TcpStream::connect(g.proxy.addr).await.unwrap();
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        g.writer
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", "z".repeat(0x10000));
    let writer = async {
        for _ in 0..40 {
            if s.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let text = within(20, "chunked flood", writer).await;
    assert_eq!(raw_status(&text), 413, "{text}");
    for seen in g.up.seen() {
        assert!(seen.body_len <= 1024 * 1024);
    }
}

#[tokio::test]
async fn thousands_of_distinct_bad_tokens_stay_bounded() {
    // The cache bound is under test here, not the failed-authentication lockout (tested below).
    let g = gate_with("", "[limits]\nfailed_auth_per_address = \"off\"\n").await;
    let url = format!("{}/v1/models", g.proxy.url());
    let other = TestKey::ed25519("idp"); // same kid, different key: signatures fail
    let mut statuses = std::collections::BTreeMap::new();
    let client = client::http1();
    for i in 0..2000 {
        let token = match i % 4 {
            0 => other.token(&format!("mallory{i}"), &["operator.admin"]),
            1 => g
                .key
                .token_with(&format!("u{i}"), &["operator.read"], &[], |s| {
                    s.ttl = Duration::ZERO;
                    s.extra.insert("exp".into(), json!(1));
                }),
            2 => format!("not-a-token-{i}"),
            _ => g
                .key
                .token_with(&format!("u{i}"), &["operator.read"], &[], |s| {
                    s.audience = format!("other-{i}");
                }),
        };
        let req = http::Request::get(&url)
            .header("authorization", bearer(&token))
            .body(client::empty())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        *statuses.entry(resp.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&401), Some(&2000), "{statuses:?}");
    assert_eq!(g.up.count(), 0);
    // And a good token still works immediately after.
    let got = client::get(&url, &[("authorization", &bearer(&g.reader))]).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_jwks_endpoint() {
    let up = Upstream::start().await;
    let key = TestKey::ed25519("k1");
    let jwks = support::idp::Jwks::start(vec![key.jwk.clone().unwrap()]).await;
    let cfg = format!(
        "{}\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{}\"\n\
         [limits]\nfailed_auth_per_address = \"off\"\n",
        base(&up.url(), "openclaw"),
        jwks.url()
    );
    // The JWKS refetch limit is under test here, not the failed-authentication lockout.
    let p = proxy::start(&cfg);
    let url = format!("{}/v1/models", p.url());
    let good = key.token("alice", &["operator.read"]);
    assert_eq!(
        client::get(&url, &[("authorization", &bearer(&good))])
            .await
            .status,
        200
    );
    let baseline = jwks.fetches();
    for i in 0..500 {
        let rogue = TestKey::ed25519(&format!("rogue-{i}"));
        let t = rogue.token("mallory", &["operator.admin"]);
        let got = client::get(&url, &[("authorization", &bearer(&t))]).await;
        assert_eq!(got.status, 401);
        if i == 0 {
            assert_eq!(got.json()["error"]["reason_codes"][0], "kid_unknown");
        }
    }
    let refetches = jwks.fetches() - baseline;
    assert!(
        refetches <= 3,
        "500 unknown kids caused {refetches} JWKS fetches (rate limit broken)"
    );
    assert_eq!(
        client::get(&url, &[("authorization", &bearer(&good))])
            .await
            .status,
        200
    );
}

// ── [limits]: credential floods cost the attacker ─────────────────────────────────────────────────

/// scopegate as its own process (so its metrics count only this test's traffic), trusting loopback as
/// a forwarding proxy so that `X-Forwarded-For` names the client address, with `[limits]` set.
fn limited_child(up: &Upstream, key: &TestKey, profile: &str, limits: &str) -> proxy::ChildProxy {
    let dir = tempfile::tempdir().unwrap();
    let entry = key.toml_entry(dir.path());
    let cfg = base(&up.url(), profile).replace(
        "workers = 2\n",
        "workers = 2\nadmin_listen = \"127.0.0.1:0\"\n",
    ) + &format!(
        "\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{entry}\n\
         [trusted_proxy]\npeers = [\"127.0.0.1/32\"]\nuser_header = \"x-forwarded-user\"\n\n\
         [limits]\n{limits}"
    );
    proxy::ChildProxy::start_in(dir, &cfg)
}

async fn child_metrics(child: &proxy::ChildProxy) -> Vec<(String, f64)> {
    let url = format!("http://{}/metrics", child.admin.expect("admin listener"));
    support::metrics(&client::get(&url, &[]).await.text())
}

/// A sample without labels (`support::metric` reads labelled families).
fn plain_metric(all: &[(String, f64)], name: &str) -> f64 {
    all.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or(0.0)
}

#[tokio::test]
async fn forged_token_floods_cost_at_most_the_failure_budget_while_others_are_served() {
    const FORGED: usize = 5000;
    const BUDGET: usize = 20;
    let up = Upstream::start().await;
    let key = TestKey::p256("idp");
    let mut child = limited_child(
        &up,
        &key,
        "openclaw",
        // Only the failure budget is under test: request rates are off.
        &format!(
            "failed_auth_per_address = \"{BUDGET}/h\"\nfailed_auth_burst = {BUDGET}\n\
             requests_per_address = \"off\"\nrequests_per_identity = \"off\"\n"
        ),
    );
    let url = format!("{}/v1/models", child.url());
    // Same kid, other key: every forged token is well-formed ES256 and needs its signature checked.
    let forger = TestKey::p256("idp");
    let forged: Vec<String> = (0..FORGED)
        .map(|i| forger.token(&format!("mallory{i}"), &["operator.admin"]))
        .collect();
    let good = key.token("reader@example.com", &["operator.read"]);
    let before = child_metrics(&child).await;

    let attacker = client::http1();
    let victim = client::http1();
    let done = std::sync::atomic::AtomicBool::new(false);
    let flood = async {
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        let mut limited_body = None;
        for chunk in forged.chunks(FORGED / 8) {
            let replies = futures_util::future::join_all(chunk.iter().map(|t| {
                let req = http::Request::get(&url)
                    .header("authorization", bearer(t))
                    .header("x-forwarded-for", "203.0.113.7")
                    .body(client::empty())
                    .unwrap();
                attacker.request(req)
            }))
            .await;
            for resp in replies {
                let got = client::collect(resp.unwrap()).await;
                *statuses.entry(got.status.as_u16()).or_default() += 1;
                if got.status == 429 && limited_body.is_none() {
                    limited_body = Some(got);
                }
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        (statuses, limited_body)
    };
    let served = async {
        let mut served = 0usize;
        while !done.load(std::sync::atomic::Ordering::Acquire) || served < 50 {
            let req = http::Request::get(&url)
                .header("authorization", bearer(&good))
                .header("x-forwarded-for", "198.51.100.2")
                .body(client::empty())
                .unwrap();
            let got = client::collect(victim.request(req).await.unwrap()).await;
            assert_eq!(
                got.status,
                200,
                "a valid request from another address: {}",
                got.text()
            );
            served += 1;
        }
        served
    };
    let ((statuses, limited), served) = within(120, "the flood and the valid traffic", async {
        tokio::join!(flood, served)
    })
    .await;

    assert!(served >= 50);
    let unauthorized = statuses.get(&401).copied().unwrap_or(0);
    let limited_count = statuses.get(&429).copied().unwrap_or(0);
    assert_eq!(unauthorized + limited_count, FORGED, "{statuses:?}");
    assert!(unauthorized <= BUDGET, "{statuses:?}");
    let after = child_metrics(&child).await;
    let checks = plain_metric(&after, "scopegate_signature_verifications_total")
        - plain_metric(&before, "scopegate_signature_verifications_total");
    // The budget, plus one check for the valid token's first sight.
    assert!(
        checks <= (BUDGET + 1) as f64,
        "{FORGED} forged tokens cost {checks} signature checks"
    );
    let limited = limited.expect("the flood was rate limited");
    assert_eq!(limited.json()["error"]["type"], "rate_limited");
    assert_eq!(limited.json()["error"]["reason_codes"][0], "failed_auth");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(
        support::metric(
            &after,
            "scopegate_rate_limited_total",
            &[("reason", "failed_auth")]
        ) - support::metric(
            &before,
            "scopegate_rate_limited_total",
            &[("reason", "failed_auth")]
        ),
        limited_count as f64
    );
    // Nothing forged reached the upstream; every refusal has its audit line.
    assert_eq!(
        up.count(),
        served,
        "only the valid requests reached the upstream"
    );
    // SIGTERM drains every buffered audit line; the end of the process's stderr is the signal that
    // all of them are there.
    child.signal("TERM");
    let lines = tokio::task::spawn_blocking(move || {
        assert!(
            child.wait_exit(Duration::from_secs(30)).is_some(),
            "scopegate did not exit"
        );
        assert!(
            child.wait_logs_closed(Duration::from_secs(10)),
            "stderr did not end"
        );
        child.log_lines()
    })
    .await
    .unwrap();
    let audited = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "scopegate::audit" && v["status"] == 429)
        .inspect(|v| assert_eq!(v["decision"], "rate_limited", "{v}"))
        .count();
    assert_eq!(audited, limited_count);
}

/// Sends one pipelined `GET path` (no credential) per address over one connection and returns how
/// many answers had each status (reads and writes at once, so neither side's buffers fill up).
async fn pipelined_from(
    addr: SocketAddr,
    path: &str,
    addresses: impl Iterator<Item = std::net::Ipv4Addr>,
) -> std::collections::BTreeMap<u16, usize> {
    let mut requests = Vec::new();
    let mut count = 0;
    for ip in addresses {
        requests.extend_from_slice(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {ip}\r\n\r\n").as_bytes(),
        );
        count += 1;
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // The write half stays open until every answer is read (dropping it would half-close).
    let write = async move {
        wr.write_all(&requests).await.unwrap();
        wr
    };
    let read = async move {
        let mut statuses = std::collections::BTreeMap::new();
        let mut seen = 0;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        // Status lines are counted as they arrive; a partial one at the end waits for the next read.
        while seen < count {
            let n = rd.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed after {seen} of {count} answers");
            buf.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(at) = find(&buf[start..], b"HTTP/1.1 ") {
                let line = start + at;
                if buf.len() < line + 12 {
                    break;
                }
                let code = std::str::from_utf8(&buf[line + 9..line + 12])
                    .unwrap()
                    .parse()
                    .unwrap();
                *statuses.entry(code).or_insert(0usize) += 1;
                seen += 1;
                start = line + 12;
            }
            buf.drain(..start);
        }
        statuses
    };
    let (_wr, statuses) = tokio::join!(write, read);
    statuses
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn the_limit_tables_stay_within_their_size_under_100k_addresses() {
    const ADDRESSES: u32 = 100_000;
    const CONNECTIONS: u32 = 8;
    let up = Upstream::start().await;
    let key = TestKey::p256("idp");
    // One request an hour per address: every address seen stays busy, so new ones must evict.
    let child = limited_child(
        &up,
        &key,
        "openclaw",
        "requests_per_address = \"1/h\"\nrequests_per_address_burst = 1\ntable_size = 1024\n\
         requests_per_identity = \"off\"\n",
    );
    let address = |n: u32| std::net::Ipv4Addr::from(0x0a00_0000 + n);
    // No credential: the address limit comes first, then the 401, so nothing else costs time.
    let per_connection = within(
        300,
        "100 000 addresses",
        futures_util::future::join_all((0..CONNECTIONS).map(|c| {
            pipelined_from(
                child.addr,
                "/v1/models",
                (c..ADDRESSES).step_by(CONNECTIONS as usize).map(address),
            )
        })),
    )
    .await;
    let mut statuses = std::collections::BTreeMap::new();
    for s in per_connection {
        for (k, v) in s {
            *statuses.entry(k).or_insert(0) += v;
        }
    }
    // Every address is new and within its limit (and then has no credential).
    assert_eq!(
        statuses.get(&401),
        Some(&(ADDRESSES as usize)),
        "{statuses:?}"
    );
    let m = child_metrics(&child).await;
    let labels = [("kind", "address_requests")];
    let entries = support::metric(&m, "scopegate_rate_limit_entries", &labels);
    let capacity = support::metric(&m, "scopegate_rate_limit_capacity", &labels);
    assert_eq!(capacity, 1024.0);
    assert!(entries <= capacity && entries > 0.0, "{entries} entries");
    let evictions = support::metric(&m, "scopegate_rate_limit_evictions_total", &labels);
    // Every address past the table's size evicts one, except the rare take that lost every race for
    // its set to the other worker and went through untracked (see `limits`).
    assert!(
        evictions >= 0.99 * (f64::from(ADDRESSES) - capacity),
        "{evictions} evictions"
    );
    // A new address in the full table evicts the least busy entry, never itself: its second request
    // is refused. (The connections above finish at different times, so which of their addresses
    // came last is not known; this one comes after all of them.)
    let url = format!("{}/v1/models", child.url());
    let newest = [("x-forwarded-for", "192.0.2.77")];
    assert_eq!(client::get(&url, &newest).await.status, 401);
    let recent = client::get(&url, &newest).await;
    assert_eq!(recent.status, 429, "{}", recent.text());
    assert_eq!(
        recent.json()["error"]["reason_codes"][0],
        "address_requests"
    );
}

#[tokio::test]
async fn unauthenticated_websockets_are_capped_per_address() {
    let up = Upstream::start().await;
    let key = TestKey::p256("idp");
    let child = limited_child(
        &up,
        &key,
        "openclaw",
        "unauthenticated_websockets_per_address = 3\n",
    );
    let ws_url = format!("ws://{}/", child.addr);
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(
            client::ws_connect(&ws_url, &from("203.0.113.9"))
                .await
                .expect("within the cap"),
        );
    }
    match client::ws_connect(&ws_url, &from("203.0.113.9")).await {
        Err((429, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["type"], "rate_limited");
            assert_eq!(v["error"]["reason_codes"][0], "unauthenticated_websockets");
        }
        other => panic!(
            "a fourth unauthenticated WebSocket: {:?}",
            other.map(|_| ())
        ),
    }
    // Another address has its own count.
    let other = client::ws_connect(&ws_url, &from("198.51.100.4")).await;
    assert!(other.is_ok());
    // One of the three sends a connect frame without a credential: it is refused, and its place is
    // free before the refusal reaches it.
    let mut first = waiting.remove(0);
    let _challenge = within(10, "challenge", first.next()).await;
    first
        .send(Message::text(connect_frame(None)))
        .await
        .unwrap();
    let refused = within(10, "refusal", first.next()).await;
    assert!(matches!(refused, Some(Ok(Message::Text(_)))), "{refused:?}");
    let again = client::ws_connect(&ws_url, &from("203.0.113.9")).await;
    assert!(again.is_ok(), "{:?}", again.err());
}
