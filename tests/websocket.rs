//! WebSocket upgrades relayed both ways with real frames: text, binary, ping/pong, close codes, and the
//! `Connection: keep-alive, Upgrade` spelling browsers send; and the handshakes, on either side, that
//! must never become a tunnel.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::client::{raw_json, raw_status, ws_connect};
use support::proxy::{self, base};
use support::upstream::Upstream;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn config(upstream: &str) -> String {
    format!(
        "{}\n[[api_tokens]]\nsubject = \"tester\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n\n[[routes]]\npath = \"/*\"\nrequire = [\"operator.read\"]\n",
        base(upstream, "generic"),
        scopegate::identity::api_token::sha256_hex(b"ws-token"),
    )
}

const AUTH: (&str, &str) = ("authorization", "Bearer ws-token");

async fn next(ws: &mut support::client::Ws) -> Message {
    within(5, "websocket message", ws.next())
        .await
        .expect("socket ended")
        .expect("frame error")
}

#[tokio::test]
async fn echo_round_trips_text_binary_ping_and_close_codes() {
    let up = Upstream::start().await;
    let p = proxy::start(&config(&up.url()));
    let mut ws = ws_connect(&format!("ws://{}/ws", p.addr), &[AUTH])
        .await
        .unwrap();

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));

    let blob: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(blob));

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match next(&mut ws).await {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected pong, got {other:?}"),
    }

    // The upstream closes with 4001: the code reaches the client unchanged.
    ws.send(Message::text("close:4001")).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(4001)),
        other => panic!("expected close 4001, got {other:?}"),
    }
    // The socket then ends on both sides.
    let end = within(5, "close", async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(end);
    let seen = up.last();
    assert!(seen.websocket);
    assert_eq!(seen.header("upgrade").as_deref(), Some("websocket"));
}

#[tokio::test]
async fn client_close_code_reaches_the_upstream_side() {
    let up = Upstream::start().await;
    let p = proxy::start(&config(&up.url()));
    let mut ws = ws_connect(&format!("ws://{}/ws", p.addr), &[AUTH])
        .await
        .unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("x"));
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::from(4321),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    // The echo server answers a close with a close; the relay passes both ways.
    match within(5, "close echo", ws.next()).await {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn firefox_style_connection_header_upgrades() {
    let up = Upstream::start().await;
    let p = proxy::start(&config(&up.url()));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ws-token\r\n\r\n",
        p.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = within(5, "101", s.read(&mut buf)).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
}

#[tokio::test]
async fn upgrade_without_credentials_is_refused_before_the_upstream() {
    let up = Upstream::start().await;
    let p = proxy::start(&config(&up.url()));
    let err = ws_connect(&format!("ws://{}/ws", p.addr), &[])
        .await
        .expect_err("refused");
    assert_eq!(err.0, 401);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn many_messages_both_ways_keep_order() {
    let up = Upstream::start().await;
    let p = proxy::start(&config(&up.url()));
    let ws = ws_connect(&format!("ws://{}/ws", p.addr), &[AUTH])
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let writer = tokio::spawn(async move {
        for i in 0..2000 {
            tx.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        tx
    });
    for i in 0..2000 {
        let m = within(10, "ordered echo", rx.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::text(format!("m{i}")));
    }
    let _ = writer.await;
}

/// The relay for plain TCP on both sides holds no buffer per socket; it is only taken when both
/// sockets can be recovered from hyper. A WebSocket through the pooled `http://` upstream must take it
/// (it once silently fell back to the buffered copy, costing ~8 KiB per idle socket).
#[tokio::test]
async fn plain_tcp_websockets_use_the_zero_buffer_relay() {
    let up = Upstream::start().await;
    let child = support::proxy::ChildProxy::start(&config(&up.url()).replace(
        "workers = 2\n",
        "workers = 2\nadmin_listen = \"127.0.0.1:0\"\n",
    ));
    let admin = format!("http://{}", child.admin.expect("admin address"));
    for round in 0..2 {
        let mut ws = ws_connect(&format!("ws://{}/ws", child.addr), &[AUTH])
            .await
            .unwrap();
        let text = format!("round {round}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(text));
    }
    let text = support::client::get(&format!("{admin}/metrics"), &[])
        .await
        .text();
    let all = support::metrics(&text);
    let count = |transport| {
        support::metric(
            &all,
            "scopegate_websocket_relays_total",
            &[("transport", transport)],
        )
    };
    assert_eq!(count("tcp"), 2.0, "{text}");
    assert_eq!(count("stream"), 0.0, "{text}");
}

// ── handshakes that must not become tunnels ─────────────────────────────────────────────────────

/// A public route and one that needs the token, in front of `upstream`.
fn guarded(upstream: &str) -> String {
    format!(
        "{}\n[[api_tokens]]\nsubject = \"tester\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n\n[[routes]]\npath = \"/public/*\"\npublic = true\n\n[[routes]]\npath = \"/*\"\nrequire = [\"operator.read\"]\n",
        base(upstream, "generic"),
        scopegate::identity::api_token::sha256_hex(b"ws-token"),
    )
}

/// Both sides of the policy: (name, path, credential header line).
const ROUTES: [(&str, &str, &str); 2] = [
    ("public route", "/public/ws", ""),
    (
        "authenticated route",
        "/ws",
        "Authorization: Bearer ws-token\r\n",
    ),
];

/// RFC 6455 §1.3's sample key.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An unauthenticated request for a protected path, sent where a tunnel would be: it must be read by
/// scopegate as a request of its own and refused, never reach the upstream as raw bytes.
const SMUGGLED: &str = "GET /admin/kill HTTP/1.1\r\nHost: gw\r\n\r\n";

fn find(data: &[u8], needle: &[u8]) -> Option<usize> {
    data.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response: its head and the body its `Content-Length` announces (a 1xx has none), or
/// what arrived before the peer closed.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&out, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// True once the peer has closed the connection (EOF or reset) with nothing more to say.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(s.read(&mut buf).await, Ok(0) | Err(_))
}

/// A raw-TCP upstream for answers no real WebSocket server gives: each connection's request head is
/// answered with `answer(head)`, and every byte after the head is recorded until the connection ends.
struct RawUpstream {
    addr: std::net::SocketAddr,
    conns: tokio::sync::mpsc::UnboundedReceiver<RawConn>,
}

struct RawConn {
    head: String,
    /// What arrived after the head, delivered when the connection ends.
    rest: tokio::sync::oneshot::Receiver<Vec<u8>>,
}

impl RawUpstream {
    async fn start(answer: fn(&str) -> String) -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = find(&data, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&data[..end]).into_owned();
                    let mut rest = data[end..].to_vec();
                    if s.write_all(answer(&head).as_bytes()).await.is_err() {
                        return;
                    }
                    let (done, rx) = tokio::sync::oneshot::channel();
                    let _ = tx.send(RawConn { head, rest: rx });
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => rest.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = done.send(rest);
                });
            }
        });
        RawUpstream { addr, conns }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The accept value for the key in a request head (what a real server would answer).
