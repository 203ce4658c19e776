//! A real upstream for tests: HTTP/1.1 and WebSocket on loopback, recording what reaches it.
//!
//! Routes (any method unless noted):
//! - `/download?bytes=N`   streams N bytes of a fixed pattern in 64 KiB chunks
//! - `/sse`                an event stream whose events the test emits one by one ([`Upstream::emit`])
//! - `/hang`               never answers (for the response-header timeout)
//! - `/stall-body`         sends headers and one chunk, then nothing (mid-stream stall)
//! - `/reset-body`         sends headers and one chunk, then drops the connection
//! - `/status/NNN`         answers with that status
//! - `/trailers`           a chunked response with a trailer
//! - `/ws`                 WebSocket echo; a text `close:CODE` makes it close with CODE
//! - anything else         reads the body (streamed into a digest) and echoes what it saw as JSON

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{mpsc, Notify};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub trailers: Option<HeaderMap>,
    pub body_len: u64,
    pub body_sha256: String,
    pub websocket: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    sse: Mutex<Option<mpsc::Sender<Bytes>>>,
    sse_opened: Notify,
    /// TCP connections accepted so far (tells pooled reuse from a connection per request).
    connections: std::sync::atomic::AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: tokio::sync::watch::Sender<bool>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::start_with(None).await
    }

    /// An upstream that speaks HTTPS with the given certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Upstream {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop_rx.changed() => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                st.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(s), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Upstream { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many TCP connections the upstream accepted.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Waits until an `/sse` stream is open.
    pub async fn sse_opened(&self) {
        loop {
            if self.state.sse.lock().unwrap().is_some() {
                return;
            }
            self.state.sse_opened.notified().await;
        }
    }

    /// Emits one SSE event on the open stream.
    pub async fn emit(&self, data: &str) {
        let tx = self
            .state
            .sse
            .lock()
            .unwrap()
            .clone()
            .expect("no open SSE stream");
        tx.send(Bytes::from(format!("data: {data}\n\n")))
            .await
            .unwrap();
    }

    /// Ends the open SSE stream.
    pub fn end_sse(&self) {
        self.state.sse.lock().unwrap().take();
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let ws = scopegate::identity::hygiene::is_websocket_upgrade(req.headers());
    let mut seen = Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        trailers: None,
        body_len: 0,
        body_sha256: String::new(),
        websocket: ws,
    };
    if ws {
        st.seen.lock().unwrap().push(seen.clone());
        return websocket(req).await;
    }
    match path.as_str() {
        "/download" => {
            st.seen.lock().unwrap().push(seen);
            let n: u64 = query
                .strip_prefix("bytes=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= n {
                    return None;
                }
                let chunk = (n - sent).min(64 * 1024) as usize;
                let data: Vec<u8> = (0..chunk)
                    .map(|i| ((sent as usize + i) % 251) as u8)
                    .collect();
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(data))),
                    sent + chunk as u64,
                ))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("content-length", n.into());
            r
        }
        "/sse" => {
            st.seen.lock().unwrap().push(seen);
            let (tx, mut rx) = mpsc::channel::<Bytes>(1);
            *st.sse.lock().unwrap() = Some(tx);
            st.sse_opened.notify_waiters();
            let stream = futures_util::stream::poll_fn(move |cx| {
                rx.poll_recv(cx)
                    .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/hang" => {
            st.seen.lock().unwrap().push(seen);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(full("late"))
        }
        "/stall-body" | "/reset-body" => {
            st.seen.lock().unwrap().push(seen);
            let reset = path == "/reset-body";
            let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first chunk\n"))))
                    .await;
                if reset {
                    // Dropping the sender ends the body early while the response promised more.
                    drop(tx);
                } else {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(tx);
                }
            });
            let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            if reset {
                r.headers_mut().insert("content-length", 1000.into());
            }
            r
        }
        p if p.starts_with("/status/") => {
            st.seen.lock().unwrap().push(seen);
            let code: u16 = p[8..].parse().unwrap_or(500);
            let mut r = Response::new(full(format!("status {code}")));
            *r.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r
        }
        "/trailers" => {
            st.seen.lock().unwrap().push(seen);
            let mut t = HeaderMap::new();
            t.insert("x-checksum", "abc123".parse().unwrap());
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"body"))),
                Ok(Frame::trailers(t)),
            ];
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))));
            r.headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
            r
        }
        _ => {
            // Stream the body into a digest: never hold it whole.
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            let mut body = req.into_body();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            len += d.len() as u64;
                            ctx.update(d);
                        } else if let Ok(t) = f.into_trailers() {
                            seen.trailers = Some(t);
                        }
                    }
                    Err(_) => break,
                }
            }
            seen.body_len = len;
            seen.body_sha256 = ctx
                .finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let headers: serde_json::Map<String, serde_json::Value> = seen
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").into()))
                .collect();
            let body = json!({
                "method": seen.method, "uri": seen.uri, "headers": headers,
                "body_len": seen.body_len, "body_sha256": seen.body_sha256,
            });
            st.seen.lock().unwrap().push(seen);
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("connection", "x-upstream-hop".parse().unwrap());
            r.headers_mut()
                .insert("x-upstream-hop", "secret".parse().unwrap());
            r.headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            r
        }
    }
}

async fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").cloned().unwrap();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(m)) = ws.next().await {
            let reply = match m {
                Message::Text(t) if t.starts_with("close:") => {
                    let code: u16 = t[6..].parse().unwrap_or(1000);
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: "requested".into(),
                        }))
                        .await;
                    None
                }
                Message::Text(_) | Message::Binary(_) => Some(m),
                Message::Close(_) => break,
                _ => None,
            };
            if let Some(r) = reply {
                if ws.send(r).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    r.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    r.headers_mut()
        .insert("sec-websocket-accept", accept.parse().unwrap());
    r
}
