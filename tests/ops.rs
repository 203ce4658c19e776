//! Operations: TLS termination with ALPN, certificate swap and policy change on reload (with old streams
//! untouched), refusing a broken reload, SIGHUP and file-watch reloads, exact metrics, JSON audit lines
//! with no secret in them, readiness, request ids, and TLS to the upstream with a custom CA.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::client::{self, bearer, get, send};
use support::keys::{TestKey, AUDIENCE, ISSUER};
use support::pki::{peer_common_name, Pki};
use support::proxy::{self, base, ChildProxy};
use support::upstream::Upstream;
use support::within;
use support::{metric, metrics};

fn api_config(upstream: &str, extra: &str) -> String {
    format!(
        "{}\n[[api_tokens]]\nsubject = \"reader\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n\n[[api_tokens]]\nsubject = \"writer\"\nsha256 = \"{}\"\nscopes = [\"operator.write\"]\n{extra}",
        base(upstream, "openclaw"),
        scopegate::identity::api_token::sha256_hex(b"sg_reader"),
        scopegate::identity::api_token::sha256_hex(b"sg_writer"),
    )
}

/// For the load tests: one address sends thousands of requests a second, which is what `[limits]`
/// refuses; the audit line is under test there, not the limits (`hostile.rs` tests those).
const UNLIMITED: &str = "\n[limits]\nenabled = false\n";

const READER: (&str, &str) = ("authorization", "Bearer sg_reader");
const WRITER: (&str, &str) = ("authorization", "Bearer sg_writer");

fn write_tls(dir: &std::path::Path, pki: &Pki, cn: &str) {
    let (cert, key) = pki.leaf(cn);
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn tls_config(upstream: &str) -> String {
    api_config(upstream, "").replace(
        "workers = 2\n",
        "workers = 2\ntls = { cert_file = \"cert.pem\", key_file = \"key.pem\" }\n",
    )
}

/// An HTTP/1.1 or HTTP/2 client over an established TLS stream, chosen by the negotiated ALPN.
async fn tls_send(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    req: Request<client::Body>,
) -> http::Response<hyper::body::Incoming> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    }
}

