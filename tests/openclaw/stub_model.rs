//! A local OpenAI-compatible model endpoint for the gateway to call, so that a request that passes the
//! gateway's scope checks completes with 200 instead of failing offline in a model provider. This is a
//! stand-in for an LLM, not for anything scopegate or the gateway does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

pub const REPLY: &str = "Hello from the stub model.";

pub struct StubModel {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
}

impl StubModel {
    pub async fn start() -> StubModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let c = c.clone();
                        async move { Ok::<_, Infallible>(answer(req, c).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        StubModel { addr, calls }
    }

    /// The gateway config that registers this endpoint as the default model.
    pub fn gateway_config(&self) -> Value {
        json!({
            "models": {"mode": "merge", "providers": {"stub": {
                "baseUrl": format!("http://{}/v1", self.addr),
                "apiKey": "stub-key",
                "api": "openai-completions",
                "models": [{"id": "stub-model", "name": "Stub", "reasoning": false, "input": ["text"], "contextWindow": 32000, "maxTokens": 1000}]
            }}},
            "agents": {"defaults": {"model": "stub/stub-model"}}
        })
    }
}

async fn answer(req: Request<Incoming>, calls: Arc<AtomicUsize>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if path.ends_with("/models") {
        return json_resp(
            json!({"object": "list", "data": [{"id": "stub-model", "object": "model"}]}),
        );
    }
    calls.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if req["stream"].as_bool().unwrap_or(false) {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "stub-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut out = String::new();
        out.push_str(&chunk(
            json!({"role": "assistant", "content": REPLY}),
            Value::Null,
        ));
        out.push_str(&chunk(json!({}), "stop".into()));
        out.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "stub-model", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})
        ));
        out.push_str("data: [DONE]\n\n");
        let mut r = Response::new(Full::new(Bytes::from(out)));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return r;
    }
    json_resp(
        json!({"id": "c1", "object": "chat.completion", "created": 0, "model": "stub-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}),
    )
}

fn json_resp(v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}
