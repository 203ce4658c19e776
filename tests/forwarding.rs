//! The proxy core over real sockets: what passes unchanged, what is dropped, streaming both ways with
//! flat memory, SSE event by event, HTTP/2, upstream failures, slow clients, and draining on SIGTERM.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use support::client::{self, bearer, get, send};
use support::proxy::{self, base, ChildProxy};
use support::upstream::Upstream;
use support::within;

/// A config that lets every authenticated request through to `upstream`, with one API token.
fn open_config(upstream: &str, extra: &str) -> String {
    format!(
        "{}\n[[api_tokens]]\nsubject = \"tester\"\nsha256 = \"{}\"\nscopes = [\"operator.admin\"]\n\n[[routes]]\npath = \"/*\"\nrequire = [\"operator.read\"]\n{extra}",
        base(upstream, "generic"),
        scopegate::identity::api_token::sha256_hex(b"test-token"),
    )
}

const AUTH: (&str, &str) = ("authorization", "Bearer test-token");

#[tokio::test]
async fn methods_queries_and_odd_paths_pass_unchanged() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let cases = [
        ("GET", "/v1/models?limit=10&order=desc"),
        ("POST", "/v1/responses?stream=true"),
        ("PUT", "/files/a%20b/%E2%9C%93"),
        ("DELETE", "/sessions/agent:main:main"),
        ("PATCH", "/x/~user/a-b_c.d"),
        ("OPTIONS", "/"),
        ("GET", "/search?q=%2F%2E%2E%2F&x=a;b"),
        ("GET", "/trailing/"),
    ];
    for (m, path) in cases {
        let body = if m == "POST" || m == "PUT" {
            "payload-123"
        } else {
            ""
        };
        let got = send(
            m,
            &format!("{}{path}", p.url()),
            &[AUTH, ("x-custom", "kept")],
            body,
        )
        .await;
        assert_eq!(got.status, 200, "{m} {path}: {}", got.text());
        let seen = up.last();
        assert_eq!(seen.method, m);
        assert_eq!(
            seen.uri, path,
            "the path and query reach the upstream byte for byte"
        );
        assert_eq!(seen.body_len, body.len() as u64);
        assert_eq!(seen.header("x-custom").as_deref(), Some("kept"));
    }
    let head = send("HEAD", &format!("{}/v1/models", p.url()), &[AUTH], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn hop_by_hop_and_connection_nominated_headers_are_dropped() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let got = send(
        "GET",
        &format!("{}/echo", p.url()),
        &[
            AUTH,
            ("connection", "keep-alive, x-hop-one, X-Hop-Two"),
            ("x-hop-one", "1"),
            ("x-hop-two", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    for h in [
        "x-hop-one",
        "x-hop-two",
        "keep-alive",
        "proxy-authorization",
        "te",
        "authorization",
    ] {
        assert!(seen.header(h).is_none(), "{h} must not reach the upstream");
    }
    assert_eq!(seen.header("x-end-to-end").as_deref(), Some("kept"));
    // The upstream's own hop-by-hop headers do not reach the client either.
    assert!(got.header("x-upstream-hop").is_none());
    assert!(got.header("keep-alive").is_none());
    assert!(got.header("x-request-id").is_some());
}

#[tokio::test]
async fn forwarding_headers_are_set_not_appended() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    send(
        "GET",
        &format!("{}/echo", p.url()),
        &[
            AUTH,
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("host", "front.example"),
        ],
        "",
    )
    .await;
    let seen = up.last();
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("front.example")
    );
    assert_eq!(seen.header("host"), Some(up.addr.to_string()));
}

/// Every kind of response read to its end leaves the upstream connection reusable: one client
/// connection's requests, of all shapes, travel on two upstream connections, one per upstream client
/// (bodiless requests go through scopegate's own, requests with a body through hyper's), and rounds
/// after the first open none.
#[tokio::test]
async fn completed_responses_of_every_shape_reuse_their_upstream_connections() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let c = client::http1();
    let upload = Bytes::from(vec![7u8; 256 * 1024]);
    let cases: [(&str, &str, Bytes, u16, usize); 6] = [
        ("GET", "/plain", Bytes::new(), 200, 0),
        ("POST", "/upload", upload.clone(), 200, 0),
        ("HEAD", "/plain", Bytes::new(), 200, 0),
        ("GET", "/status/204", Bytes::new(), 204, 0),
        ("GET", "/download?bytes=300000", Bytes::new(), 200, 300_000),
        ("GET", "/status/404", Bytes::new(), 404, 10),
    ];
    for round in 0..3 {
        for (method, path, body, status, len) in &cases {
            let req = Request::builder()
                .method(*method)
                .uri(format!("{}{path}", p.url()))
                .header(AUTH.0, AUTH.1)
                .body(client::body(body.clone()))
                .unwrap();
            let resp = within(30, path, c.request(req)).await.unwrap();
            let got = within(30, "body", client::collect(resp)).await;
            assert_eq!(got.status, *status, "{method} {path}: {}", got.text());
            if *len > 0 {
                assert_eq!(got.body.len(), *len, "{method} {path}");
            }
            if *method == "POST" {
                assert_eq!(up.last().body_len, upload.len() as u64);
            }
        }
        assert_eq!(
            up.connections(),
            2,
            "round {round}: every response was complete, so the first upstream connections serve all"
        );
    }
    assert_eq!(up.count(), 3 * cases.len());
}

