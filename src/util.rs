//! Small shared helpers: a bounded HTTP GET (JWKS documents, `verify-assertion --jwks URL`),
//! base64url, and [`refresh`], the fetch-and-keep-fresh loop of the JWKS cache and OIDC discovery.

pub mod refresh;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A TLS client config with the bundled web PKI roots (and no client auth).
pub fn client_tls_config(extra_ca: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca {
        use rustls_pki_types::pem::PemObject;
        let mut added = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("bad CA PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("CA file holds no certificate".into());
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// GETs `url` (http or https) and returns the body if the status is 200 and it fits in `max_bytes`.
pub async fn http_get(url: &str, timeout: Duration, max_bytes: usize) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let tls = client_tls_config(None)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let req = http::Request::get(uri)
        .header(
            http::header::USER_AGENT,
            concat!("scopegate/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

/// A bounded answer to a POST: the status and the body (at most `max_bytes`).
pub struct PostAnswer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// POSTs an `application/x-www-form-urlencoded` body (a token endpoint), with an optional
/// `Authorization` value, and returns whatever status came back with its bounded body.
pub async fn http_post_form(
    url: &str,
    authorization: Option<&str>,
    form: String,
    timeout: Duration,
    max_bytes: usize,
) -> Result<PostAnswer, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let tls = client_tls_config(None)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, http_body_util::Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let mut req = http::Request::post(uri)
        .header(
            http::header::USER_AGENT,
            concat!("scopegate/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if let Some(a) = authorization {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(form)))
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(PostAnswer {
            status,
            body: body.to_bytes(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

pub fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

pub fn b64url_decode(data: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .ok()
}

/// Fills a buffer from the system RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // aws-lc's RNG only fails if the OS RNG is unusable, in which case nothing secure can proceed.
    aws_lc_rs::rand::fill(&mut out).expect("system random number generator failed");
    out
}

/// A bounded cache that starts small: `quick_cache::Cache::new(n)` allocates room for `n` items up front,
/// which for a 100 000-token cache is megabytes of resident memory on an idle proxy. This one holds up to
/// `capacity` items and grows into it as they arrive.
pub fn bounded_cache<K, V>(capacity: usize) -> quick_cache::sync::Cache<K, V>
where
    K: Eq + std::hash::Hash,
    V: Clone,
{
    quick_cache::sync::Cache::with(
        capacity.min(256),
        capacity.max(1) as u64,
        quick_cache::UnitWeighter,
        quick_cache::DefaultHashBuilder::default(),
        quick_cache::sync::DefaultLifecycle::default(),
    )
}
