//! Faults: the upstream refuses, resets mid-body and mid-SSE, stalls before headers and mid-stream,
//! answers garbage; the JWKS endpoint goes down, slow or serves garbage during a key rotation; a reload
//! brings a broken file; SIGTERM arrives under load. In every case the affected request gets a clean
//! error, the process keeps serving, and a stream of unrelated requests running alongside never fails.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::client::{self, bearer};
use support::idp::Jwks;
use support::keys::{TestKey, AUDIENCE, ISSUER};
use support::proxy::{self, base, ChildProxy};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw-TCP upstream whose paths misbehave on purpose. HTTP/1.1 keep-alive for the healthy path.
///
/// - `/v1/models`, `/ok`  200 with a small JSON body
/// - `/slow-ok`           200 after 1 s
/// - `/refuse`            closes the connection without a byte
/// - `/garbage`           answers something that is not HTTP
/// - `/stall-head`        never answers
/// - `/reset-mid-body`    promises 100 000 bytes, sends 10, then resets
/// - `/sse-reset`         an event stream: one event, then a reset
/// - `/stall-mid`         promises 100 000 bytes, sends 10, then goes silent
async fn fault_upstream() -> std::net::SocketAddr {
    fault_upstream_counting().await.0
}

/// Also returns how many `/slow-ok` requests have arrived (a readiness signal for in-flight work).
async fn fault_upstream_counting() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slow = Arc::new(AtomicUsize::new(0));
    let counter = slow.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_faulty(s, counter.clone()));
        }
    });
    (addr, slow)
}

/// Makes the kernel answer the peer with RST on close (an abrupt reset, not a clean FIN).
#[allow(deprecated)] // `set_linger` blocks on drop only for a non-zero linger; zero resets at once.
fn reset_on_close(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Reads the next request head from `s` (the test upstreams here get no request bodies), keeping any
/// bytes after it in `buf`; `None` once the connection ends.
async fn next_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(head)
}

async fn serve_faulty(mut s: TcpStream, slow_arrivals: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    while let Some(head) = next_head(&mut s, &mut buf).await {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/refuse" => return,
            "/garbage" => {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02").await;
                return;
            }
            "/stall-head" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            "/reset-mid-body" | "/stall-mid" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789")
                    .await;
                if path == "/stall-mid" {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                reset_on_close(&s);
                return;
            }
            "/sse-reset" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n10\r\ndata: event-one\n\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                reset_on_close(&s);
                return;
            }
            "/slow-ok" => {
                slow_arrivals.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            _ => {}
        }
        let body = b"{\"ok\":true}";
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
            return;
        }
    }
}

/// Unrelated traffic alongside a fault: sequential good requests until stopped (bounded by count).
struct Background {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Background {
    fn start(url: String, token: String) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = client::http1();
            let mut ok = 0;
            let mut failures = Vec::new();
            for _ in 0..20_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let req = http::Request::get(&url)
                    .header("authorization", bearer(&token))
                    .body(client::empty())
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                        ok += 1;
                    }
                    Ok(resp) => failures.push(format!("status {}", resp.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (ok, failures)
        });
        Background { stop, task }
    }

    /// Stops the traffic and asserts none of it failed.
    async fn assert_clean(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failures) = within(30, "background traffic", self.task).await.unwrap();
        assert!(
            failures.is_empty(),
            "{what}: unrelated requests failed: {failures:?}"
        );
        assert!(ok > 0, "{what}: no background request completed");
    }
}

fn jwt_proxy_config(upstream: &str, key: &TestKey, dir: &std::path::Path, extra: &str) -> String {
    format!(
        "{}{extra}\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{}",
        base(upstream, "openclaw"),
        key.toml_entry(dir)
    )
}