/// RSS of a child scopegate while 50 MiB stream through it each way stays far below 50 MiB.
#[tokio::test]
async fn fifty_mib_upload_and_download_stream_with_flat_memory() {
    let up = Upstream::start().await;
    let mut child = ChildProxy::start(&open_config(&up.url(), ""));
    const SIZE: u64 = 50 * 1024 * 1024;
    let baseline = child.rss_kib();
    let pid_rss = {
        let pid = child.pid();
        move || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                })
                .unwrap_or(0)
        }
    };
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        let rss = pid_rss;
        tokio::spawn(async move {
            for _ in 0..20_000 {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Upload: a generated body the test never holds whole.
    let chunks = futures_util::stream::iter((0..(SIZE / 65536)).map(|i| {
        let data: Vec<u8> = (0..65536u64)
            .map(|j| ((i * 65536 + j) % 251) as u8)
            .collect();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(Bytes::from(
            data,
        )))
    }));
    let req = Request::post(format!("{}/upload", child.url()))
        .header("authorization", "Bearer test-token")
        .body(http_body_util::StreamBody::new(chunks).boxed())
        .unwrap();
    let resp = within(60, "upload", client::http1().request(req))
        .await
        .unwrap();
    let got = client::collect(resp).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.last().body_len, SIZE);

    // Download: read it chunk by chunk.
    let req = Request::get(format!("{}/download?bytes={SIZE}", child.url()))
        .header("authorization", "Bearer test-token")
        .body(client::empty())
        .unwrap();
    let resp = within(60, "download", client::http1().request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = within(30, "download chunk", body.frame()).await {
        if let Some(d) = f.unwrap().data_ref() {
            n += d.len() as u64;
        }
    }
    assert_eq!(n, SIZE);
    sampler.abort();
    let grew_kib = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline);
    assert!(
        grew_kib < 16 * 1024,
        "scopegate's RSS grew by {grew_kib} KiB while 50 MiB streamed each way"
    );
    assert!(
        child.wait_exit(Duration::from_millis(1)).is_none(),
        "still running"
    );
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_before_the_next_is_produced() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let req = Request::get(format!("{}/sse", p.url()))
        .header("authorization", "Bearer test-token")
        .header("accept", "text/event-stream")
        .body(client::empty())
        .unwrap();
    let client = client::http1();
    let resp_fut = client.request(req);
    let (resp, _) = tokio::join!(resp_fut, within(10, "sse open", up.sse_opened()));
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    for i in 0..5 {
        let msg = format!("event-{i}");
        up.emit(&msg).await;
        // The next event is not produced until this one has arrived at the client.
        let mut got = String::new();
        while !got.contains("\n\n") {
            let f = within(5, "sse event", body.frame())
                .await
                .expect("stream ended")
                .unwrap();
            if let Some(d) = f.data_ref() {
                got.push_str(&String::from_utf8_lossy(d));
            }
        }
        assert_eq!(got, format!("data: {msg}\n\n"));
    }
    up.end_sse();
    while let Some(f) = within(5, "sse end", body.frame()).await {
        assert!(f.is_ok());
    }
}

#[tokio::test]
async fn http2_cleartext_clients_work() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let mut h2 = client::h2c(p.addr).await;
    for i in 0..3 {
        let req = Request::post(format!("http://{}/h2/{i}?q={i}", p.addr))
            .header("authorization", "Bearer test-token")
            .body(client::body("h2 body"))
            .unwrap();
        let resp = within(10, "h2 response", h2.send_request(req))
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let got = client::collect(resp).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let seen = up.last();
        assert_eq!(seen.uri, format!("/h2/{i}?q={i}"));
        assert_eq!(seen.body_len, 7);
    }
}

