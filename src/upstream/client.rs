//! The pooled upstream client. Each worker thread owns one, so pooled connections are used by the
//! event loop that opened them (no cross-thread hand-offs on the hot path).

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::error::Refusal;
use crate::upstream::body::{RequestBody, UpstreamBody};
use crate::upstream::injected::Injected;
use crate::upstream::pool::PoolError;

pub type Connector = HttpsConnector<HttpConnector>;

/// How requests reach the upstream: the lean HTTP/1.1 pool for `http://`, hyper-util's client for
/// HTTPS and HTTP/2.
enum Transport {
    Http1 {
        /// Requests with a body, and upgrades.
        hyper: Arc<crate::upstream::pool::Http1Pool>,
        /// Bodiless requests (see `upstream::wire`).
        wire: Arc<crate::upstream::wire::WirePool>,
    },
    General(Box<Client<Connector, RequestBody>>),
}

pub struct UpstreamClient {
    transport: Transport,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for the pooled HTTP/1.1 transport (hyper-util sets it from the URI itself).
    host_header: http::HeaderValue,
    base_path: String,
    response_header_timeout: Duration,
    /// Identifies the upstream settings this client was built for; a reload that changes them makes
    /// workers build a new client.
    pub fingerprint: String,
}

pub fn fingerprint(cfg: &UpstreamConfig) -> String {
    format!(
        "{}|{:?}|{:?}|{}|{:?}|{}|{:?}",
        cfg.url,
        cfg.connect_timeout,
        cfg.ca_file,
        cfg.http2,
        cfg.pool_idle_timeout,
        cfg.pool_max_idle,
        cfg.response_header_timeout
    )
}

impl UpstreamClient {
    pub fn new(cfg: &UpstreamConfig) -> Result<UpstreamClient, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let ca = match &cfg.ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("cannot read CA file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        // hyper-rustls sets ALPN from the protocols enabled below.
        let tls = crate::util::client_tls_config(ca.as_deref())?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if cfg.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        if !cfg.scheme_https && !cfg.http2 {
            let port = cfg.authority.port_u16().unwrap_or(80);
            let host = cfg.authority.host().to_string();
            let target = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            return Ok(UpstreamClient {
                transport: Transport::Http1 {
                    hyper: Arc::new(crate::upstream::pool::Http1Pool::new(
                        target.clone(),
                        cfg.connect_timeout,
                        cfg.pool_idle_timeout,
                        cfg.pool_max_idle,
                    )),
                    wire: Arc::new(crate::upstream::wire::WirePool::new(
                        target,
                        cfg.connect_timeout,
                        cfg.pool_idle_timeout,
                        cfg.pool_max_idle,
                    )),
                },
                scheme: Scheme::HTTP,
                authority: cfg.authority.clone(),
                host_header: http::HeaderValue::from_str(cfg.authority.as_str())
                    .map_err(|_| "the upstream authority is not a valid Host header".to_string())?,
                base_path: cfg.base_path.clone(),
                response_header_timeout: cfg.response_header_timeout,
                fingerprint: fingerprint(cfg),
            });
        }
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .http2_only(cfg.http2)
            .retry_canceled_requests(true)
            .set_host(true)
            .build(connector);
        Ok(UpstreamClient {
            transport: Transport::General(Box::new(client)),
            host_header: http::HeaderValue::from_str(cfg.authority.as_str())
                .map_err(|_| "the upstream authority is not a valid Host header".to_string())?,
            scheme: if cfg.scheme_https {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority: cfg.authority.clone(),
            base_path: cfg.base_path.clone(),
            response_header_timeout: cfg.response_header_timeout,
            fingerprint: fingerprint(cfg),
        })
    }

    /// The URI the upstream receives for a client's path and query: origin-form for the pooled
    /// HTTP/1.1 transport (no base path: the client's own path, unchanged), absolute otherwise.
    pub fn upstream_uri(&self, pq: Option<&PathAndQuery>) -> Result<Uri, Refusal> {
        if let (Transport::Http1 { .. }, true, Some(pq)) =
            (&self.transport, self.base_path.is_empty(), pq)
        {
            return Ok(Uri::from(pq.clone()));
        }
        let pq = match (self.base_path.is_empty(), pq) {
            (true, Some(pq)) => pq.clone(),
            (true, None) => PathAndQuery::from_static("/"),
            (false, pq) => {
                let rest = pq.map(|p| p.as_str()).unwrap_or("/");
                PathAndQuery::try_from(format!("{}{}", self.base_path, rest))
                    .map_err(|_| Refusal::bad_request("bad_path", "the path cannot be forwarded"))?
            }
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| Refusal::bad_request("bad_path", "the path cannot be forwarded"))
    }

    /// Sends a request with scopegate's own fields (`injected`) and waits for response headers,
    /// mapping failures to the contract's 502/504. The lease, when there is one, must travel with the
    /// response body (see `upstream::pool`).
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
        mut injected: Injected,
        header_timeout: Option<Duration>,
    ) -> Result<(Response<UpstreamBody>, Option<crate::upstream::pool::Lease>), Refusal> {
        let limit = header_timeout.unwrap_or(self.response_header_timeout);
        match &self.transport {
            Transport::Http1 { hyper, wire } => {
                // Origin-form request line and an explicit Host, as HTTP/1.1 expects.
                if req.uri().scheme().is_some() {
                    if let Some(pq) = req.uri().path_and_query().cloned() {
                        *req.uri_mut() = Uri::from(pq);
                    }
                }
                injected.set(http::header::HOST, self.host_header.clone());
                let headers = req.headers();
                let upgrade = headers.contains_key(http::header::UPGRADE)
                    || headers.contains_key(http::header::CONNECTION);
                if req.body().is_end_stream() && !upgrade {
                    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                    let deadline = tokio::time::Instant::now() + limit;
                    return match wire
                        .send(req.method(), target, headers, &injected, deadline)
                        .await
                    {
                        Ok(resp) => Ok((resp.map(UpstreamBody::Wire), None)),
                        Err(e) => Err(classify_pool(&e, limit)),
                    };
                }
                injected.apply_to(req.headers_mut());
                match tokio::time::timeout(limit, hyper.send(req)).await {
                    Err(_) => Err(no_head_within(limit)),
                    Ok(Ok((resp, lease))) => Ok((resp.map(UpstreamBody::Hyper), Some(lease))),
                    Ok(Err(e)) => Err(classify_pool(&e, limit)),
                }
            }
            Transport::General(client) => {
                injected.apply_to(req.headers_mut());
                match tokio::time::timeout(limit, client.request(req)).await {
                    Err(_) => Err(no_head_within(limit)),
                    Ok(Ok(resp)) => Ok((resp.map(UpstreamBody::Hyper), None)),
                    Ok(Err(e)) => Err(classify(&e)),
                }
            }
        }
    }
}

