//! `sgbench`: the pieces of scopegate's benchmark that no stock tool provides.
//!
//! - `upstream`: a small, fast hyper server (fixed body, an SSE stream whose events carry their send time,
//!   a WebSocket echo) used as the upstream for every mode, direct included;
//! - `tokens`: ES256 JWTs for the "full work" and "first sight" modes;
//! - `sse`: time from the upstream writing an event to this client reading it;
//! - `ws-throughput`: echo round trips of small messages over many WebSockets;
//! - `ws-idle`: opens N WebSockets and holds them, for memory per idle socket;
//! - `soak`: mixed allowed/denied/SSE/WebSocket traffic at a fixed rate, every answer checked;
//! - `relay`: a byte pump with no HTTP at all (one upstream socket per client socket), the floor of
//!   CPU per request that any proxy on tokio pays on this kernel's loopback path.
//!
//! `bench/run.sh` drives these together with wrk, oha and nginx; see BENCHMARKS.md.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

mod soak;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The benchmark upstream.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Writes an ES256 signing key (PKCS#8 PEM) and its public JWK into a directory.
    Keys {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Writes `count` ES256 tokens, one per line.
    Tokens {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        audience: String,
        #[arg(long)]
        out: PathBuf,
        /// Space-separated scopes for every token.
        #[arg(long, default_value = "operator.read operator.write")]
        scope: String,
    },
    /// SSE delivery latency: upstream write → client read.
    Sse {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 200)]
        events: usize,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Pad each event to about this many bytes.
        #[arg(long, default_value_t = 0)]
        pad: usize,
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// WebSocket echo throughput.
    WsThroughput {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Mixed allowed/denied/SSE/WebSocket traffic at a fixed rate for `seconds`; every response is
    /// checked against the status its kind must get. Prints a JSON summary; exits 1 on any surprise.
    Soak {
        /// scopegate's base URL, e.g. http://127.0.0.1:18190
        #[arg(long)]
        url: String,
        /// A token with operator.read only.
        #[arg(long)]
        reader: String,
        /// A token with operator.write.
        #[arg(long)]
        writer: String,
        #[arg(long, default_value_t = 180)]
        seconds: u64,
        /// Operations started per second (each is one request, one SSE stream or one WebSocket).
        #[arg(long, default_value_t = 400)]
        rate: u64,
    },
    /// Copies bytes between each accepted socket and a fresh upstream socket, on `threads` event loops
    /// of their own (one listener each, `SO_REUSEPORT`), as scopegate's workers are laid out.
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Opens `count` WebSockets, prints a JSON line when all are open, holds them until stdin closes.
    WsIdle {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long = "header")]
        headers: Vec<String>,
    },
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Upstream {
            listen,
            body_bytes,
            threads,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(upstream(listen, body_bytes));
        }
        Cmd::Tokens {
            key,
            count,
            issuer,
            audience,
            out,
            scope,
        } => tokens(&key, count, &issuer, &audience, &out, &scope),
        Cmd::Keys { dir } => keys(&dir),
        Cmd::Relay {
            listen,
            upstream,
            threads,
        } => relay(listen, upstream, threads),
        other => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match other {
                    Cmd::Sse {
                        url,
                        events,
                        interval_ms,
                        pad,
                        headers,
                    } => sse(&url, events, interval_ms, pad, &headers).await,
                    Cmd::WsThroughput {
                        url,
                        seconds,
                        connections,
                        headers,
                    } => ws_throughput(&url, seconds, connections, &headers).await,
                    Cmd::WsIdle {
                        url,
                        count,
                        headers,
                    } => ws_idle(&url, count, &headers).await,
                    Cmd::Soak {
                        url,
                        reader,
                        writer,
                        seconds,
                        rate,
                    } => {
                        if !soak::run(&url, &reader, &writer, seconds, rate).await {
                            std::process::exit(1);
                        }
                    }
                    _ => unreachable!(),
                }
            });
        }
    }
}

fn relay(listen: SocketAddr, upstream: SocketAddr, threads: usize) {
    let loops: Vec<_> = (0..threads.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(relay_loop(listen, upstream));
            })
        })
        .collect();
    eprintln!("sgbench relay on {listen} to {upstream}");
    for l in loops {
        let _ = l.join();
    }
}

