//! Verifying the upstream's answer to a WebSocket upgrade before the two sockets are joined.
//!
//! A `101` is only a status code: an upstream (or whatever answers on its port) that sends one without
//! completing the RFC 6455 §4.2.2 handshake has not agreed to speak WebSocket, and joining the sockets
//! anyway would turn the connection into a raw tunnel — every later client byte would reach the upstream
//! with no authentication and no hygiene. So a `101` becomes a tunnel only when it carries
//! `Upgrade: websocket`, `Connection: upgrade`, the `Sec-WebSocket-Accept` derived from the key scopegate
//! sent, and no subprotocol or extension the client did not offer (RFC 6455 §4.1, the client's duty,
//! which scopegate takes on because it is the upstream's client). Anything else is a 502, and the
//! upstream connection is dropped: never pooled, never relayed. Both WebSocket paths (the relayed
//! upgrade and the in-band OpenClaw handshake) use [`Offer::verify`].

use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::Refusal;
use crate::identity::hygiene::lists_token;

/// What scopegate's upgrade request offered the upstream: the accept value its key commands, and the
/// subprotocols and extensions the upstream may choose from.
pub(crate) struct Offer {
    /// `None` when the request carried no key (never for a request that passed the client-side check).
    accept: Option<String>,
    protocols: Vec<HeaderValue>,
    extensions: Vec<HeaderValue>,
}

impl Offer {
    /// Records the offer of an upgrade request, from the headers as they are sent upstream.
    pub(crate) fn of(request: &HeaderMap) -> Offer {
        let all = |name| request.get_all(name).iter().cloned().collect::<Vec<_>>();
        Offer {
            accept: request
                .get(header::SEC_WEBSOCKET_KEY)
                .map(|k| derive_accept_key(k.as_bytes())),
            protocols: all(header::SEC_WEBSOCKET_PROTOCOL),
            extensions: all(header::SEC_WEBSOCKET_EXTENSIONS),
        }
    }

