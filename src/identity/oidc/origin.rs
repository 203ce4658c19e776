//! Whose origin is this? The browser's origin is the scheme it used — https when scopegate terminates
//! TLS or a trusted peer vouches `X-Forwarded-Proto: https` — and the host it asked for. From it come
//! the redirect URI, the cookie names, and the two same-origin rules of ambient credentials: a
//! cookie-authenticated request that changes state or opens a WebSocket must come from this origin
//! (`Sec-Fetch-Site`, `Origin`), and a return path is only ever a path on it — never a URL another
//! parameter or the `state` could point elsewhere (no open redirect).

use http::{header, HeaderMap};

use super::error::OidcError;
use crate::identity::forwarded::{valid_host, Forwarded};

/// The origin a browser sees scopegate at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserOrigin {
    pub https: bool,
    /// `host[:port]`, as the browser sent it.
    pub host: String,
}

impl BrowserOrigin {
    /// From the connection's TLS, the trusted forwarding facts and the `Host` (or `:authority`).
    pub fn of(
        tls: bool,
        forwarded: &Forwarded,
        headers: &HeaderMap,
        uri: &http::Uri,
    ) -> Option<BrowserOrigin> {
        let https = tls || forwarded.proto == Some("https");
        let host = forwarded
            .host
            .clone()
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()))?;
        valid_host(&host).then_some(BrowserOrigin {
            https,
            host: host.to_ascii_lowercase(),
        })
    }

    /// `https://host[:port]`.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.host
        )
    }

    /// True when the host is a loopback name or address (where plain http is acceptable).
    pub fn loopback(&self) -> bool {
        let h = match self.host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.host.as_str(),
        };
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h == "localhost"
            || h.ends_with(".localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Sign-in needs https, except on loopback: a session cookie over plain http anywhere else could be
    /// read on the wire.
    pub fn check_secure(&self) -> Result<(), OidcError> {
        if self.https || self.loopback() {
            Ok(())
        } else {
            Err(OidcError::InsecureOrigin(self.origin()))
        }
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}{}", self.origin(), super::CALLBACK_PATH)
    }
}

/// A cookie-authenticated request that changes state, or a WebSocket upgrade, must come from our own
/// origin: a page elsewhere can make the browser send the cookie, but not lie in these headers.
/// `allowed` are the public origins of `[server] allowed_origins`.
pub fn check_same_origin(
    headers: &HeaderMap,
    own: &BrowserOrigin,
    allowed: &[String],
) -> Result<(), OidcError> {
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = site {
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err(OidcError::CrossSite(format!("Sec-Fetch-Site: {site}")));
        }
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) => {
            let origin = origin.trim_end_matches('/');
            if origin.eq_ignore_ascii_case(&own.origin())
                || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
            {
                Ok(())
            } else {
                Err(OidcError::CrossSite(format!("Origin: {origin}")))
            }
        }
        Some(Err(_)) => Err(OidcError::CrossSite("Origin is not text".into())),
        // A browser sends Origin on every upgrade and on every state-changing fetch; without it (and
        // without Sec-Fetch-Site) nothing shows the request came from our pages.
        None if site.is_some() => Ok(()),
        None => Err(OidcError::CrossSite("no Origin or Sec-Fetch-Site".into())),
    }
}

/// A path on our own origin: `/…`, never `//host`, `/\host` (browsers read both as another origin) or
/// anything with control characters.
pub fn local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && p.len() <= 2048
        && !p.bytes().any(|b| b.is_ascii_control() || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn origin(https: bool, host: &str) -> BrowserOrigin {
        BrowserOrigin {
            https,
            host: host.into(),
        }
    }

    #[test]
    fn the_scheme_follows_tls_or_a_trusted_proto_and_http_is_for_loopback_only() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("GW.example:8443"));
        let uri: http::Uri = "/".parse().unwrap();
        let plain = BrowserOrigin::of(false, &Forwarded::default(), &h, &uri).unwrap();
        assert_eq!(plain.origin(), "http://gw.example:8443");
        assert!(plain.check_secure().is_err());
        let fwd = Forwarded {
            proto: Some("https"),
            ..Forwarded::default()
        };
        let o = BrowserOrigin::of(false, &fwd, &h, &uri).unwrap();
        assert_eq!(
            o.redirect_uri(),
            "https://gw.example:8443/.scopegate/callback"
        );
        assert!(o.check_secure().is_ok());
        for lo in [
            "127.0.0.1:8080",
            "[::1]:80",
            "localhost",
            "app.localhost:3000",
        ] {
            assert!(origin(false, lo).check_secure().is_ok(), "{lo}");
        }
        assert!(origin(false, "127.0.0.1.evil.example")
            .check_secure()
            .is_err());
    }

    #[test]
    fn ambient_requests_must_come_from_our_origin() {
        let own = origin(true, "gw.example");
        let check = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            check_same_origin(&h, &own, &["https://public.example".into()])
        };
        assert!(check(&[("origin", "https://gw.example")]).is_ok());
        assert!(check(&[
            ("origin", "https://public.example"),
            ("sec-fetch-site", "same-origin")
        ])
        .is_ok());
        assert!(check(&[("sec-fetch-site", "same-origin")]).is_ok());
        assert!(check(&[("origin", "https://evil.example")]).is_err());
        assert!(
            check(&[("origin", "http://gw.example")]).is_err(),
            "the scheme is part of the origin"
        );
        assert!(check(&[
            ("origin", "https://gw.example"),
            ("sec-fetch-site", "cross-site")
        ])
        .is_err());
        assert!(check(&[("sec-fetch-site", "same-site")]).is_err());
        assert!(check(&[]).is_err());
    }

    #[test]
    fn return_paths_stay_on_our_origin() {
        for ok in ["/", "/chat?x=1", "/a/b#c"] {
            assert!(local_path(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "/a\nb",
            "",
        ] {
            assert!(!local_path(bad), "{bad:?}");
        }
    }
}
