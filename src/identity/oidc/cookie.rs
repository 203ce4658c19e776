//! The cookies themselves: their names, reading them from `Cookie`, writing `Set-Cookie`, and removing
//! them before a request goes upstream.
//!
//! Every cookie is `HttpOnly` (no script reads it), `SameSite=Lax` (a cross-site subrequest does not
//! carry it; a top-level navigation back from the provider does) and `Path=/`. When the browser's scheme
//! is https it is also `Secure` with the `__Host-` prefix, which browsers only accept from a secure
//! origin, without `Domain`, for `/` — so a sibling subdomain cannot plant ("toss") one. Plain http is
//! only for loopback (checked where a sign-in starts).

use http::{header, HeaderMap, HeaderValue};

const SESSION: &str = "scopegate-session";
const LOGIN_PREFIX: &str = "scopegate-login-";
const HOST_PREFIX: &str = "__Host-";
// `session_name` spells the https name out; keep the two in step.
const _: () = assert!(HOST_PREFIX.len() + SESSION.len() == "__Host-scopegate-session".len());

/// The cookie names for one browser scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jar {
    pub https: bool,
}

/// What was found for one cookie name.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    None,
    One(&'a str),
    /// The same name twice: refused rather than guessed at (one of them was planted).
    Several,
}

impl Jar {
    fn prefix(self) -> &'static str {
        if self.https {
            HOST_PREFIX
        } else {
            ""
        }
    }

    /// A constant, so reading the session on every request allocates nothing.
    pub fn session_name(self) -> &'static str {
        if self.https {
            "__Host-scopegate-session"
        } else {
            SESSION
        }
    }

    /// One login-state cookie per sign-in in progress, so two tabs signing in at once do not clash.
    pub fn login_name(self, state: &str) -> String {
        let tag: String = state.chars().take(12).collect();
        format!("{}{LOGIN_PREFIX}{tag}", self.prefix())
    }

    /// `Set-Cookie` for a value living `max_age` seconds (0 clears it).
    pub fn set(self, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.https { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    pub fn clear(self, name: &str) -> Option<HeaderValue> {
        self.set(name, "", 0)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2 may split them),
/// found by searching for the name rather than splitting every pair (this runs on every
/// cookie-carrying request, and a session value is a few hundred bytes). A value that is not text
/// cannot be one scopegate sealed; with our name it counts as a second, planted value.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Found<'a> {
    find_with(headers, &memchr::memmem::Finder::new(name.as_bytes()))
}

/// The session cookie: [`find`] with the searcher built once, not per request.
pub fn find_session(headers: &HeaderMap, jar: Jar) -> Found<'_> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static HTTPS: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(Jar { https: true }.session_name().as_bytes()));
    static HTTP: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(Jar { https: false }.session_name().as_bytes()));
    find_with(headers, if jar.https { &HTTPS } else { &HTTP })
}

fn find_with<'a>(headers: &'a HeaderMap, finder: &memchr::memmem::Finder<'_>) -> Found<'a> {
    let name = finder.needle();
    let mut found = Found::None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(text) = std::str::from_utf8(v.as_bytes()) else {
            if finder.find(v.as_bytes()).is_some() {
                return Found::Several;
            }
            continue;
        };
        let mut from = 0;
        while let Some(at) = finder.find(&text.as_bytes()[from..]) {
            let start = from + at;
            from = start + name.len();
            // A whole name: at the start of a pair, followed by `=`.
            let before = text[..start].trim_end_matches([' ', '\t']);
            if !(before.is_empty() || before.ends_with(';')) {
                continue;
            }
            let Some(rest) = text[from..]
                .trim_start_matches([' ', '\t'])
                .strip_prefix('=')
            else {
                continue;
            };
            let end = memchr::memchr(b';', rest.as_bytes()).unwrap_or(rest.len());
            let value = rest[..end].trim_matches([' ', '\t']);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            found = match found {
                Found::None => Found::One(value),
                _ => return Found::Several,
            };
        }
    }
    found
}

/// True for a name scopegate owns, in either scheme's spelling.
fn ours(name: &str) -> bool {
    let bare = name.strip_prefix(HOST_PREFIX).unwrap_or(name);
    bare == SESSION || bare.starts_with(LOGIN_PREFIX)
}

/// True when the request carries any cookie (cheap: decides whether [`strip`] has work).
pub fn any(headers: &HeaderMap) -> bool {
    headers.contains_key(header::COOKIE)
}

/// Removes scopegate's cookies from the request: the session is scopegate's credential, never the
/// upstream's. The other cookies are kept, in order, in one header.
pub fn strip(headers: &mut HeaderMap) {
    if !any(headers) {
        return;
    }
    let mut has_ours = false;
    let mut kept: Vec<String> = Vec::new();
    for v in headers.get_all(header::COOKIE).iter() {
        let Ok(v) = v.to_str() else {
            // Not text: cannot be parsed, so it cannot be ours either; drop it rather than pass bytes
            // we did not look at.
            has_ours = true;
            continue;
        };
        for p in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let name = p.split_once('=').map(|(k, _)| k.trim()).unwrap_or(p);
            if ours(name) {
                has_ours = true;
            } else {
                kept.push(p.to_string());
            }
        }
    }
    if !has_ours {
        return;
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_host_prefix_and_secure_only_over_https() {
        let https = Jar { https: true };
        assert_eq!(https.session_name(), "__Host-scopegate-session");
        let v = https.set(https.session_name(), "abc", 60).unwrap();
        assert_eq!(
            v,
            "__Host-scopegate-session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let http = Jar { https: false };
        assert_eq!(http.session_name(), "scopegate-session");
        assert!(!http
            .clear("scopegate-session")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn reading_finds_one_value_and_refuses_two() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; scopegate-session=xyz"),
        );
        assert_eq!(find(&h, "scopegate-session"), Found::One("xyz"));
        assert_eq!(find(&h, "b"), Found::None);
        let mut spaced = HeaderMap::new();
        spaced.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "__Host-scopegate-session=https; x-scopegate-session=no;scopegate-session = \"q\" ",
            ),
        );
        assert_eq!(
            find(&spaced, "scopegate-session"),
            Found::One("q"),
            "whole names only"
        );
        assert_eq!(
            find(&spaced, "__Host-scopegate-session"),
            Found::One("https")
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("scopegate-session=planted"),
        );
        assert_eq!(find(&h, "scopegate-session"), Found::Several);
    }

    #[test]
    fn stripping_removes_only_ours() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static(
                "theme=dark; __Host-scopegate-session=s; scopegate-login-abc=l",
            ),
        );
        h.append(header::COOKIE, HeaderValue::from_static("lang=en"));
        strip(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h.get(header::COOKIE).unwrap(), "theme=dark; lang=en");
        let mut only = HeaderMap::new();
        only.insert(
            header::COOKIE,
            HeaderValue::from_static("scopegate-session=s"),
        );
        strip(&mut only);
        assert!(only.get(header::COOKIE).is_none());
        let mut none = HeaderMap::new();
        none.insert(header::COOKIE, HeaderValue::from_static("theme=dark"));
        strip(&mut none);
        assert_eq!(none.get(header::COOKIE).unwrap(), "theme=dark");
    }
}
