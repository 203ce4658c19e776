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

    pub fn session_name(self) -> String {
        format!("{}{SESSION}", self.prefix())
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

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2 may split them).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Found<'a> {
    let mut found = Found::None;
    for pair in pairs(headers) {
        if pair.0 == name {
            found = match found {
                Found::None => Found::One(pair.1),
                _ => return Found::Several,
            };
        }
    }
    found
}

fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
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
        let v = https.set(&https.session_name(), "abc", 60).unwrap();
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
