//! WebSocket upgrades relayed both ways with real frames: text, binary, ping/pong, close codes, and the
//! `Connection: keep-alive, Upgrade` spelling browsers send.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::client::ws_connect;
use support::proxy::{self, base};
use support::upstream::Upstream;
use support::within;
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