fn accept_for(head: &str) -> String {
    let key = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    derive_accept_key(key.as_bytes())
}

#[tokio::test]
async fn an_upstream_101_that_is_not_a_verified_websocket_handshake_is_a_502_and_never_a_tunnel() {
    // (case, the upstream's answer, expected reason code, a phrase of the message)
    type Answer = fn(&str) -> String;
    let cases: [(&str, Answer, &str, &str); 5] = [
        (
            "bare 101",
            |_| "HTTP/1.1 101 Switching Protocols\r\n\r\n".into(),
            "upstream_not_websocket",
            "Upgrade: websocket",
        ),
        (
            "101 without Connection: upgrade",
            |head| {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept_for(head)
                )
            },
            "upstream_not_websocket",
            "Connection: upgrade",
        ),
        (
            "101 with the accept value of another key",
            |_| {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(b"AAAAAAAAAAAAAAAAAAAAAA==")
                )
            },
            "upstream_websocket_accept",
            "does not match the Sec-WebSocket-Key",
        ),
        (
            "101 with a subprotocol the client did not offer",
            |head| {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: superchat\r\n\r\n",
                    accept_for(head)
                )
            },
            "upstream_websocket_protocol",
            "\"superchat\", which the client did not offer",
        ),
        (
            "101 with an extension the client did not offer",
            |head| {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                    accept_for(head)
                )
            },
            "upstream_websocket_extension",
            "\"permessage-deflate\", which the client did not offer",
        ),
    ];
    for (case, answer, code, says) in cases {
        let mut up = RawUpstream::start(answer).await;
        let p = proxy::start(&guarded(&up.url()));
        for (route, path, credential) in ROUTES {
            let name = format!("{case}, {route}");
            let mut s = TcpStream::connect(p.addr).await.unwrap();
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Protocol: chat\r\n{credential}\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let resp = within(10, &name, read_response(&mut s)).await;
            assert_eq!(raw_status(&resp), 502, "{name}: {resp}");
            let error = &raw_json(&resp)["error"];
            assert_eq!(error["type"], "bad_gateway", "{name}: {resp}");
            assert_eq!(error["reason_codes"][0], code, "{name}: {resp}");
            assert_eq!(error["reasons"][0], error["message"], "{name}");
            let message = error["message"].as_str().unwrap_or("");
            assert!(message.contains(says), "{name}: {message}");
            let conn = within(10, "the upstream connection", up.conns.recv())
                .await
                .expect("the upgrade reached the upstream");
            assert!(
                conn.head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
                "{name}"
            );

            // What the client sends next is not tunnelled: scopegate reads it as a request of its own
            // (no credential: 401) ...
            s.write_all(SMUGGLED.as_bytes()).await.unwrap();
            let next = within(10, "the follow-up", read_response(&mut s)).await;
            assert_eq!(raw_status(&next), 401, "{name}: {next}");
            // ... and the upstream's connection was closed with nothing relayed over it.
            let rest = within(10, "the upstream connection to close", conn.rest)
                .await
                .expect("recorded");
            assert!(
                rest.is_empty(),
                "{name}: bytes reached the upstream after its 101: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
    }

    // The control: a complete handshake (the offered subprotocol) is a tunnel, and the same bytes do
    // reach the upstream through it — which is what the cases above must never allow.
    let mut up = RawUpstream::start(|head| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
            accept_for(head)
        )
    })
    .await;
    let p = proxy::start(&guarded(&up.url()));
    for (route, path, credential) in ROUTES {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Protocol: chat\r\n{credential}\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let resp = within(10, route, read_response(&mut s)).await;
        assert!(resp.starts_with("HTTP/1.1 101"), "{route}: {resp}");
        let lower = resp.to_ascii_lowercase();
        assert!(
            lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{route}: {resp}"
        );
        assert!(
            lower.contains("sec-websocket-protocol: chat"),
            "{route}: {resp}"
        );
        let conn = within(10, "the upstream connection", up.conns.recv())
            .await
            .unwrap();
        s.write_all(SMUGGLED.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let rest = within(10, "the tunnel to close", conn.rest).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), SMUGGLED, "{route}");
    }
}