async fn relay_loop(listen: SocketAddr, upstream: SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(listen).expect("bind");
    let listener = socket.listen(1024).expect("listen");
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream(listen: SocketAddr, body_bytes: usize) {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    let body = Bytes::from(vec![b'x'; body_bytes]);
    eprintln!("sgbench upstream on {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(route(req, body).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn route(mut req: Request<Incoming>, body: Bytes) -> Response<Body> {
    let path = req.uri().path();
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned();
        let Some(key) = key else {
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("sec-websocket-accept", accept.parse().unwrap());
        return r;
    }
    if path == "/sse-bench" {
        let q = req.uri().query().unwrap_or("");
        let param = |name: &str, default: u64| -> u64 {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (events, interval, pad) = (
            param("events", 100),
            param("interval_ms", 10),
            param("pad", 0) as usize,
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for _ in 0..events {
                tokio::time::sleep(Duration::from_millis(interval)).await;
                let padding = " ".repeat(pad);
                // The timestamp is taken as the event is handed to the connection.
                let ev = format!(": {padding}\ndata: {}\n\n", now_ns());
                if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return r;
    }
    // Drain any request body, then the fixed answer.
    let _ = req.into_body().collect().await;
    let mut r = Response::new(Full::new(body).boxed());
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    r
}

fn keys(dir: &std::path::Path) {
    use aws_lc_rs::signature::KeyPair;
    std::fs::create_dir_all(dir).unwrap();
    let der =
        scopegate::assertion::generate_pkcs8(scopegate::config::AssertionAlgorithm::ES256).unwrap();
    std::fs::write(
        dir.join("idp-es256.pem"),
        scopegate::assertion::pem_encode("PRIVATE KEY", &der),
    )
    .unwrap();
    let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
    )
    .unwrap();
    let p = kp.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256",
        "x": scopegate::util::b64url(&p[1..33]), "y": scopegate::util::b64url(&p[33..])});
    std::fs::write(dir.join("idp-es256.jwk"), jwk.to_string()).unwrap();
    let assertion =
        scopegate::assertion::generate_pkcs8(scopegate::config::AssertionAlgorithm::EdDSA).unwrap();
    std::fs::write(
        dir.join("assertion-ed25519.pem"),
        scopegate::assertion::pem_encode("PRIVATE KEY", &assertion),
    )
    .unwrap();
}

fn tokens(key: &PathBuf, count: usize, issuer: &str, audience: &str, out: &PathBuf, scope: &str) {
    let pem = std::fs::read(key).expect("read key");
    let alg = scopegate::config::JwtAlgorithm::ES256;
    let k = scopegate::tokens::encoding_key(alg, &pem).expect("ES256 key");
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).expect("create out"));
    for i in 0..count {
        let spec = scopegate::tokens::TokenSpec {
            issuer: issuer.into(),
            audience: audience.into(),
            subject: format!("user-{i}"),
            scopes: scope.split_whitespace().map(String::from).collect(),
            groups: vec![],
            ttl: Duration::from_secs(4 * 3600),
            kid: Some("bench".into()),
            extra: Default::default(),
        };
        writeln!(
            f,
            "{}",
            scopegate::tokens::mint(alg, &k, &spec).expect("mint")
        )
        .unwrap();
    }
}

fn parse_headers(headers: &[String]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn sse(url: &str, events: usize, interval_ms: u64, pad: usize, headers: &[String]) {
    let uri: http::Uri = format!("{url}?events={events}&interval_ms={interval_ms}&pad={pad}")
        .parse()
        .unwrap();
    let host = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(uri.path_and_query().unwrap().as_str()).header("host", host);
    for (k, v) in parse_headers(headers) {
        req = req.header(k, v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("response");
    assert_eq!(resp.status(), 200, "SSE request refused");
    let mut body = resp.into_body();
    let mut lat_us: Vec<f64> = Vec::with_capacity(events);
    let mut buf = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(d) = frame.data_ref() else { continue };
        let arrived = now_ns();
        buf.push_str(&String::from_utf8_lossy(d));
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            if let Some(ts) = ev
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|t| t.trim().parse::<u128>().ok())
            {
                lat_us.push((arrived.saturating_sub(ts)) as f64 / 1000.0);
            }
        }
    }
    lat_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        json!({"events": lat_us.len(), "first_us": lat_us.first(), "p50_us": percentile(&lat_us, 50.0), "p99_us": percentile(&lat_us, 99.0), "max_us": lat_us.last()})
    );
}

async fn ws_open(
    url: &str,
    headers: &[(String, String)],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect")
        .0
}

async fn ws_throughput(url: &str, seconds: u64, connections: usize, headers: &[String]) {
    let headers = Arc::new(parse_headers(headers));
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, headers, count) = (url.to_string(), headers.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = ws_open(&url, &headers).await;
            let msg = Message::text("ping-0123456789");
            while Instant::now() < deadline {
                if ws.send(msg.clone()).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(_)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = count.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({"round_trips": n, "per_sec": n as f64 / seconds as f64})
    );
}

async fn ws_idle(url: &str, count: usize, headers: &[String]) {
    let headers = Arc::new(parse_headers(headers));
    let mut held = Vec::with_capacity(count);
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut pending = Vec::new();
    for _ in 0..count {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (url, headers) = (url.to_string(), headers.clone());
        pending.push(tokio::spawn(async move {
            let ws = ws_open(&url, &headers).await;
            drop(permit);
            ws
        }));
    }
    for p in pending {
        held.push(p.await.expect("open"));
    }
    println!("{}", json!({"open": held.len()}));
    std::io::stdout().flush().unwrap();
    // Hold until the driver closes our stdin.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 16];
    let _ = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await;
    drop(held);
}