#[tokio::test]
async fn tls_handshake_and_h2_over_alpn() {
    let up = Upstream::start().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path(), &pki, "cert-a");
    let p = proxy::start_in(dir, &tls_config(&up.url()));
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], http::Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
    ] {
        let tls = pki.connect(p.addr, alpn).await;
        assert_eq!(peer_common_name(&tls), "cert-a");
        let req = Request::get("https://localhost/v1/models")
            .version(version)
            .header("authorization", "Bearer sg_reader")
            .body(client::empty())
            .unwrap();
        let resp = within(10, "TLS request", tls_send(tls, req)).await;
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        assert_eq!(
            up.last().header("x-forwarded-proto").as_deref(),
            Some("https")
        );
    }
    // Plain HTTP on a TLS port is not served.
    let resp = client::raw(
        p.addr,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(!resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn certificate_swap_on_reload_reaches_new_connections_while_an_old_stream_continues() {
    let up = Upstream::start().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path(), &pki, "cert-a");
    let cfg = tls_config(&up.url());
    let p = proxy::start_in(dir, &cfg);

    // An SSE stream over a TLS connection with certificate A.
    let old = pki.connect(p.addr, &[b"http/1.1"]).await;
    assert_eq!(peer_common_name(&old), "cert-a");
    let req = Request::get("https://localhost/sse")
        .header("authorization", "Bearer sg_reader")
        .body(client::empty())
        .unwrap();
    let (resp, _) = tokio::join!(tls_send(old, req), within(10, "sse open", up.sse_opened()));
    let mut body = resp.into_body();
    up.emit("one").await;
    assert!(within(5, "event one", body.frame())
        .await
        .unwrap()
        .unwrap()
        .is_data());

    // Swap the certificate files and reload.
    write_tls(p.dir.path(), &pki, "cert-b");
    let generation = p.reload_with(&cfg).await.expect("reload accepted");
    assert!(generation >= 2);
    let fresh = pki.connect(p.addr, &[b"http/1.1"]).await;
    assert_eq!(
        peer_common_name(&fresh),
        "cert-b",
        "a new connection sees the new certificate"
    );

    // The old stream carries on.
    up.emit("two").await;
    let f = within(5, "event two", body.frame()).await.unwrap().unwrap();
    assert_eq!(
        f.data_ref().unwrap(),
        &bytes::Bytes::from_static(b"data: two\n\n")
    );
    up.end_sse();
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_policy_and_a_good_one_applies_to_the_next_request() {
    let up = Upstream::start().await;
    let cfg = api_config(&up.url(), "");
    let p = proxy::start(&cfg);
    assert_eq!(
        get(&format!("{}/v1/models", p.url()), &[READER])
            .await
            .status,
        200
    );

    // A stream that starts now keeps the policy it started with.
    let req = Request::get(format!("{}/sse", p.url()))
        .header("authorization", "Bearer sg_reader")
        .body(client::empty())
        .unwrap();
    let client = client::http1();
    let (resp, _) = tokio::join!(client.request(req), within(10, "sse open", up.sse_opened()));
    let mut body = resp.unwrap().into_body();

    // Broken: a syntax error, then a semantic one. Both refused; the old config keeps serving.
    let err = p
        .reload_with(&format!("{cfg}\n[[grants]\n"))
        .await
        .unwrap_err();
    assert!(err.contains("scopegate.toml:"), "{err}");
    let err = p
        .reload_with(&cfg.replace("operator.read", "operator.reed"))
        .await
        .unwrap_err();
    assert!(err.contains("unknown scope \"operator.reed\""), "{err}");
    assert_eq!(
        get(&format!("{}/v1/models", p.url()), &[READER])
            .await
            .status,
        200
    );

    // A valid change: /v1/models now needs admin. The very next request sees it.
    let stricter = format!("{cfg}\n[[routes]]\npath = \"/v1/models\"\nrequire = [\"operator.admin\"]\n[[routes]]\npath = \"/sse\"\nrequire = [\"operator.admin\"]\n");
    p.reload_with(&stricter).await.unwrap();
    let got = get(&format!("{}/v1/models", p.url()), &[READER]).await;
    assert_eq!(got.status, 403);
    assert_eq!(
        got.json()["error"]["message"],
        "missing scope: operator.admin"
    );
    // ... while the stream admitted under the old policy continues.
    up.emit("still here").await;
    let f = within(5, "event after reload", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        f.data_ref().unwrap(),
        &bytes::Bytes::from_static(b"data: still here\n\n")
    );
    up.end_sse();
}

#[tokio::test]
async fn metrics_count_a_known_sequence_exactly() {
    let up = Upstream::start().await;
    let child = ChildProxy::start(&api_config(&up.url(), "").replace(
        "workers = 2\n",
        "workers = 2\nadmin_listen = \"127.0.0.1:0\"\n",
    ));
    let admin = format!("http://{}", child.admin.expect("admin address"));
    for _ in 0..3 {
        assert_eq!(
            get(&format!("{}/v1/models", child.url()), &[READER])
                .await
                .status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            send(
                "POST",
                &format!("{}/v1/responses", child.url()),
                &[READER],
                "{}"
            )
            .await
            .status,
            403
        );
    }
    assert_eq!(
        get(&format!("{}/v1/models", child.url()), &[]).await.status,
        401
    );
    assert_eq!(
        get(
            &format!("{}/v1/models", child.url()),
            &[("authorization", "Bearer nope")]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(
            "POST",
            &format!("{}/v1/responses", child.url()),
            &[WRITER],
            "{}"
        )
        .await
        .status,
        200
    );

    let text = get(&format!("{admin}/metrics"), &[]).await.text();
    let m = metrics(&text);
    let req = |route: &str, method: &str, status: &str, decision: &str| {
        metric(
            &m,
            "scopegate_requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status", status),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(
        req("GET,HEAD /v1/models", "GET", "200", "allow"),
        3.0,
        "{text}"
    );
    assert_eq!(
        req("POST /v1/responses", "POST", "403", "missing_scope"),
        2.0,
        "{text}"
    );
    assert_eq!(
        req("POST /v1/responses", "POST", "200", "allow"),
        1.0,
        "{text}"
    );
    assert_eq!(
        req("GET,HEAD /v1/models", "GET", "401", "unauthenticated"),
        2.0,
        "identity refusals keep their route: {text}"
    );
    assert_eq!(
        metric(
            &m,
            "scopegate_denials_total",
            &[("reason", "missing_scope")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &m,
            "scopegate_denials_total",
            &[("reason", "no_credential")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &m,
            "scopegate_denials_total",
            &[("reason", "unknown_token")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &m,
            "scopegate_request_duration_seconds_count",
            &[("route", "GET,HEAD /v1/models")]
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        metric(&m, "scopegate_upstream_duration_seconds_count", &[]),
        4.0,
        "{text}"
    );
    assert!(text.contains("scopegate_active_connections"));
    assert!(text.contains("scopegate_token_cache_hit_ratio"));

    // Health and readiness.
    assert_eq!(get(&format!("{admin}/healthz"), &[]).await.status, 200);
    let ready = get(&format!("{admin}/readyz"), &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["upstream_ok"], true);
    up.stop();
    let not_ready = within(10, "readyz to notice the upstream is gone", async {
        loop {
            let r = get(&format!("{admin}/readyz"), &[]).await;
            if r.status == 503 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(not_ready.json()["upstream_ok"], false);
}

#[tokio::test]
async fn audit_lines_are_json_with_every_field_and_no_secret() {
    let up = Upstream::start().await;
    let idp = TestKey::ed25519("idp");
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{}",
        api_config(&up.url(), ""),
        idp.toml_entry(dir.path())
    );
    let child = ChildProxy::start_in(dir, &cfg);
    let jwt = idp.token("auditee", &["operator.read"]);
    let bad = idp
        .token("auditee", &["operator.read"])
        .replace('.', "x.")
        .replacen("x.", ".", 1);
    let sent = [
        jwt.clone(),
        "sg_reader".to_string(),
        "sg_writer".to_string(),
        bad.clone(),
    ];
    assert_eq!(
        get(
            &format!("{}/v1/models", child.url()),
            &[("authorization", &bearer(&jwt))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        send(
            "POST",
            &format!("{}/v1/responses", child.url()),
            &[READER],
            "{}"
        )
        .await
        .status,
        403
    );
    assert_eq!(
        send(
            "POST",
            &format!("{}/v1/responses", child.url()),
            &[WRITER],
            "{}"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            &format!("{}/v1/models", child.url()),
            &[("authorization", &bearer(&bad))]
        )
        .await
        .status,
        401
    );
    let assertion = up.last().header("x-scopegate-assertion").unwrap();

    let audit: Vec<Value> = within(10, "four audit lines", async {
        loop {
            let lines: Vec<Value> = child
                .log_lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["target"] == "scopegate::audit")
                .collect();
            if lines.len() >= 4 {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for line in &audit {
        for field in [
            "request_id",
            "subject",
            "source",
            "client_ip",
            "method",
            "path",
            "route",
            "required",
            "effective",
            "decision",
            "reasons",
            "status",
            "duration_ms",
            "upstream_ms",
        ] {
            assert!(
                line.get(field).is_some(),
                "audit line lacks {field}: {line}"
            );
        }
    }
    let by_status = |s: u64| audit.iter().find(|l| l["status"] == s).unwrap().clone();
    let denied = by_status(403);
    assert_eq!(denied["subject"], "reader");
    assert_eq!(denied["source"], "api_token");
    assert_eq!(denied["decision"], "missing_scope");
    assert_eq!(denied["required"], "operator.write");
    assert!(denied["reasons"]
        .as_str()
        .unwrap()
        .contains("missing_scope"));
    let unauth = by_status(401);
    assert_eq!(unauth["decision"], "unauthenticated");
    assert!(
        unauth["reasons"].as_str().unwrap().contains("signature")
            || unauth["reasons"].as_str().unwrap().contains("malformed"),
        "{unauth}"
    );

    // No token, secret or assertion anywhere in the logs.
    let all = child.log_lines().join("\n");
    for secret in sent.iter().chain([&assertion]) {
        assert!(
            !all.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
        let sig = secret.rsplit('.').next().unwrap();
        if sig.len() > 16 {
            assert!(!all.contains(sig), "a signature leaked into the logs");
        }
    }
    assert!(
        !all.to_ascii_lowercase().contains("bearer "),
        "an Authorization value leaked into the logs"
    );
}

#[tokio::test]
async fn sighup_and_a_file_change_both_reload() {
    let up = Upstream::start().await;
    let cfg = api_config(&up.url(), "").replace(
        "workers = 2\n",
        "workers = 2\nadmin_listen = \"127.0.0.1:0\"\n",
    );
    let child = ChildProxy::start(&cfg);
    let admin = format!("http://{}", child.admin.unwrap());
    let gauge = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        gauge(
            &get(&format!("{admin}/metrics"), &[]).await.text(),
            "scopegate_config_generation"
        ),
        1.0
    );

    // SIGHUP with an unchanged file: a new generation, same behaviour.
    child.signal("HUP");
    within(10, "generation 2 after SIGHUP", async {
        loop {
            if gauge(
                &get(&format!("{admin}/metrics"), &[]).await.text(),
                "scopegate_config_generation",
            ) >= 2.0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        get(&format!("{}/v1/models", child.url()), &[READER])
            .await
            .status,
        200
    );

    // Editing the file (no signal): the watcher reloads, and the next request follows the new policy.
    let path = child.dir.path().join("scopegate.toml");
    std::fs::write(
        &path,
        format!("{cfg}\n[[routes]]\npath = \"/v1/models\"\nrequire = [\"operator.admin\"]\n"),
    )
    .unwrap();
    within(10, "the watcher to apply the edit", async {
        loop {
            if get(&format!("{}/v1/models", child.url()), &[READER])
                .await
                .status
                == 403
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let text = get(&format!("{admin}/metrics"), &[]).await.text();
    assert!(
        metric(
            &metrics(&text),
            "scopegate_reloads_total",
            &[("outcome", "ok")]
        ) >= 2.0,
        "{text}"
    );
}

#[tokio::test]
async fn request_ids_are_generated_or_accepted_from_trusted_peers_and_propagated() {
    let up = Upstream::start().await;
    let p = proxy::start(&api_config(&up.url(), ""));
    let got = get(
        &format!("{}/v1/models", p.url()),
        &[READER, ("x-request-id", "client-chosen-1")],
    )
    .await;
    let rid = got.header("x-request-id").unwrap();
    assert_ne!(rid, "client-chosen-1", "an untrusted peer's id is replaced");
    assert_eq!(up.last().header("x-request-id").unwrap(), rid);
    let p = proxy::start(&api_config(&up.url(), "").replace(
        "workers = 2\n",
        "workers = 2\nrequest_id_peers = [\"127.0.0.1\"]\n",
    ));
    let got = get(
        &format!("{}/v1/models", p.url()),
        &[READER, ("x-request-id", "trusted-id-7")],
    )
    .await;
    assert_eq!(got.header("x-request-id").as_deref(), Some("trusted-id-7"));
    assert_eq!(
        up.last().header("x-request-id").as_deref(),
        Some("trusted-id-7")
    );
    let got = get(
        &format!("{}/v1/models", p.url()),
        &[READER, ("x-request-id", "bad id with spaces")],
    )
    .await;
    assert_ne!(
        got.header("x-request-id").as_deref(),
        Some("bad id with spaces")
    );
}

#[tokio::test]
async fn tls_to_the_upstream_with_a_custom_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("upstream");
    let up = Upstream::start_tls(&cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let cfg = api_config(&url, "").replace(
        "profile = \"openclaw\"\n",
        "profile = \"openclaw\"\nca_file = \"ca.pem\"\n",
    );
    let p = proxy::start_in(dir, &cfg);
    let got = get(&format!("{}/v1/models", p.url()), &[READER]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(up.last().header("x-scopegate-assertion").is_some());
    // Without the CA the upstream is not trusted: a clean 502.
    let p2 = proxy::start(&api_config(&url, ""));
    let got = get(&format!("{}/v1/models", p2.url()), &[READER]).await;
    assert_eq!(got.status, 502);
}

/// A metric without labels (`metric` sums labelled samples).
fn unlabelled(all: &[(String, f64)], name: &str) -> f64 {
    all.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// The audit lines in a child's stderr, by request id (each must appear once).
fn audit_lines_by_id(child: &ChildProxy) -> (usize, std::collections::HashMap<String, Value>) {
    let lines: Vec<Value> = child
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "scopegate::audit")
        .collect();
    let count = lines.len();
    let by_id = lines
        .into_iter()
        .map(|v| (v["request_id"].as_str().unwrap().to_string(), v))
        .collect();
    (count, by_id)
}

/// The request a load client sends as its `i`-th: allowed (200 through the upstream), refused for a
/// missing scope (403) or for having no credential (401), so lines of every shape are written.
fn load_request(base: &str, i: usize) -> (Request<client::Body>, u16) {
    let (method, path, auth, status) = match i % 4 {
        0 => ("POST", "/v1/responses", Some(READER.1), 403),
        1 => ("GET", "/v1/models", None, 401),
        _ => ("GET", "/v1/models", Some(READER.1), 200),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}?i={i}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    (req.body(client::body("{}")).unwrap(), status)
}

/// The child's last log line, which counts what it served and wrote (after it has exited).
fn stopped_line(child: &ChildProxy) -> Value {
    child
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "stopped")
        .unwrap_or_else(|| panic!("no \"stopped\" line:\n{}", child.log_lines().join("\n")))
}

async fn exit_and_collect_logs(mut child: ChildProxy) -> ChildProxy {
    let exited = tokio::task::spawn_blocking(move || {
        let status = child.wait_exit(Duration::from_secs(30));
        assert!(
            child.wait_logs_closed(Duration::from_secs(10)),
            "stderr did not end"
        );
        (status, child)
    })
    .await
    .unwrap();
    let (status, child) = exited;
    let status = status.expect("scopegate did not exit after SIGTERM");
    assert!(status.success(), "scopegate exited with {status}");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_under_load_has_exactly_one_audit_line() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250;
    const N: usize = CLIENTS * PER_CLIENT;
    let up = Upstream::start().await;
    let child = ChildProxy::start(&api_config(&up.url(), UNLIMITED).replace(
        "workers = 2\n",
        "workers = 2\nadmin_listen = \"127.0.0.1:0\"\n",
    ));
    let admin = format!("http://{}", child.admin.expect("admin address"));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = child.url();
        tasks.push(tokio::spawn(async move {
            // One keep-alive connection per client.
            let http = client::http1();
            let mut ids = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT {
                let (req, want) = load_request(&base, c * PER_CLIENT + i);
                let resp = http.request(req).await.expect("request failed");
                let got = client::collect(resp).await;
                assert_eq!(got.status.as_u16(), want, "{}", got.text());
                ids.push(got.header("x-request-id").expect("x-request-id"));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(within(180, "the load", t).await.unwrap());
    }
    assert_eq!(ids.len(), N);

    // Without a drain: the size and time flushes write every line within about a second.
    let m = within(15, "every audit line written", async {
        loop {
            let m = metrics(&get(&format!("{admin}/metrics"), &[]).await.text());
            if unlabelled(&m, "scopegate_audit_lines_total") >= N as f64 {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(unlabelled(&m, "scopegate_audit_lines_total"), N as f64);
    assert_eq!(metric(&m, "scopegate_requests_total", &[]), N as f64);
    assert_eq!(unlabelled(&m, "scopegate_audit_lines_lost_total"), 0.0);
    assert!(
        metric(&m, "scopegate_audit_flushes_total", &[("reason", "size")]) >= 1.0,
        "full 64 KiB blocks were written by size"
    );
    let bytes = unlabelled(&m, "scopegate_audit_bytes_total");

    child.signal("TERM");
    let child = exit_and_collect_logs(child).await;
    let (count, by_id) = audit_lines_by_id(&child);
    assert_eq!(count, N, "one audit line per request");
    assert_eq!(by_id.len(), N, "request ids are unique");
    for id in &ids {
        assert!(by_id.contains_key(id), "no audit line for {id}");
    }
    let line_bytes: usize = child
        .log_lines()
        .iter()
        .filter(|l| l.contains("\"target\":\"scopegate::audit\""))
        .map(|l| l.len() + 1)
        .sum();
    assert_eq!(line_bytes as f64, bytes, "scopegate_audit_bytes_total");
    let stopped = stopped_line(&child);
    assert_eq!(stopped["requests"], N, "{stopped}");
    assert_eq!(stopped["audit_lines_recorded"], N, "{stopped}");
    assert_eq!(stopped["audit_lines_written"], N, "{stopped}");
    assert_eq!(stopped["audit_lines_lost"], 0, "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_load_loses_no_audit_line() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const CLIENTS: usize = 8;
    const MAX_PER_CLIENT: usize = 5_000;
    const SIGNAL_AFTER: usize = 600;
    let up = Upstream::start().await;
    let child = ChildProxy::start(&api_config(&up.url(), UNLIMITED));
    let answered = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (base, answered, enough) = (child.url(), answered.clone(), enough.clone());
        tasks.push(tokio::spawn(async move {
            let http = client::http1();
            let mut ids = Vec::new();
            // Until scopegate stops answering: a refused connection or a closed one ends the client.
            for i in 0..MAX_PER_CLIENT {
                let (req, want) = load_request(&base, c * MAX_PER_CLIENT + i);
                let Ok(resp) = http.request(req).await else {
                    break;
                };
                assert_eq!(resp.status().as_u16(), want);
                // The response has arrived: its decision was made and audited.
                ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_string());
                let _ = resp.into_body().collect().await;
                if answered.fetch_add(1, Ordering::SeqCst) + 1 == SIGNAL_AFTER {
                    enough.notify_one();
                }
            }
            ids
        }));
    }
    within(120, "the first responses", enough.notified()).await;
    child.signal("TERM");
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(within(120, "the clients to stop", t).await.unwrap());
    }
    assert!(
        ids.len() < CLIENTS * MAX_PER_CLIENT,
        "the load outlived SIGTERM"
    );
    let child = exit_and_collect_logs(child).await;
    let (count, by_id) = audit_lines_by_id(&child);
    for id in &ids {
        assert!(
            by_id.contains_key(id),
            "a request answered before exit has no audit line ({id}); {} responses, {count} lines",
            ids.len()
        );
    }
    assert!(
        count >= ids.len(),
        "{count} lines < {} responses",
        ids.len()
    );
    assert_eq!(by_id.len(), count, "request ids are unique");
    let stopped = stopped_line(&child);
    assert_eq!(stopped["requests"], count, "{stopped}");
    assert_eq!(stopped["audit_lines_written"], count, "{stopped}");
    assert_eq!(stopped["audit_lines_recorded"], count, "{stopped}");
    assert_eq!(stopped["audit_lines_lost"], 0, "{stopped}");
}