#[tokio::test]
async fn upgrade_requests_that_are_not_a_complete_opening_handshake_are_400_and_never_forwarded() {
    let up = Upstream::start().await;
    let generic = proxy::start(&guarded(&up.url()));
    // The OpenClaw profile answers an upgrade without a credential itself (the in-band handshake).
    let openclaw = proxy::start(&format!(
        "{}\n[[api_tokens]]\nsubject = \"tester\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n",
        base(&up.url(), "openclaw"),
        scopegate::identity::api_token::sha256_hex(b"ws-token"),
    ));
    let targets = [
        (ROUTES[0].0, generic.addr, ROUTES[0].1, ROUTES[0].2),
        (ROUTES[1].0, generic.addr, ROUTES[1].1, ROUTES[1].2),
        ("in-band path", openclaw.addr, "/", ""),
    ];

    // Valid handshakes still upgrade everywhere.
    for (route, addr, path, _) in targets {
        let auth: &[(&str, &str)] = if route == "authenticated route" {
            &[AUTH]
        } else {
            &[]
        };
        let mut ws = ws_connect(&format!("ws://{addr}{path}"), auth)
            .await
            .unwrap_or_else(|e| panic!("{route}: a valid upgrade was refused: {e:?}"));
        if route == "in-band path" {
            match next(&mut ws).await {
                Message::Text(t) => assert!(t.contains("connect.challenge"), "{t}"),
                other => panic!("expected the challenge, got {other:?}"),
            }
        } else {
            ws.send(Message::text("still works")).await.unwrap();
            assert_eq!(next(&mut ws).await, Message::text("still works"));
        }
    }
    up.clear();

    let chunked = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let valid = format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n");
    struct Case {
        name: &'static str,
        request_line: &'static str,
        headers: String,
        body: String,
        code: &'static str,
        says: &'static str,
        /// The refusal closes the connection (a body, or HTTP/1.0).
        closes: bool,
    }
    let cases = [
        Case {
            name: "POST with a body",
            request_line: "POST {path} HTTP/1.1",
            headers: format!("Content-Length: {}\r\n{valid}", SMUGGLED.len()),
            body: SMUGGLED.into(),
            code: "websocket_body",
            says: "Content-Length: 38",
            closes: true,
        },
        Case {
            name: "GET with a chunked body",
            request_line: "GET {path} HTTP/1.1",
            headers: format!("Transfer-Encoding: chunked\r\n{valid}"),
            body: chunked.clone(),
            code: "websocket_body",
            says: "Transfer-Encoding",
            closes: true,
        },
        Case {
            name: "POST without a body",
            request_line: "POST {path} HTTP/1.1",
            headers: valid.clone(),
            body: String::new(),
            code: "websocket_method",
            says: "a GET; this one is POST",
            closes: false,
        },
        Case {
            name: "no key",
            request_line: "GET {path} HTTP/1.1",
            headers: "Sec-WebSocket-Version: 13\r\n".into(),
            body: String::new(),
            code: "websocket_key",
            says: "Sec-WebSocket-Key is missing",
            closes: false,
        },
        Case {
            name: "a key of 12 bytes",
            request_line: "GET {path} HTTP/1.1",
            headers: "Sec-WebSocket-Key: AAAAAAAAAAAAAAAA\r\nSec-WebSocket-Version: 13\r\n".into(),
            body: String::new(),
            code: "websocket_key",
            says: "base64 of 16 bytes",
            closes: false,
        },
        Case {
            name: "version 8",
            request_line: "GET {path} HTTP/1.1",
            headers: format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n"),
            body: String::new(),
            code: "websocket_version",
            says: "asks for \"8\"",
            closes: false,
        },
        Case {
            name: "no version",
            request_line: "GET {path} HTTP/1.1",
            headers: format!("Sec-WebSocket-Key: {KEY}\r\n"),
            body: String::new(),
            code: "websocket_version",
            says: "Sec-WebSocket-Version is missing",
            closes: false,
        },
        Case {
            name: "HTTP/1.0",
            request_line: "GET {path} HTTP/1.0",
            headers: valid.clone(),
            body: String::new(),
            code: "websocket_http_version",
            says: "HTTP/1.0",
            closes: true,
        },
    ];
    for case in &cases {
        for (route, addr, path, credential) in targets {
            let name = format!("{}, {route}", case.name);
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "{}\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{}{credential}\r\n{}",
                case.request_line.replace("{path}", path),
                case.headers,
                case.body
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let resp = within(10, &name, read_response(&mut s)).await;
            assert_eq!(raw_status(&resp), 400, "{name}: {resp}");
            let error = &raw_json(&resp)["error"];
            assert_eq!(error["type"], "bad_request", "{name}: {resp}");
            assert_eq!(error["reason_codes"][0], case.code, "{name}: {resp}");
            let message = error["message"].as_str().unwrap_or("");
            assert!(message.contains(case.says), "{name}: {message}");
            if case.closes {
                assert!(
                    within(10, "the connection to close", closed(&mut s)).await,
                    "{name}: the connection must close"
                );
            } else {
                // The next request is judged on its own.
                s.write_all(SMUGGLED.as_bytes()).await.unwrap();
                let next = within(10, "the follow-up", read_response(&mut s)).await;
                assert_eq!(raw_status(&next), 401, "{name}: {next}");
            }
            assert_eq!(up.count(), 0, "{name}: nothing may reach the upstream");
        }
    }
}