/// The 504 for no response head within `limit`.
fn no_head_within(limit: Duration) -> Refusal {
    crate::metrics::upstream_error("header_timeout");
    Refusal::gateway_timeout(
        "upstream_timeout",
        format!(
            "the upstream sent no response headers within {}",
            humantime::format_duration(limit)
        ),
    )
}

/// `limit` is the response-header limit the request ran under.
fn classify_pool(e: &PoolError, limit: Duration) -> Refusal {
    // A timeout is the upstream being slow, not failing: no warning, as on hyper's paths.
    if !matches!(e, PoolError::HeaderTimeout) {
        tracing::warn!(error = ?e, "upstream request failed");
    }
    match e {
        PoolError::HeaderTimeout => no_head_within(limit),
        PoolError::ConnectTimeout => {
            crate::metrics::upstream_error("connect");
            Refusal::gateway_timeout(
                "upstream_connect_timeout",
                "connecting to the upstream timed out",
            )
        }
        PoolError::Connect(_) => {
            crate::metrics::upstream_error("connect");
            Refusal::bad_gateway(
                "upstream_unreachable",
                "the upstream refused or could not be reached",
            )
        }
        PoolError::Http(e) => {
            if let Some(r) = client_body_fault(e) {
                return r;
            }
            crate::metrics::upstream_error("reset");
            Refusal::bad_gateway(
                "upstream_reset",
                "the upstream closed the connection before sending a complete response",
            )
        }
        PoolError::Wire(e) => {
            crate::metrics::upstream_error("reset");
            let message = match e {
                crate::upstream::wire::WireError::Malformed(_) => {
                    "the upstream sent a response that is not valid HTTP/1.1"
                }
                _ => "the upstream closed the connection before sending a complete response",
            };
            Refusal::bad_gateway("upstream_reset", message)
        }
    }
}

/// When forwarding failed because the *client's* body failed (malformed chunking, cut short, too large,
/// idle), the client is at fault: 400/408/413, not a 502 that blames the upstream.
fn client_body_fault(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    use crate::upstream::body::BodyError;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            tracing::info!(error = %b, "request body failed while forwarding");
            return Some(match b {
                BodyError::TooLarge(max) => Refusal::new(
                    crate::error::RefusalKind::PayloadTooLarge,
                    "payload_too_large",
                    format!("the body exceeds the limit of {max} bytes"),
                ),
                BodyError::Idle(d) => Refusal::new(
                    crate::error::RefusalKind::RequestTimeout,
                    "request_body_idle",
                    format!("the client sent no body data for {}s", d.as_secs()),
                ),
                BodyError::Upstream(_) | BodyError::Wire(_) => Refusal::bad_request(
                    "bad_request_body",
                    "the request body is malformed or was cut short",
                ),
            });
        }
        src = s.source();
    }
    None
}

/// Maps a client error to a refusal with a precise reason (the cause chain goes to the log only).
fn classify(e: &hyper_util::client::legacy::Error) -> Refusal {
    use std::error::Error as _;
    let mut chain = String::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&s.to_string());
        src = s.source();
    }
    if let Some(r) = client_body_fault(e) {
        return r;
    }
    tracing::warn!(error = %e, cause = %chain, "upstream request failed");
    if e.is_connect() {
        crate::metrics::upstream_error("connect");
        let timed_out = chain.contains("timed out") || chain.contains("timeout");
        if timed_out {
            return Refusal::gateway_timeout(
                "upstream_connect_timeout",
                "connecting to the upstream timed out",
            );
        }
        return Refusal::bad_gateway(
            "upstream_unreachable",
            "the upstream refused or could not be reached",
        );
    }
    crate::metrics::upstream_error("reset");
    Refusal::bad_gateway(
        "upstream_reset",
        "the upstream closed the connection before sending a complete response",
    )
}
