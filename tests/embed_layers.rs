//! The embedding runs here: `examples/embed_layers.rs` — scopegate's identify and authorise layers
//! in front of a hyper service of its own — serving on a free loopback port, driven over real sockets.
//! The example's code is compiled into this test as it is (`#[path]`), so the two cannot drift apart.

mod support;

#[path = "../examples/embed_layers.rs"]
#[allow(dead_code)]
mod example;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;
use scopegate::proxy::embed::Gate;
use support::client::{bearer, get};
use tokio::net::TcpListener;

struct Running {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start() -> Running {
        let gate = Gate::from_toml(&example::config()).expect("the example's config compiles");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(example::serve(listener, gate, calls.clone(), async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            calls,
            stop: Some(stop),
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        support::within(10, "the example's accept loop to end", self.server)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_gate_decides_and_the_service_reads_the_decision() {
    let s = Running::start().await;
    let reader = bearer(example::READER_TOKEN);
    let writer = bearer(example::WRITER_TOKEN);

    // No credential on the protected path: the contract's 401, and the handler never runs.
    let got = get(&s.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.text());
    let body = got.json();
    assert_eq!(body["error"]["type"], "unauthorized");
    assert_eq!(
        body["error"]["message"],
        "authentication required: * /hello needs a credential"
    );
    assert!(body["error"]["reason_codes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "no_credential"));
    assert_eq!(
        got.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"scopegate\"")
    );
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        got.header("x-request-id").as_deref(),
        body["error"]["request_id"].as_str()
    );
    assert_eq!(
        s.calls(),
        0,
        "the handler ran for an unauthenticated request"
    );

    // A read-only token: 403 naming the missing scope; the handler still has not run.
    let got = get(&s.url("/hello"), &[("authorization", &reader)]).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
    let body = got.json();
    assert_eq!(body["error"]["type"], "forbidden");
    assert_eq!(body["error"]["message"], "missing scope: operator.write");
    assert_eq!(
        body["error"]["required"],
        serde_json::json!(["operator.write"])
    );
    assert_eq!(s.calls(), 0, "the handler ran for a forbidden request");

    // A broken token is refused as invalid, never treated as anonymous.
    let got = get(&s.url("/hello"), &[("authorization", "Bearer nope")]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.text());
    assert!(got
        .header("www-authenticate")
        .is_some_and(|v| v.contains("error=\"invalid_token\"")));
    assert_eq!(s.calls(), 0);

    // A write token: the handler runs and names the subject and the effective scopes.
    let got = get(&s.url("/hello"), &[("authorization", &writer)]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(
        got.text(),
        "hello writer, you have operator.read operator.write operator.sessions.read \
         operator.sessions.write operator.talk\n"
    );
    assert_eq!(s.calls(), 1);

    // The public path needs no credential; the caller is anonymous.
    let got = get(&s.url("/health"), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "hello anonymous, you have no scopes\n");
    assert_eq!(s.calls(), 2);

    // A path no route names is denied by the default route, even with the write token.
    let got = get(&s.url("/elsewhere"), &[("authorization", &writer)]).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
    assert_eq!(got.json()["error"]["reason_codes"][0], "default_deny");
    assert_eq!(s.calls(), 2);

    s.stop().await;
}

#[tokio::test]
async fn hygiene_and_whoami_are_the_sidecars() {
    let s = Running::start().await;
    let writer = bearer(example::WRITER_TOKEN);

    // An ambiguous path is refused by hygiene before anything is identified.
    let got = get(
        &s.url("/hello/%2e%2e/health"),
        &[("authorization", &writer)],
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert_eq!(got.json()["error"]["type"], "bad_request");

    // `whoami` is answered by the gate itself, with the caller's own decision.
    let got = get(&s.url("/.scopegate/whoami"), &[("authorization", &writer)]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let body = got.json();
    assert_eq!(body["subject"], "writer");
    assert_eq!(body["method"], "api_token");
    assert_eq!(s.calls(), 0, "the handler ran for the gate's own answers");

    s.stop().await;
}