/// The in-band path opens its own upstream WebSocket after verifying the `connect` frame's token; a
/// 101 from there that is not a WebSocket handshake is refused in the gateway's error shape, and the
/// connect frame (or anything else) is never written to that connection.
#[tokio::test]
async fn the_in_band_path_refuses_an_upstream_101_that_is_not_a_websocket_handshake() {
    let mut up = RawUpstream::start(|_| "HTTP/1.1 101 Switching Protocols\r\n\r\n".into()).await;
    let p = proxy::start(&format!(
        "{}\n[[api_tokens]]\nsubject = \"tester\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n",
        base(&up.url(), "openclaw"),
        scopegate::identity::api_token::sha256_hex(b"ws-token"),
    ));
    let mut ws = ws_connect(&format!("ws://{}/", p.addr), &[]).await.unwrap();
    match next(&mut ws).await {
        Message::Text(t) => assert!(t.contains("connect.challenge"), "{t}"),
        other => panic!("expected the challenge, got {other:?}"),
    }
    let connect = serde_json::json!({
        "type": "req", "id": "c1", "method": "connect",
        "params": {
            "minProtocol": 3, "maxProtocol": 4,
            "client": {"id": "cli", "mode": "cli", "version": "1", "platform": "linux"},
            "auth": {"token": "ws-token"}
        }
    });
    ws.send(Message::text(connect.to_string())).await.unwrap();
    let res = match next(&mut ws).await {
        Message::Text(t) => serde_json::from_str::<serde_json::Value>(&t).unwrap(),
        other => panic!("expected the error frame, got {other:?}"),
    };
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "UNAVAILABLE", "{res}");
    assert_eq!(
        res["error"]["details"]["reason_codes"][0], "upstream_not_websocket",
        "{res}"
    );
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Error),
        other => panic!("expected close 1011, got {other:?}"),
    }
    let conn = within(10, "the upstream connection", up.conns.recv())
        .await
        .unwrap();
    assert!(conn.head.starts_with("GET / HTTP/1.1\r\n"), "{}", conn.head);
    let rest = within(10, "the upstream connection to close", conn.rest)
        .await
        .unwrap();
    assert!(
        rest.is_empty(),
        "bytes reached the upstream after its 101: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
