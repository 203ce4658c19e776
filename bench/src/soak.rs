//! The soak driver: a fixed rate of mixed operations, each checked against the status it must get.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, Debug)]
enum Op {
    ReadAllowed,
    WriteAllowed,
    WriteDenied,
    NoCredential,
    BadToken,
    Sse,
    WebSocket,
}

/// The mix: mostly requests, with a steady trickle of streams and sockets.
const MIX: &[Op] = &[
    Op::ReadAllowed,
    Op::ReadAllowed,
    Op::ReadAllowed,
    Op::WriteAllowed,
    Op::WriteDenied,
    Op::NoCredential,
    Op::ReadAllowed,
    Op::BadToken,
    Op::ReadAllowed,
    Op::WriteAllowed,
    Op::Sse,
    Op::ReadAllowed,
    Op::WriteDenied,
    Op::ReadAllowed,
    Op::WebSocket,
];

#[derive(Default)]
struct Tally {
    done: BTreeMap<&'static str, u64>,
    unexpected: Vec<String>,
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub async fn run(base: &str, reader: &str, writer: &str, seconds: u64, rate: u64) -> bool {
    let client: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let inflight = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0usize;
    let mut skipped = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let op = MIX[i % MIX.len()];
        i += 1;
        // Bounded: if 256 operations are still running the proxy is too slow for this rate; the
        // operation is skipped and counted rather than queued without limit.
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (client, tally) = (client.clone(), tally.clone());
        let (base, reader, writer) = (base.to_string(), reader.to_string(), writer.to_string());
        tokio::spawn(async move {
            let outcome = one(&client, &base, &reader, &writer, op).await;
            let mut t = tally.lock().unwrap();
            match outcome {
                Ok(()) => *t.done.entry(name(op)).or_default() += 1,
                Err(e) => {
                    if t.unexpected.len() < 50 {
                        t.unexpected.push(format!("{op:?}: {e}"));
                    } else {
                        t.unexpected.push(String::new());
                    }
                }
            }
            drop(permit);
        });
    }
    // Let the last operations finish (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(30), inflight.acquire_many(256)).await;
    let t = tally.lock().unwrap();
    let total: u64 = t.done.values().sum();
    let unexpected: Vec<&String> = t.unexpected.iter().filter(|s| !s.is_empty()).collect();
    println!(
        "{}",
        json!({
            "seconds": started.elapsed().as_secs_f64(),
            "operations_ok": total,
            "by_kind": t.done,
            "unexpected": t.unexpected.len(),
            "unexpected_examples": unexpected,
            "skipped_for_backpressure": skipped,
        })
    );
    t.unexpected.is_empty()
}

fn name(op: Op) -> &'static str {
    match op {
        Op::ReadAllowed => "read_allowed_200",
        Op::WriteAllowed => "write_allowed_200",
        Op::WriteDenied => "write_denied_403",
        Op::NoCredential => "no_credential_401",
        Op::BadToken => "bad_token_401",
        Op::Sse => "sse_stream_20_events",
        Op::WebSocket => "websocket_10_echoes",
    }
}

async fn status_of(
    client: &Http,
    method: &str,
    url: String,
    token: Option<&str>,
    body: &'static str,
) -> Result<(u16, Bytes), String> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "no response in 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn expect(got: (u16, Bytes), status: u16, needle: &str) -> Result<(), String> {
    if got.0 != status {
        return Err(format!(
            "status {} (wanted {status}): {}",
            got.0,
            String::from_utf8_lossy(&got.1)
        ));
    }
    if !needle.is_empty() && !String::from_utf8_lossy(&got.1).contains(needle) {
        return Err(format!("body lacks {needle:?}"));
    }
    Ok(())
}

async fn one(client: &Http, base: &str, reader: &str, writer: &str, op: Op) -> Result<(), String> {
    match op {
        Op::ReadAllowed => expect(
            status_of(client, "GET", format!("{base}/v1/models"), Some(reader), "").await?,
            200,
            "",
        ),
        Op::WriteAllowed => expect(
            status_of(
                client,
                "POST",
                format!("{base}/v1/responses"),
                Some(writer),
                "{\"input\":\"hi\"}",
            )
            .await?,
            200,
            "",
        ),
        Op::WriteDenied => expect(
            status_of(
                client,
                "POST",
                format!("{base}/v1/responses"),
                Some(reader),
                "{\"input\":\"hi\"}",
            )
            .await?,
            403,
            "missing scope: operator.write",
        ),
        Op::NoCredential => expect(
            status_of(client, "GET", format!("{base}/v1/models"), None, "").await?,
            401,
            "\"error\"",
        ),
        Op::BadToken => expect(
            status_of(
                client,
                "GET",
                format!("{base}/v1/models"),
                Some("eyJhbGciOiJFUzI1NiJ9.e30.c2ln"),
                "",
            )
            .await?,
            401,
            "\"error\"",
        ),
        Op::Sse => {
            let (status, body) = status_of(
                client,
                "GET",
                format!("{base}/sse-bench?events=20&interval_ms=5"),
                Some(reader),
                "",
            )
            .await?;
            if status != 200 {
                return Err(format!("SSE status {status}"));
            }
            let events = String::from_utf8_lossy(&body).matches("data: ").count();
            if events != 20 {
                return Err(format!("SSE delivered {events} of 20 events"));
            }
            Ok(())
        }
        Op::WebSocket => {
            let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.into_client_request().map_err(|e| e.to_string())?;
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {reader}")
                    .parse()
                    .map_err(|_| "bad header")?,
            );
            let (mut ws, _) = tokio::time::timeout(
                Duration::from_secs(30),
                tokio_tungstenite::connect_async(req),
            )
            .await
            .map_err(|_| "websocket open timed out".to_string())?
            .map_err(|e| format!("websocket open: {e}"))?;
            for n in 0..10 {
                let msg = format!("soak-{n}");
                ws.send(Message::text(msg.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) if t.as_str() == msg => {}
                    other => return Err(format!("websocket echo {n}: {other:?}")),
                }
            }
            let _ = ws.close(None).await;
            // Drain until the close handshake completes so the socket is released on both sides.
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout(Duration::from_secs(5), ws.next()).await
            {}
            Ok(())
        }
    }
}