#[tokio::test]
async fn upstream_faults_fail_only_their_own_request() {
    let up = fault_upstream().await;
    let key = TestKey::ed25519("idp");
    let dir = tempfile::tempdir().unwrap();
    let cfg = jwt_proxy_config(&format!("http://{up}"), &key, dir.path(), "")
        .replace("workers = 2\n", "workers = 2\nidle_timeout = \"1s\"\n")
        .replace(
            "profile = \"openclaw\"\n",
            "profile = \"openclaw\"\nresponse_header_timeout = \"700ms\"\n",
        );
    let p = proxy::start_in(dir, &cfg);
    let token = key.token("reader", &["operator.read"]);
    let bg = Background::start(format!("{}/v1/models", p.url()), token.clone());
    let auth = bearer(&token);

    // Faults before any response header: clean JSON errors naming the cause.
    for (path, status, code) in [
        ("/refuse", 502, "upstream_reset"),
        ("/garbage", 502, "upstream_reset"),
        ("/stall-head", 504, "upstream_timeout"),
    ] {
        let got = within(
            20,
            path,
            client::get(&format!("{}{path}", p.url()), &[("authorization", &auth)]),
        )
        .await;
        assert_eq!(got.status, status, "{path}: {}", got.text());
        let body = got.json();
        assert_eq!(body["error"]["reason_codes"][0], code, "{path}: {body}");
        assert!(body["error"]["request_id"].is_string(), "{path}");
    }

    // Faults after the headers: the status is already sent, so the body ends in an error (never a
    // clean end that would pass a truncated body off as complete).
    for path in ["/reset-mid-body", "/sse-reset", "/stall-mid"] {
        let client = client::http1();
        let req = http::Request::get(format!("{}{path}", p.url()))
            .header("authorization", &auth)
            .body(client::empty())
            .unwrap();
        let resp = within(20, path, client.request(req)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let mut body = resp.into_body();
        let mut received = Vec::new();
        let outcome = within(20, path, async {
            loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            received.extend_from_slice(d);
                        }
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Ok(()),
                }
            }
        })
        .await;
        assert!(
            outcome.is_err(),
            "{path}: a cut stream must not end cleanly"
        );
        assert!(
            !received.is_empty(),
            "{path}: the bytes before the fault arrive"
        );
    }

    bg.assert_clean("upstream faults").await;
    // Still serving.
    let got = client::get(&format!("{}/ok", p.url()), &[("authorization", &auth)]).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn jwks_down_slow_and_garbage_during_rotation() {
    let up = fault_upstream().await;
    let k1 = TestKey::ed25519("k1");
    let k2 = TestKey::ed25519("k2");
    let jwks = Jwks::start(vec![k1.jwk.clone().unwrap()]).await;
    let cfg = format!(
        "{}\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{}\"\njwks_timeout = \"500ms\"\njwks_refetch_min_interval = \"1ms\"\n",
        base(&format!("http://{up}"), "openclaw"),
        jwks.url()
    );
    let p = proxy::start(&cfg);
    let url = format!("{}/v1/models", p.url());
    let old = k1.token("alice", &["operator.read"]);
    assert_eq!(
        client::get(&url, &[("authorization", &bearer(&old))])
            .await
            .status,
        200
    );
    let bg = Background::start(url.clone(), old.clone());
    let new = k2.token("bob", &["operator.read"]);

    // The IdP rotates to k2 but its JWKS endpoint is down, then serves garbage, then is slow.
    for fault in ["down", "garbage", "slow"] {
        match fault {
            "down" => jwks.fail(503),
            "garbage" => jwks.garbage(),
            _ => jwks.slow(
                vec![k1.jwk.clone().unwrap(), k2.jwk.clone().unwrap()],
                Duration::from_secs(3),
            ),
        }
        let got = within(
            10,
            fault,
            client::get(&url, &[("authorization", &bearer(&new))]),
        )
        .await;
        assert!(
            got.status == 401 || got.status == 503,
            "{fault}: {} {}",
            got.status,
            got.text()
        );
        assert!(got.json()["error"]["message"].is_string(), "{fault}");
    }
    // The IdP recovers with both keys: the new token works, the old one never stopped working.
    jwks.serve(vec![k1.jwk.clone().unwrap(), k2.jwk.clone().unwrap()]);
    let got = within(
        10,
        "recovered",
        client::get(&url, &[("authorization", &bearer(&new))]),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    bg.assert_clean("JWKS faults").await;
}

#[tokio::test]
async fn a_broken_reload_under_load_changes_nothing() {
    let up = fault_upstream().await;
    let key = TestKey::ed25519("idp");
    let dir = tempfile::tempdir().unwrap();
    let cfg = jwt_proxy_config(&format!("http://{up}"), &key, dir.path(), "");
    let p = proxy::start_in(dir, &cfg);
    let token = key.token("reader", &["operator.read"]);
    let bg = Background::start(format!("{}/v1/models", p.url()), token.clone());
    for broken in [
        "this is not toml",
        "[server]\nlisten = \"127.0.0.1:0\"\nunknown_key = 1\n",
        "[upstream]\nurl = \"ftp://nowhere\"\n",
    ] {
        let r = p.reload_with(broken).await;
        assert!(r.is_err(), "a broken config was accepted: {broken}");
    }
    bg.assert_clean("broken reloads").await;
    let got = client::get(
        &format!("{}/v1/models", p.url()),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_requests() {
    let (up, arrivals) = fault_upstream_counting().await;
    let key = TestKey::ed25519("idp");
    let dir = tempfile::tempdir().unwrap();
    let cfg = jwt_proxy_config(&format!("http://{up}"), &key, dir.path(), "");
    let mut child = ChildProxy::start_in(dir, &cfg);
    let token = key.token("reader", &["operator.read"]);
    let url = format!("http://{}/slow-ok", child.addr);

    // 24 requests in flight, each taking 1 s upstream.
    let mut inflight = Vec::new();
    for _ in 0..24 {
        let (url, token) = (url.clone(), token.clone());
        inflight.push(tokio::spawn(async move {
            client::get(&url, &[("authorization", &bearer(&token))]).await
        }));
    }
    // Wait until all of them have reached the upstream (so they are in flight in scopegate), then
    // SIGTERM.
    let addr = child.addr;
    within(10, "requests in flight", async {
        while arrivals.load(Ordering::SeqCst) < 24 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let pid = child.child.id();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for h in inflight {
        let got = within(20, "in-flight request", h).await.unwrap();
        assert_eq!(
            got.status,
            200,
            "an in-flight request was dropped: {}",
            got.text()
        );
    }
    let exit = within(20, "exit", async {
        loop {
            if let Some(s) = child.child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(exit.success(), "scopegate exited with {exit}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener must be closed after shutdown"
    );
}

/// An upstream that answers the first request on its first connection, then closes that connection
/// when the second request arrives on it, without a byte of response (the keep-alive race: the
/// upstream gave up on the connection just as the proxy reused it). Later connections answer every
/// request. Returns the request lines seen, in order.
async fn closes_reused_connection_once(
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut index = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let first_connection = index == 0;
            index += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let (mut buf, mut served) = (Vec::new(), 0);
                while let Some(head) = next_head(&mut s, &mut buf).await {
                    log.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or("").to_string());
                    if first_connection && served == 1 {
                        return; // closes without answering
                    }
                    served += 1;
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A request that met the close of a reused upstream connection before any response byte is sent
/// again on a fresh connection when its method is idempotent, and refused (502), never repeated, when
/// it is not: the upstream may have acted on it.
#[tokio::test]
async fn a_reused_connection_closing_is_retried_only_for_idempotent_requests() {
    let key = TestKey::ed25519("idp");
    for (method, path, expect_status, expect_sent) in [
        ("GET", "/v1/models?again", 200, 2),
        ("POST", "/v1/responses", 502, 1),
    ] {
        let (up, seen) = closes_reused_connection_once().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = jwt_proxy_config(&format!("http://{up}"), &key, dir.path(), "")
            .replace("workers = 2\n", "workers = 1\n");
        let p = proxy::start_in(dir, &cfg);
        let auth = bearer(&key.token("writer", &["operator.read", "operator.write"]));
        let headers = [("authorization", auth.as_str())];
        let first = client::get(&format!("{}/v1/models", p.url()), &headers).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let url = format!("{}{path}", p.url());
        let got = within(20, method, client::send(method, &url, &headers, "")).await;
        assert_eq!(got.status, expect_status, "{method}: {}", got.text());
        let lines = seen.lock().unwrap().clone();
        let sent = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{method} {path} ")))
            .count();
        assert_eq!(sent, expect_sent, "{method}: the upstream saw {lines:?}");
        if expect_status == 502 {
            assert_eq!(got.json()["error"]["reason_codes"][0], "upstream_reset");
        }
    }
}
