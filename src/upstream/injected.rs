//! The headers scopegate sets on a request for the upstream (forwarding facts, the request id, the
//! profile's identity headers, the signed assertion, `Host`), kept beside the client's own headers
//! instead of inserted among them.
//!
//! Why apart: inserting them into the request's `HeaderMap` cost about 2 700 instructions per request
//! (hashing eight names, growing the table), more than everything the policy does. The bodiless
//! `wire` path writes them straight after the client's scrubbed headers; every other path (hyper's
//! client, upgrades, TLS, HTTP/2) calls [`Injected::apply_to`] first, so each upstream sees the same
//! fields either way.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Room for what a request usually carries (eight fields at most today), allocated on first use.
const USUAL: usize = 8;

/// scopegate's own headers for one upstream request, in the order they were set. A vector, not an
/// inline array: the context is moved between phases, and a 24-byte handle moves for free where
/// inline room for eight fields cost more in copies than the one allocation.
#[derive(Debug, Default, Clone)]
pub struct Injected {
    fields: Vec<(HeaderName, HeaderValue)>,
}

impl Injected {
    /// Adds `name`. Each name is set once per request: the fixed names are distinct, and config
    /// validation keeps the two configurable ones (user header, assertion header) apart from them and
    /// from each other, so no lookup is needed here.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        debug_assert!(
            self.get(&name).is_none(),
            "{name} set twice for one upstream request"
        );
        if self.fields.capacity() == 0 {
            self.fields.reserve_exact(USUAL);
        }
        self.fields.push((name, value));
    }

    /// The value set under `name`, if any.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().map(|(n, v)| (n, v))
    }

    /// Moves every field into `headers` (replacing any value already there), for the paths that send
    /// a whole `HeaderMap`.
    pub fn apply_to(self, headers: &mut HeaderMap) {
        headers.reserve(self.fields.len());
        for (name, value) in self.fields {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn fields_keep_the_order_they_were_set_in() {
        let mut inj = Injected::default();
        inj.set(HeaderName::from_static("x-b"), value("2"));
        inj.set(HeaderName::from_static("x-a"), value("1"));
        let got: Vec<_> = inj.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(got, [("x-b", value("2")), ("x-a", value("1"))]);
        assert_eq!(inj.get(&HeaderName::from_static("x-b")), Some(&value("2")));
        assert_eq!(inj.get(&HeaderName::from_static("x-c")), None);
    }

    #[test]
    #[should_panic(expected = "set twice")]
    #[cfg(debug_assertions)]
    fn a_name_set_twice_is_a_bug_caught_in_tests() {
        let mut inj = Injected::default();
        inj.set(http::header::HOST, value("a"));
        inj.set(http::header::HOST, value("b"));
    }

    #[test]
    fn more_fields_than_usual_are_all_kept_in_order() {
        let mut inj = Injected::default();
        let names: Vec<HeaderName> = (0..USUAL + 5)
            .map(|i| HeaderName::try_from(format!("x-field-{i}")).unwrap())
            .collect();
        for (i, n) in names.iter().enumerate() {
            inj.set(n.clone(), HeaderValue::from(i));
        }
        let got: Vec<_> = inj.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(got, names);
        let mut map = HeaderMap::new();
        map.insert(names[0].clone(), value("client"));
        inj.apply_to(&mut map);
        assert_eq!(map.len(), USUAL + 5);
        assert_eq!(map[&names[0]], HeaderValue::from(0));
    }

    #[test]
    fn applying_replaces_what_the_map_had() {
        let mut inj = Injected::default();
        inj.set(http::header::HOST, value("gw:1"));
        let mut map = HeaderMap::new();
        map.append(http::header::HOST, value("a"));
        map.append(http::header::HOST, value("b"));
        inj.apply_to(&mut map);
        let hosts: Vec<_> = map.get_all(http::header::HOST).iter().collect();
        assert_eq!(hosts, [&value("gw:1")]);
    }
}