    /// Accepts the upstream's response as the completion of this offer's handshake, or says what is
    /// wrong with it. Only an `Ok` may become a tunnel.
    pub(crate) fn verify(&self, status: StatusCode, response: &HeaderMap) -> Result<(), Refusal> {
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(Refusal::bad_gateway(
                "upstream_refused_upgrade",
                format!("the upstream refused the WebSocket upgrade with status {status}"),
            ));
        }
        self.verify_101(response).inspect_err(|_| {
            crate::metrics::upstream_error("handshake");
        })
    }

    fn verify_101(&self, response: &HeaderMap) -> Result<(), Refusal> {
        if !lists_token(response, header::UPGRADE, "websocket") {
            return Err(Refusal::bad_gateway(
                "upstream_not_websocket",
                "the upstream answered 101 without \"Upgrade: websocket\"",
            ));
        }
        if !lists_token(response, header::CONNECTION, "upgrade") {
            return Err(Refusal::bad_gateway(
                "upstream_not_websocket",
                "the upstream answered 101 without \"Connection: upgrade\"",
            ));
        }
        let accept_wrong = |why: &str| {
            Refusal::bad_gateway(
                "upstream_websocket_accept",
                format!("the upstream's 101 {why}"),
            )
        };
        let mut accepts = response.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next(), &self.accept) {
            (None, _, _) => return Err(accept_wrong("has no Sec-WebSocket-Accept")),
            (Some(_), Some(_), _) => {
                return Err(accept_wrong("has more than one Sec-WebSocket-Accept"))
            }
            (Some(got), None, Some(want)) if got.as_bytes() == want.as_bytes() => {}
            (Some(_), None, _) => {
                return Err(accept_wrong(
                    "has a Sec-WebSocket-Accept that does not match the Sec-WebSocket-Key scopegate sent",
                ))
            }
        }
        self.check_protocol(response)?;
        self.check_extensions(response)
    }

    /// At most one subprotocol, and one the client offered (names are compared exactly, as the
    /// client will).
    fn check_protocol(&self, response: &HeaderMap) -> Result<(), Refusal> {
        let wrong = |why: String| Refusal::bad_gateway("upstream_websocket_protocol", why);
        let mut chosen = response.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        let Some(value) = chosen.next() else {
            return Ok(());
        };
        let name = value.to_str().unwrap_or("").trim();
        if chosen.next().is_some() || name.contains(',') {
            return Err(wrong(
                "the upstream chose more than one WebSocket subprotocol".into(),
            ));
        }
        let offered = self
            .protocols
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| !name.is_empty() && p.trim() == name);
        if offered {
            return Ok(());
        }
        Err(wrong(format!(
            "the upstream chose the WebSocket subprotocol {:?}, which the client did not offer",
            shown(value)
        )))
    }

    /// Every extension the upstream enabled must be one the client offered (compared by name; the
    /// parameters are the extension's own business).
    fn check_extensions(&self, response: &HeaderMap) -> Result<(), Refusal> {
        let wrong = |why: String| Refusal::bad_gateway("upstream_websocket_extension", why);
        let offered: Vec<&str> = self
            .extensions
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(extension_names)
            .filter_map(Result::ok)
            .collect();
        for value in response.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
            let Ok(text) = value.to_str() else {
                return Err(wrong(
                    "the upstream's Sec-WebSocket-Extensions is not ASCII".into(),
                ));
            };
            for name in extension_names(text) {
                let name = name.map_err(|()| {
                    wrong(format!(
                        "the upstream's Sec-WebSocket-Extensions {:?} is malformed",
                        shown(value)
                    ))
                })?;
                if !offered.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                    return Err(wrong(format!(
                        "the upstream enabled the WebSocket extension {name:?}, which the client did not offer"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The extension names of one `Sec-WebSocket-Extensions` value (RFC 6455 §9.1:
/// `name *(";" param)` elements separated by commas; a comma inside a quoted parameter value does not
/// separate). An element whose name is not a token is an `Err`.
fn extension_names(value: &str) -> impl Iterator<Item = Result<&str, ()>> {
    let mut elements = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                elements.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    elements.push(&value[start..]);
    elements
        .into_iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.split(';').next().unwrap_or("").trim();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if token {
                Ok(name)
            } else {
                Err(())
            }
        })
}

/// An upstream-chosen value for a message: lossy, and short.
fn shown(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes())
        .chars()
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's sample key and its accept value.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_a_complete_handshake_for_this_offer_is_accepted() {
        let good: &[(&str, &str)] = &[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", ACCEPT),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = good.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let without = |name: &str| {
            good.iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>()
        };
        let offer_plain: &[(&str, &str)] = &[("sec-websocket-key", KEY)];
        let offer_rich: &[(&str, &str)] = &[
            ("sec-websocket-key", KEY),
            ("sec-websocket-protocol", "chat, superchat"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ];
        // (case, offer, status, response headers, expected code or None)
        type Offered<'a> = &'a [(&'a str, &'a str)];
        type Answered<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(&str, Offered, u16, Answered, Option<&str>)> = vec![
            ("complete", offer_plain, 101, good.to_vec(), None),
            (
                "tokens in any case and list",
                offer_plain,
                101,
                vec![
                    ("upgrade", "WebSocket"),
                    ("connection", "keep-alive, UPGRADE"),
                    ("sec-websocket-accept", ACCEPT),
                ],
                None,
            ),
            (
                "not a 101",
                offer_plain,
                200,
                good.to_vec(),
                Some("upstream_refused_upgrade"),
            ),
            (
                "bare 101",
                offer_plain,
                101,
                vec![],
                Some("upstream_not_websocket"),
            ),
            (
                "no Upgrade",
                offer_plain,
                101,
                without("upgrade"),
                Some("upstream_not_websocket"),
            ),
            (
                "Upgrade names another protocol",
                offer_plain,
                101,
                vec![
                    ("upgrade", "h2c"),
                    ("connection", "upgrade"),
                    ("sec-websocket-accept", ACCEPT),
                ],
                Some("upstream_not_websocket"),
            ),
            (
                "no Connection",
                offer_plain,
                101,
                without("connection"),
                Some("upstream_not_websocket"),
            ),
            (
                "no accept",
                offer_plain,
                101,
                without("sec-websocket-accept"),
                Some("upstream_websocket_accept"),
            ),
            (
                "accept of another key",
                offer_plain,
                101,
                vec![
                    ("upgrade", "websocket"),
                    ("connection", "upgrade"),
                    ("sec-websocket-accept", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
                ],
                Some("upstream_websocket_accept"),
            ),
            (
                "accept twice",
                offer_plain,
                101,
                with(&[("sec-websocket-accept", ACCEPT)]),
                Some("upstream_websocket_accept"),
            ),
            (
                "no key was sent",
                &[],
                101,
                good.to_vec(),
                Some("upstream_websocket_accept"),
            ),
            (
                "subprotocol none was offered",
                offer_plain,
                101,
                with(&[("sec-websocket-protocol", "chat")]),
                Some("upstream_websocket_protocol"),
            ),
            (
                "offered subprotocol",
                offer_rich,
                101,
                with(&[("sec-websocket-protocol", "superchat")]),
                None,
            ),
            (
                "subprotocol in another case",
                offer_rich,
                101,
                with(&[("sec-websocket-protocol", "Chat")]),
                Some("upstream_websocket_protocol"),
            ),
            (
                "two subprotocols",
                offer_rich,
                101,
                with(&[("sec-websocket-protocol", "chat, superchat")]),
                Some("upstream_websocket_protocol"),
            ),
            (
                "extension none was offered",
                offer_plain,
                101,
                with(&[("sec-websocket-extensions", "permessage-deflate")]),
                Some("upstream_websocket_extension"),
            ),
            (
                "offered extension with its own parameters",
                offer_rich,
                101,
                with(&[(
                    "sec-websocket-extensions",
                    "permessage-deflate; server_no_context_takeover; x=\"a,b\"",
                )]),
                None,
            ),
            (
                "offered and unoffered extension",
                offer_rich,
                101,
                with(&[(
                    "sec-websocket-extensions",
                    "permessage-deflate, x-webkit-deflate-frame",
                )]),
                Some("upstream_websocket_extension"),
            ),
            (
                "malformed extension list",
                offer_rich,
                101,
                with(&[("sec-websocket-extensions", "; permessage-deflate")]),
                Some("upstream_websocket_extension"),
            ),
        ];
        for (name, offer, status, response, expected) in cases {
            let offer = Offer::of(&headers(offer));
            let got = offer.verify(StatusCode::from_u16(status).unwrap(), &headers(&response));
            assert_eq!(
                got.as_ref().err().map(|r| r.code),
                expected,
                "{name}: {got:?}"
            );
            if let Err(r) = got {
                assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{name}");
            }
        }
    }

    #[test]
    fn extension_lists_split_outside_quotes_only() {
        let names: Vec<_> = extension_names("a; p=\"x,y\", b ,, c;q").collect::<Vec<_>>();
        assert_eq!(names, vec![Ok("a"), Ok("b"), Ok("c")]);
        assert_eq!(extension_names("=x").collect::<Vec<_>>(), vec![Err(())]);
    }
}
