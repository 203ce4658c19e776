//! The admin listener (`server.admin_listen`): `/healthz` (the process answers), `/readyz` (config loaded,
//! JWKS fetched, upstream reachable, not draining) and `/metrics` (Prometheus text). It is a separate
//! port so it can stay off the network the proxy faces (Pomerium CVE-2022-24797 exposed metrics on the
//! public service). Off the hot path, so it uses tower-http's stock layers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::server::Shared;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.stop.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = ServiceBuilder::new()
                .layer(tower_http::catch_panic::CatchPanicLayer::new())
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(10),
                ))
                .service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(route(&shared, req).await) }
                });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await;
        });
    }
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match req.uri().path() {
        "/healthz" => json(
            StatusCode::OK,
            serde_json::json!({"ok": true, "status": "live"}),
        ),
        "/readyz" => {
            let r = shared.readiness().await;
            crate::metrics::get().ready.set(r.ready as i64);
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, serde_json::to_value(&r).unwrap_or_default())
        }
        "/metrics" => {
            crate::metrics::rate_limit_tables(&shared.snapshot().limiter.occupancy());
            let body = crate::metrics::get().render();
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz, /readyz, /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
