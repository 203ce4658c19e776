//! Stand-ins for the two outside services identity depends on, both real servers on real sockets:
//! - [`Jwks`]: an identity provider's JWKS endpoint over HTTP, whose document, status or health the test
//!   changes mid-test (rotation, outage, garbage), counting fetches;
//! - [`WhoIs`]: a double of tailscaled's LocalAPI on a unix socket answering
//!   `GET /localapi/v0/whois?addr=IP:PORT` with the documented JSON (the real tailscaled cannot run here).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Clone)]
enum Mode {
    Serve(Value),
    /// Serve after a delay (a slow IdP).
    Slow(Value, std::time::Duration),
    Status(u16),
    Garbage,
}

pub struct Jwks {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    fetches: Arc<AtomicUsize>,
}

impl Jwks {
    pub async fn start(keys: Vec<Value>) -> Jwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Serve(serde_json::json!({ "keys": keys }))));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (m, f) = (mode.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (m, f) = (m.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let (m, f) = (m.clone(), f.clone());
                        async move {
                            f.fetch_add(1, Ordering::SeqCst);
                            let mut mode = m.lock().unwrap().clone();
                            if let Mode::Slow(doc, delay) = mode {
                                tokio::time::sleep(delay).await;
                                mode = Mode::Serve(doc);
                            }
                            let resp = match mode {
                                Mode::Serve(doc) => {
                                    let mut r =
                                        Response::new(Full::new(Bytes::from(doc.to_string())));
                                    r.headers_mut().insert(
                                        "content-type",
                                        "application/json".parse().unwrap(),
                                    );
                                    r
                                }
                                Mode::Status(code) => {
                                    let mut r = Response::new(Full::new(Bytes::from_static(
                                        b"unavailable",
                                    )));
                                    *r.status_mut() = StatusCode::from_u16(code).unwrap();
                                    r
                                }
                                Mode::Slow(..) => unreachable!("resolved above"),
                                Mode::Garbage => Response::new(Full::new(Bytes::from_static(
                                    b"<html>maintenance</html>",
                                ))),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Jwks {
            addr,
            mode,
            fetches,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn serve(&self, keys: Vec<Value>) {
        *self.mode.lock().unwrap() = Mode::Serve(serde_json::json!({ "keys": keys }));
    }

    /// Serves `keys`, but only after `delay`.
    pub fn slow(&self, keys: Vec<Value>, delay: std::time::Duration) {
        *self.mode.lock().unwrap() = Mode::Slow(serde_json::json!({ "keys": keys }), delay);
    }

    pub fn fail(&self, status: u16) {
        *self.mode.lock().unwrap() = Mode::Status(status);
    }

    pub fn garbage(&self) {
        *self.mode.lock().unwrap() = Mode::Garbage;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// tailscaled's WhoIs, answering per client address.
pub struct WhoIs {
    pub socket: PathBuf,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    pub calls: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl WhoIs {
    pub async fn start() -> WhoIs {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tailscaled.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let answers: Arc<Mutex<HashMap<String, Value>>> = Arc::new(Mutex::new(HashMap::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, c) = (answers.clone(), calls.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (a, c) = (a.clone(), c.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (a, c) = (a.clone(), c.clone());
                        async move {
                            c.fetch_add(1, Ordering::SeqCst);
                            let q = req.uri().query().unwrap_or("").to_string();
                            let addr = q.strip_prefix("addr=").unwrap_or("");
                            let ip = addr
                                .rsplit_once(':')
                                .map(|(ip, _)| ip)
                                .unwrap_or(addr)
                                .trim_matches(['[', ']']);
                            let found = a.lock().unwrap().get(ip).cloned();
                            let resp = match (req.uri().path(), found) {
                                ("/localapi/v0/whois", Some(doc)) => {
                                    Response::new(Full::new(Bytes::from(doc.to_string())))
                                }
                                _ => {
                                    let mut r = Response::new(Full::new(Bytes::from_static(
                                        b"no match for IP:port",
                                    )));
                                    *r.status_mut() = StatusCode::NOT_FOUND;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        WhoIs {
            socket,
            answers,
            calls,
            _dir: dir,
        }
    }

    /// A user's device.
    pub fn user(&self, ip: &str, login: &str, display: &str) {
        self.answers.lock().unwrap().insert(
            ip.into(),
            serde_json::json!({
                "Node": {"Name": "laptop.tail1234.ts.net.", "Tags": null},
                "UserProfile": {"LoginName": login, "DisplayName": display},
                "CapMap": {}
            }),
        );
    }

    /// A tagged device with an optional capability grant.
    pub fn tagged(&self, ip: &str, name: &str, tags: &[&str], cap: Option<(&str, Value)>) {
        let mut capmap = serde_json::Map::new();
        if let Some((k, v)) = cap {
            capmap.insert(k.into(), v);
        }
        self.answers.lock().unwrap().insert(
            ip.into(),
            serde_json::json!({
                "Node": {"Name": name, "Tags": tags},
                "UserProfile": {"LoginName": "tagged-devices", "DisplayName": "Tagged Devices"},
                "CapMap": capmap
            }),
        );
    }
}
