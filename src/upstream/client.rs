//! The pooled upstream client. Each worker thread owns one, so pooled connections are used by the
//! event loop that opened them (no cross-thread hand-offs on the hot path).

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::error::Refusal;
use crate::upstream::body::RequestBody;

pub type Connector = HttpsConnector<HttpConnector>;

pub struct UpstreamClient {
    client: Client<Connector, RequestBody>,
    scheme: Scheme,
    authority: Authority,
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
            client,
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

    /// The URI the upstream receives for a client's path and query.
    pub fn upstream_uri(&self, pq: Option<&PathAndQuery>) -> Result<Uri, Refusal> {
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

    /// The path the upstream will see (the assertion's `htp`).
    pub fn forwarded_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if self.base_path.is_empty() {
            std::borrow::Cow::Borrowed(path)
        } else {
            std::borrow::Cow::Owned(format!("{}{}", self.base_path, path))
        }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends a request and waits for response headers, mapping failures to the contract's 502/504.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
        header_timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, Refusal> {
        let limit = header_timeout.unwrap_or(self.response_header_timeout);
        match tokio::time::timeout(limit, self.client.request(req)).await {
            Err(_) => {
                crate::metrics::upstream_error("header_timeout");
                Err(Refusal::gateway_timeout(
                    "upstream_timeout",
                    format!(
                        "the upstream sent no response headers within {}",
                        humantime::format_duration(limit)
                    ),
                ))
            }
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
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

pub type SharedClient = Arc<UpstreamClient>;