#[tokio::test]
async fn request_trailers_are_forwarded_but_scrubbed() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    trailers.insert("x-openclaw-scopes", "operator.admin".parse().unwrap());
    let frames = vec![
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(
            Bytes::from_static(b"data"),
        )),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    let mut h2 = client::h2c(p.addr).await;
    let req = Request::post(format!("http://{}/with-trailers", p.addr))
        .header("authorization", "Bearer test-token")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    let got = client::collect(within(10, "trailers", h2.send_request(req)).await.unwrap()).await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    assert_eq!(seen.body_len, 4);
    if let Some(t) = seen.trailers {
        assert!(
            t.get("x-openclaw-scopes").is_none(),
            "managed names never pass in trailers"
        );
    }
}

#[tokio::test]
async fn upstream_down_is_502_json_and_silent_upstream_is_504_json() {
    // A port that nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = proxy::start(&open_config(&format!("http://{dead}"), ""));
    let got = get(&format!("{}/v1/models", p.url()), &[AUTH]).await;
    assert_eq!(got.status, 502);
    let j = got.json();
    assert_eq!(j["error"]["type"], "bad_gateway");
    assert_eq!(j["error"]["reason_codes"][0], "upstream_unreachable");

    let up = Upstream::start().await;
    let cfg = open_config(&up.url(), "").replace(
        "profile = \"generic\"",
        "profile = \"generic\"\nresponse_header_timeout = \"300ms\"",
    );
    let p = proxy::start(&cfg);
    let got = get(&format!("{}/hang", p.url()), &[AUTH]).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["error"]["type"], "gateway_timeout");
    // The process keeps serving.
    assert_eq!(get(&format!("{}/ok", p.url()), &[AUTH]).await.status, 200);
}

