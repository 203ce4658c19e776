//! `[server]` (listener, TLS, limits on heads and bodies, timeouts) and `[upstream]` (where to forward,
//! in which profile).

use std::time::Duration;

use super::*;

pub(super) fn server_config(ck: &mut Checker, raw: RawServer) -> Option<ServerConfig> {
    let workers = match raw.workers {
        Some(w) if *w.get_ref() == 0 || *w.get_ref() > 256 => {
            ck.err(w.span(), "workers must be between 1 and 256");
            1
        }
        Some(w) => w.into_inner(),
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let max_headers = match raw.max_headers {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 10_000 => {
            ck.err(n.span(), "max_headers must be between 1 and 10000");
            100
        }
        Some(n) => n.into_inner(),
        None => 100,
    };
    let max_connections = match raw.max_connections {
        Some(n) if *n.get_ref() == 0 => {
            ck.err(n.span(), "max_connections must be at least 1");
            1
        }
        Some(n) => n.into_inner(),
        None => 16_384,
    };
    let max_header_bytes = raw
        .max_header_bytes
        .map(|b| b.0 as usize)
        .unwrap_or(32 * 1024);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        ck.err_nowhere("[server] max_header_bytes must be between 1KiB and 1MiB");
    }
    let tls = raw.tls.map(|t| {
        let t = t.into_inner();
        let cert_file = ck.path(t.cert_file.get_ref());
        let key_file = ck.path(t.key_file.get_ref());
        if !cert_file.exists() {
            ck.err(
                t.cert_file.span(),
                format!("TLS certificate {} does not exist", cert_file.display()),
            );
        }
        if !key_file.exists() {
            ck.err(
                t.key_file.span(),
                format!("TLS key {} does not exist", key_file.display()),
            );
        }
        TlsConfig {
            cert_file,
            key_file,
        }
    });
    let unix_socket_mode = raw.unix_socket_mode.and_then(|m| {
        match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 => Some(v),
            _ => {
                ck.err(
                    m.span(),
                    format!(
                        "unix_socket_mode must be octal like \"0660\", not {:?}",
                        m.get_ref()
                    ),
                );
                None
            }
        }
    });
    let listen = raw
        .listen
        .unwrap_or(ListenAddr::Tcp(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            8080,
        ))));
    Some(ServerConfig {
        listen,
        tls,
        admin_listen: raw.admin_listen.map(|a| a.0),
        workers,
        header_read_timeout: raw
            .header_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(20)),
        max_header_bytes,
        max_headers,
        max_body_bytes: Some(raw.max_body_bytes.map(|b| b.0).unwrap_or(256 * 1024 * 1024))
            .filter(|&b| b > 0),
        max_connections,
        idle_timeout: raw
            .idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(300)),
        websocket_idle_timeout: raw
            .websocket_idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(3600)),
        drain_timeout: raw
            .drain_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        h2_max_concurrent_streams: raw.h2_max_concurrent_streams.unwrap_or(256),
        unix_socket_mode,
        request_id_peers: raw.request_id_peers.unwrap_or_default(),
        allowed_origins: raw
            .allowed_origins
            .unwrap_or_default()
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect(),
    })
}

pub(super) fn upstream_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawUpstream>>,
) -> Option<UpstreamConfig> {
    let Some(raw) = raw else {
        ck.err_nowhere("[upstream] is required: set url = \"http://127.0.0.1:18789\"");
        return None;
    };
    let raw = raw.into_inner();
    let url_span = raw.url.span();
    let uri: http::Uri = match raw.url.get_ref().parse() {
        Ok(u) => u,
        Err(e) => {
            ck.err(
                url_span,
                format!("invalid upstream url {:?}: {e}", raw.url.get_ref()),
            );
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            ck.err(url_span, "upstream url must start with http:// or https://");
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        ck.err(url_span, "upstream url has no host");
        return None;
    };
    if uri.query().is_some() {
        ck.err(url_span.clone(), "upstream url must not have a query");
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let profile = match raw.profile.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("generic") => Profile::Generic,
        Some("openclaw") => Profile::OpenClaw,
        Some(other) => {
            let span = raw.profile.as_ref().map(|p| p.span()).unwrap_or(url_span);
            ck.err(
                span,
                format!("unknown profile {other:?}: use \"openclaw\" or \"generic\""),
            );
            Profile::Generic
        }
    };
    let ca_file = raw.ca_file.map(|p| {
        let full = ck.path(p.get_ref());
        if !full.exists() {
            ck.err(
                p.span(),
                format!("CA file {} does not exist", full.display()),
            );
        }
        full
    });
    Some(UpstreamConfig {
        url: uri,
        scheme_https: https,
        authority,
        base_path,
        profile,
        connect_timeout: raw
            .connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5)),
        response_header_timeout: raw
            .response_header_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(300)),
        ca_file,
        http2: raw.http2.unwrap_or(false),
        pool_idle_timeout: raw
            .pool_idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(90)),
        pool_max_idle: raw.pool_max_idle.unwrap_or(256),
    })
}
