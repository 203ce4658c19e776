//! A route's path pattern, parsed once when the config is read: what `[[routes]] path` and the
//! profile's default table become, and what `policy::routes` matches requests against.
//!
//! A [`PathPattern`] can only be made by [`PathPattern::parse`], so an invalid pattern never reaches the
//! route table; it keeps the text it was written as for labels and `scopegate check`.

use std::fmt;

use super::path::canonical_path;

/// A compiled route path: exact, or segments with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// The pattern as written.
    source: String,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// `source` itself (and with one trailing slash).
    Exact,
    Segments {
        segs: Vec<Seg>,
        rest: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    /// One non-empty segment.
    Any,
}

impl PathPattern {
    /// `"/v1/models"` exact (and with one trailing slash); `"/sessions/*/history"` one segment; a trailing `"/*"` the rest of the path
    /// (possibly empty): `"/v1/models/*"` matches `/v1/models/` and `/v1/models/gpt/x`, `"/*"` everything.
    pub fn parse(p: &str) -> Result<PathPattern, String> {
        if !p.starts_with('/') {
            return Err(format!("route path {p:?} must start with `/`"));
        }
        if p.contains('?') || p.contains('#') {
            return Err(format!("route path {p:?} must not contain a query or fragment: policy never matches on them"));
        }
        if !p.contains('*') {
            canonical_path(p)
                .map_err(|r| format!("route path {p:?} is not canonical: {}", r.message()))?;
            return Ok(PathPattern {
                source: p.to_string(),
                shape: Shape::Exact,
            });
        }
        let parts: Vec<&str> = p[1..].split('/').collect();
        let mut segs = Vec::new();
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            let last = i == parts.len() - 1;
            match *part {
                "*" if last => rest = true,
                "*" => segs.push(Seg::Any),
                s if s.contains('*') => {
                    return Err(format!("route path {p:?}: `*` must be a whole segment"))
                }
                "" if !last => return Err(format!("route path {p:?} has an empty segment")),
                s => segs.push(Seg::Lit(s.to_string())),
            }
        }
        Ok(PathPattern {
            source: p.to_string(),
            shape: Shape::Segments { segs, rest },
        })
    }

    /// The path an exact pattern names (without a trailing slash), for indexing; `None` for a
    /// pattern with wildcards.
    pub fn exact(&self) -> Option<&str> {
        match self.shape {
            Shape::Exact => Some(&self.source),
            Shape::Segments { .. } => None,
        }
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, path: &str) -> bool {
        match &self.shape {
            // A trailing slash names the same resource on many servers, so `/kill/` gets `/kill`'s rule.
            Shape::Exact => path
                .strip_prefix(self.source.as_str())
                .is_some_and(|tail| tail.is_empty() || tail == "/"),
            Shape::Segments { segs, rest } => {
                let path = match path.strip_suffix('/') {
                    Some(trimmed) if !*rest && !trimmed.is_empty() => trimmed,
                    _ => path,
                };
                let mut it = path[1..].split('/');
                for seg in segs {
                    match (seg, it.next()) {
                        (Seg::Lit(l), Some(s)) if l == s => {}
                        (Seg::Any, Some(s)) if !s.is_empty() => {}
                        _ => return false,
                    }
                }
                if *rest {
                    // `/prefix/*` needs the slash after the prefix: `/prefix` itself is another path.
                    it.next().is_some()
                } else {
                    it.next().is_none()
                }
            }
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq<str> for PathPattern {
    fn eq(&self, other: &str) -> bool {
        self.source == other
    }
}

impl PartialEq<&str> for PathPattern {
    fn eq(&self, other: &&str) -> bool {
        self.source == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let exact = PathPattern::parse("/v1/models").unwrap();
        assert!(exact.matches("/v1/models"));
        assert!(
            exact.matches("/v1/models/"),
            "a trailing slash keeps the rule"
        );
        assert!(!exact.matches("/v1/models//"));
        assert!(!exact.matches("/v1/modelsx"));
        assert!(!exact.matches("/V1/MODELS"));
        let one = PathPattern::parse("/sessions/*/history").unwrap();
        assert!(one.matches("/sessions/abc/history"));
        assert!(!one.matches("/sessions//history"));
        assert!(!one.matches("/sessions/a/b/history"));
        assert!(!one.matches("/sessions/abc/history/x"));
        assert!(one.matches("/sessions/abc/history/"));
        let rest = PathPattern::parse("/v1/models/*").unwrap();
        assert!(rest.matches("/v1/models/gpt"));
        assert!(rest.matches("/v1/models/"));
        assert!(rest.matches("/v1/models/a/b"));
        assert!(!rest.matches("/v1/models"));
        let all = PathPattern::parse("/*").unwrap();
        assert!(all.matches("/"));
        assert!(all.matches("/anything/at/all"));
        assert!(PathPattern::parse("/a*").is_err());
        assert!(PathPattern::parse("a").is_err());
        assert!(PathPattern::parse("/a?b").is_err());
        assert!(PathPattern::parse("/a//b").is_err());
    }

    #[test]
    fn keeps_the_text_it_was_written_as() {
        for p in ["/v1/models", "/sessions/*/history", "/*"] {
            let pattern = PathPattern::parse(p).unwrap();
            assert_eq!(pattern.as_str(), p);
            assert_eq!(pattern.to_string(), p);
            assert!(pattern == p);
        }
    }
}