#[tokio::test]
async fn slow_header_client_is_cut_off() {
    let up = Upstream::start().await;
    let cfg = open_config(&up.url(), "").replace(
        "workers = 2",
        "workers = 2\nheader_read_timeout = \"500ms\"",
    );
    let p = proxy::start(&cfg);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the connection must be closed by scopegate, not by this test.
    let mut buf = [0u8; 1024];
    let start = std::time::Instant::now();
    let closed = within(10, "slowloris cut-off", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed);
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "cut off by the header timeout, not at once"
    );
    // A connection that sends nothing at all is cut off too.
    let mut idle = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let n = within(10, "idle cut-off", idle.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn oversized_heads_and_bodies_get_json_431_and_413() {
    let up = Upstream::start().await;
    let cfg = open_config(&up.url(), "").replace(
        "workers = 2",
        "workers = 2\nmax_header_bytes = \"4KiB\"\nmax_body_bytes = \"1KiB\"",
    );
    let p = proxy::start(&cfg);
    let big = "x".repeat(6000);
    let got = get(&format!("{}/echo", p.url()), &[AUTH, ("x-big", &big)]).await;
    assert_eq!(got.status, 431);
    assert_eq!(got.json()["error"]["type"], "headers_too_large");
    let got = send(
        "POST",
        &format!("{}/echo", p.url()),
        &[AUTH],
        vec![b'a'; 2048],
    )
    .await;
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["error"]["type"], "payload_too_large");
    assert_eq!(up.count(), 0, "nothing reached the upstream");
    assert_eq!(
        send(
            "POST",
            &format!("{}/echo", p.url()),
            &[AUTH],
            vec![b'a'; 512]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn sigterm_lets_a_long_stream_finish_within_the_drain_deadline() {
    let up = Upstream::start().await;
    let mut child = ChildProxy::start(
        &open_config(&up.url(), "").replace("workers = 2", "workers = 2\ndrain_timeout = \"20s\""),
    );
    let req = Request::get(format!("{}/sse", child.url()))
        .header("authorization", "Bearer test-token")
        .body(client::empty())
        .unwrap();
    let client = client::http1();
    let (resp, _) = tokio::join!(client.request(req), within(10, "sse open", up.sse_opened()));
    let mut body = resp.unwrap().into_body();
    up.emit("before").await;
    let f = within(5, "first event", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        f.data_ref().unwrap(),
        &Bytes::from_static(b"data: before\n\n")
    );

    child.signal("TERM");
    // New connections are refused once draining has begun (poll until the listener is gone).
    within(10, "listener closed", async {
        loop {
            if tokio::net::TcpStream::connect(child.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // ... but the stream in flight carries on to its end.
    for i in 0..3 {
        up.emit(&format!("after-{i}")).await;
        let f = within(5, "event after SIGTERM", body.frame())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            f.data_ref().unwrap(),
            &Bytes::from(format!("data: after-{i}\n\n"))
        );
    }
    up.end_sse();
    while let Some(f) = within(5, "end of stream", body.frame()).await {
        f.unwrap();
    }
    let status = within(15, "exit", async {
        tokio::task::spawn_blocking(move || child.wait_exit(Duration::from_secs(15)))
            .await
            .unwrap()
    })
    .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "scopegate exits cleanly once the stream is done"
    );
}

#[tokio::test]
async fn drain_deadline_ends_streams_that_do_not_finish() {
    let up = Upstream::start().await;
    let mut child = ChildProxy::start(
        &open_config(&up.url(), "").replace("workers = 2", "workers = 2\ndrain_timeout = \"1s\""),
    );
    let req = Request::get(format!("{}/sse", child.url()))
        .header("authorization", "Bearer test-token")
        .body(client::empty())
        .unwrap();
    let client = client::http1();
    let (resp, _) = tokio::join!(client.request(req), within(10, "sse open", up.sse_opened()));
    let mut body = resp.unwrap().into_body();
    child.signal("TERM");
    let start = std::time::Instant::now();
    // The stream never ends on its own; scopegate must close it at the deadline.
    let ended = within(10, "stream cut at deadline", async {
        loop {
            match body.frame().await {
                None | Some(Err(_)) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended);
    assert!(start.elapsed() >= Duration::from_millis(800));
    let status = tokio::task::spawn_blocking(move || child.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.is_some());
}

#[tokio::test]
async fn upstream_reset_mid_body_ends_only_that_response() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let req = Request::get(format!("{}/reset-body", p.url()))
        .header("authorization", "Bearer test-token")
        .body(client::empty())
        .unwrap();
    // Depending on how far the head got before the upstream died, the client sees the error on the
    // response or on its body; either way it never sees a complete, truncated response.
    match within(10, "reset-body", client::http1().request(req)).await {
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            let r = within(10, "body", resp.into_body().collect()).await;
            assert!(
                r.is_err(),
                "a truncated body is reported as an error, not as a complete one"
            );
        }
        Err(e) => assert!(format!("{e:?}").contains("IncompleteMessage"), "{e:?}"),
    }
    assert_eq!(get(&format!("{}/ok", p.url()), &[AUTH]).await.status, 200);
}

#[tokio::test]
async fn jwks_endpoint_is_public_and_has_no_private_material() {
    let up = Upstream::start().await;
    let p = proxy::start(&open_config(&up.url(), ""));
    let got = get(&format!("{}/.well-known/scopegate/jwks.json", p.url()), &[]).await;
    assert_eq!(got.status, 200);
    let keys = got.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none());
    let _ = bearer("x");
}

/// Server-sent events end with their credential too: a reload that keeps the API token leaves the
/// stream alone, one that removes it ends the stream (a clean end, as when a server finishes).
#[tokio::test]
async fn an_event_stream_ends_when_a_reload_removes_its_api_token() {
    let up = Upstream::start().await;
    let cfg = open_config(&up.url(), "");
    let p = proxy::start(&cfg);
    let req = Request::get(format!("{}/sse", p.url()))
        .header("authorization", "Bearer test-token")
        .body(client::empty())
        .unwrap();
    let client = client::http1();
    let (resp, _) = tokio::join!(client.request(req), within(10, "sse open", up.sse_opened()));
    let mut body = resp.unwrap().into_body();
    let next_event = async |body: &mut hyper::body::Incoming, want: &str| {
        up.emit(want).await;
        let f = within(5, "event", body.frame())
            .await
            .expect("the stream is open")
            .unwrap();
        assert_eq!(
            f.data_ref().unwrap(),
            &Bytes::from(format!("data: {want}\n\n"))
        );
    };
    next_event(&mut body, "one").await;
    // A reload that changes nothing this stream depends on.
    p.reload_with(&format!("{cfg}\n[[api_tokens]]\nsubject = \"other\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n",
        scopegate::identity::api_token::sha256_hex(b"other-token")))
        .await
        .unwrap();
    next_event(&mut body, "two").await;
    // The token is gone: the stream ends, though the upstream has not ended it.
    let without = cfg.replace(
        &scopegate::identity::api_token::sha256_hex(b"test-token"),
        &scopegate::identity::api_token::sha256_hex(b"rotated-token"),
    );
    p.reload_with(&without).await.unwrap();
    let end = within(5, "end of stream", body.frame()).await;
    assert!(end.is_none(), "the stream ended cleanly: {end:?}");
}
