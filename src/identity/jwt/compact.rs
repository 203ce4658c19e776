//! The compact form, pre-parsed before any key is touched (RFC 8725): a size bound, three unpadded
//! base64url segments (no JWE), a header that is a JSON object without duplicate names, `alg: none`
//! refused in every spelling, the algorithm only ever one scopegate supports, `crit` refused, and
//! scopegate's own assertion `typ` refused. Of the key-locating headers only `kid` is read — as a short
//! string that selects among keys scopegate already holds; `jku`, `x5u` and an embedded `jwk` are never
//! looked at. It stands alone because it is the first line of defence against hostile input: a pure
//! function of the token's text (no keys, no I/O, no clock), and a fuzz target
//! (`properties::jwt_preparse`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::JwtError;
use crate::config::JwtAlgorithm;

/// The `typ` of scopegate's own assertion; never accepted as a user token.
pub(crate) const ASSERTION_TYP: &str = "scopegate-assertion+jwt";

/// The protected header fields scopegate looks at. Duplicate names are a parse error.
#[derive(Debug, Deserialize)]
pub(crate) struct JoseHeader {
    pub alg: Value,
    #[serde(default)]
    pub kid: Option<Value>,
    #[serde(default)]
    pub typ: Option<Value>,
    #[serde(default)]
    pub crit: Option<Value>,
}

/// A pre-parsed compact JWS.
#[derive(Debug)]
pub struct Compact<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub payload_b64: &'a str,
    pub signature_b64: &'a str,
    pub alg: JwtAlgorithm,
    pub kid: Option<String>,
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Quick shape test used to tell a JWT from an opaque API token.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && is_b64url(h) && is_b64url(p) && is_b64url(s)
        }
        _ => false,
    }
}

/// Splits and checks a compact JWS without verifying it: segment shape, header JSON, `alg`, `typ`,
/// `crit`, `kid`. This is the first line of defence and a fuzz target.
pub fn parse_compact(token: &str, max_len: usize) -> Result<Compact<'_>, JwtError> {
    if token.len() > max_len {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated segments"));
    };
    if parts.next().is_some() {
        return Err(JwtError::Malformed(
            "expected three dot-separated segments (JWE is not accepted)",
        ));
    }
    if h.is_empty() || p.is_empty() {
        return Err(JwtError::Malformed("empty header or payload segment"));
    }
    if !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(JwtError::Malformed("segments must be unpadded base64url"));
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Malformed("header is not valid base64url"))?;
    let header: JoseHeader = serde_json::from_slice(&header_json).map_err(|_| {
        JwtError::Malformed("header is not a JSON object with an alg (or has duplicate names)")
    })?;
    let alg = match &header.alg {
        Value::String(a) if a.eq_ignore_ascii_case("none") => return Err(JwtError::AlgNone),
        Value::String(a) => JwtAlgorithm::from_name(a).ok_or(JwtError::AlgUnsupported)?,
        _ => return Err(JwtError::Malformed("alg is not a string")),
    };
    if s.is_empty() {
        return Err(JwtError::Malformed("signature segment is empty"));
    }
    if header.crit.is_some() {
        return Err(JwtError::CritUnsupported);
    }
    if let Some(typ) = &header.typ {
        let Value::String(t) = typ else {
            return Err(JwtError::Malformed("typ is not a string"));
        };
        let t = t.to_ascii_lowercase();
        if t == ASSERTION_TYP || t == format!("application/{ASSERTION_TYP}") {
            return Err(JwtError::TypRejected);
        }
    }
    let kid = match header.kid {
        None => None,
        Some(Value::String(k))
            if !k.is_empty() && k.len() <= 256 && !k.chars().any(char::is_control) =>
        {
            Some(k)
        }
        Some(_) => return Err(JwtError::KidInvalid),
    };
    Ok(Compact {
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature_b64: s,
        alg,
        kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn pre_parse_refuses_none_in_every_spelling() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = format!("{}.{}.", b64(&format!("{{\"alg\":\"{alg}\"}}")), b64("{}"));
            assert_eq!(
                parse_compact(&t, 8192).unwrap_err(),
                JwtError::AlgNone,
                "{alg}"
            );
            let t = format!(
                "{}.{}.c2ln",
                b64(&format!("{{\"alg\":\"{alg}\"}}")),
                b64("{}")
            );
            assert_eq!(
                parse_compact(&t, 8192).unwrap_err(),
                JwtError::AlgNone,
                "{alg}"
            );
        }
    }

    #[test]
    fn pre_parse_shape_errors() {
        let h = b64(r#"{"alg":"HS256"}"#);
        let p = b64("{}");
        assert!(matches!(
            parse_compact("abc", 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{h}.{p}"), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{h}.{p}.sig.x.y"), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{h}.{p}=.sig"), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{}.{p}.sig", b64("not json")), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(
                &format!("{}.{p}.sig", b64(r#"{"alg":"HS256","alg":"none"}"#)),
                100
            ),
            Err(JwtError::Malformed(_))
        ));
        assert_eq!(
            parse_compact(&format!("{}.{p}.sig", b64(r#"{"alg":"XS999"}"#)), 100).unwrap_err(),
            JwtError::AlgUnsupported
        );
        assert_eq!(
            parse_compact(
                &format!("{}.{p}.sig", b64(r#"{"alg":"HS256","crit":["exp"]}"#)),
                200
            )
            .unwrap_err(),
            JwtError::CritUnsupported
        );
        assert_eq!(
            parse_compact(
                &format!(
                    "{}.{p}.sig",
                    b64(r#"{"alg":"EdDSA","typ":"scopegate-assertion+jwt"}"#)
                ),
                200
            )
            .unwrap_err(),
            JwtError::TypRejected
        );
        assert_eq!(
            parse_compact(
                &format!("{}.{p}.sig", b64(r#"{"alg":"HS256","kid":{"$ne":1}}"#)),
                200
            )
            .unwrap_err(),
            JwtError::KidInvalid
        );
        assert!(matches!(
            parse_compact(&"a".repeat(200), 100),
            Err(JwtError::TooLarge { .. })
        ));
        let token = format!("{h}.{p}.sig");
        let ok = parse_compact(&token, 100).unwrap();
        assert_eq!(ok.alg, JwtAlgorithm::HS256);
        assert_eq!(ok.signing_input, format!("{h}.{p}"));
    }
}
