//! A scripted browser at the HTTP level: a cookie jar per `host:port` and redirects followed one hop at
//! a time, so a sign-in test can stop at any hop and change what the next one carries.

use std::collections::BTreeMap;

use super::client::{send, Got};

#[derive(Default, Clone)]
pub struct Jar {
    /// `host:port` → name → value.
    cookies: BTreeMap<String, BTreeMap<String, String>>,
}

pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?']).next().unwrap_or("").to_string()
}

fn origin(url: &str) -> String {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("http");
    format!("{scheme}://{}", authority(url))
}

/// `location` resolved against `base`.
pub fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else {
        format!("{}{location}", origin(base))
    }
}

impl Jar {
    /// The `Cookie` header for `url`.
    pub fn header(&self, url: &str) -> Option<String> {
        let c = self.cookies.get(&authority(url))?;
        (!c.is_empty()).then(|| {
            c.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub fn get(&self, url: &str, name: &str) -> Option<String> {
        self.cookies.get(&authority(url))?.get(name).cloned()
    }

    pub fn set(&mut self, url: &str, name: &str, value: &str) {
        self.cookies
            .entry(authority(url))
            .or_default()
            .insert(name.into(), value.into());
    }

    pub fn remove(&mut self, url: &str, name: &str) {
        if let Some(c) = self.cookies.get_mut(&authority(url)) {
            c.remove(name);
        }
    }

    /// Names of the cookies held for `url`'s origin.
    pub fn names(&self, url: &str) -> Vec<String> {
        self.cookies
            .get(&authority(url))
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores every `Set-Cookie` of a response from `url` (`Max-Age=0` deletes).
    pub fn store(&mut self, url: &str, got: &Got) {
        for v in got.headers.get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let mut parts = v.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let gone = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"))
                || v.contains("expires=Thu, 01 Jan 1970");
            if gone {
                self.remove(url, name);
            } else {
                self.set(url, name, value);
            }
        }
    }

    /// One request as a browser navigation would send it, cookies included and stored after.
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Got {
        let cookie = self.header(url);
        let mut headers: Vec<(&str, &str)> =
            vec![("accept", "text/html"), ("sec-fetch-mode", "navigate")];
        if let Some(c) = cookie.as_deref() {
            headers.push(("cookie", c));
        }
        if method == "POST" {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        headers.extend_from_slice(extra);
        let got = send(method, url, &headers, body.to_string()).await;
        self.store(url, &got);
        got
    }

    pub async fn navigate(&mut self, url: &str) -> Got {
        self.send("GET", url, &[], "").await
    }

    /// Follows redirects from `url` (at most `hops`) until one points at a URL starting with `stop`;
    /// returns that URL without requesting it.
    pub async fn follow_until(&mut self, url: &str, stop: &str, hops: usize) -> String {
        let mut url = url.to_string();
        for _ in 0..hops {
            if url.starts_with(stop) {
                return url;
            }
            let got = self.navigate(&url).await;
            let Some(loc) = got.header("location") else {
                panic!(
                    "{url} answered {} without a redirect: {}",
                    got.status,
                    got.text()
                );
            };
            url = resolve(&url, &loc);
        }
        panic!("no redirect to {stop} within {hops} hops (last {url})");
    }
}
