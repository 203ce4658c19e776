//! The identity sources besides JWT: `[[api_tokens]]` (by SHA-256), `[tailscale]` and
//! `[trusted_proxy]` (header identities, only from the peers they name).

use std::time::Duration;

use super::scopes::KnownScopes;
use super::*;

pub(super) fn api_tokens(
    ck: &mut Checker,
    raw: Vec<Spanned<RawApiToken>>,
    known: &KnownScopes,
) -> Vec<ApiTokenConfig> {
    let mut api_tokens = Vec::new();
    for t in raw {
        let span = t.span();
        let t = t.into_inner();
        let hex = t.sha256.get_ref().trim().to_ascii_lowercase();
        let mut digest = [0u8; 32];
        if hex.len() != 64 || !decode_hex(&hex, &mut digest) {
            ck.err(
                t.sha256.span(),
                "sha256 must be 64 hex characters: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
            );
            continue;
        }
        if t.subject.get_ref().trim().is_empty() {
            ck.err(t.subject.span(), "subject must not be empty");
        }
        if api_tokens
            .iter()
            .any(|a: &ApiTokenConfig| a.sha256 == digest)
        {
            ck.err(span, "two [[api_tokens]] entries have the same sha256");
        }
        let scopes = known.check(ck, &t.scopes);
        api_tokens.push(ApiTokenConfig {
            subject: t.subject.into_inner(),
            sha256: digest,
            scopes,
            groups: t.groups,
        });
    }
    api_tokens
}

pub(super) fn tailscale_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawTailscale>>,
) -> Option<TailscaleConfig> {
    let tailscale = raw.map(|t| {
        let t = t.into_inner();
        TailscaleConfig {
            trusted_peers: t.trusted_peers.unwrap_or_else(|| {
                vec![
                    "127.0.0.1/32".parse().expect("static"),
                    "::1/128".parse().expect("static"),
                    PeerMatch::Unix,
                ]
            }),
            whois_socket: t.whois_socket.map(|p| ck.path(&p)),
            whois_timeout: t
                .whois_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(2)),
            app_capability: t.app_capability,
        }
    });
    if let Some(ts) = &tailscale {
        check_not_trust_all(ck, &ts.trusted_peers, 0..0, "[tailscale] trusted_peers");
    }
    tailscale
}

pub(super) fn trusted_proxy_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawTrustedProxy>>,
) -> Option<TrustedProxyConfig> {
    raw.map(|t| {
        let span = t.span();
        let t = t.into_inner();
        if t.peers.get_ref().is_empty() {
            ck.err(
                t.peers.span(),
                "[trusted_proxy] peers must name at least one address",
            );
        }
        check_not_trust_all(ck, t.peers.get_ref(), span.clone(), "[trusted_proxy] peers");
        let assertion = match (t.assertion_header, t.assertion) {
            (None, None) => None,
            (Some(h), Some(raw)) => {
                super::jwt::jwt_config(ck, raw).map(|jwt| ProxyAssertionConfig { header: h.0, jwt })
            }
            (Some(_), None) => {
                ck.err(span, "[trusted_proxy] assertion_header needs a [trusted_proxy.assertion] table (issuer, audience, jwks_url or keys) to verify it with");
                None
            }
            (None, Some(raw)) => {
                ck.err(raw.span(), "[trusted_proxy.assertion] needs [trusted_proxy] assertion_header: the header the proxy puts its signed assertion in");
                None
            }
        };
        TrustedProxyConfig {
            peers: t.peers.into_inner(),
            user_header: t.user_header.0,
            groups_header: t.groups_header.map(|h| h.0),
            assertion,
        }
    })
}

fn check_not_trust_all(ck: &mut Checker, peers: &[PeerMatch], span: Range<usize>, what: &str) {
    for p in peers {
        if let PeerMatch::Net(net) = p {
            if net.prefix_len() == 0 {
                ck.err(
                    span.clone(),
                    format!("{what} contains {net}, which trusts every address; name your proxy's addresses"),
                );
            }
        }
    }
}

fn decode_hex(hex: &str, out: &mut [u8; 32]) -> bool {
    let bytes = hex.as_bytes();
    for (i, chunk) in bytes.chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16);
        let lo = chunk.get(1).and_then(|c| (*c as char).to_digit(16));
        match (hi, lo) {
            (Some(h), Some(l)) if i < 32 => out[i] = (h * 16 + l) as u8,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::parse_test_toml as parse;

    #[test]
    fn trust_all_is_refused() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[trusted_proxy]\npeers=[\"0.0.0.0/0\"]\nuser_header=\"x-u\"\n").unwrap_err();
        assert!(e.to_string().contains("trusts every address"), "{e}");
    }

    #[test]
    fn a_proxy_assertion_needs_its_header_and_its_keys() {
        let base = "[upstream]\nurl = \"http://x:1\"\n[trusted_proxy]\npeers=[\"10.0.0.0/8\"]\nuser_header=\"x-u\"\n";
        let e = parse(&format!(
            "{base}assertion_header = \"cf-access-jwt-assertion\"\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("needs a [trusted_proxy.assertion] table"),
            "{e}"
        );
        let e = parse(&format!("{base}[trusted_proxy.assertion]\nissuer = \"https://t\"\naudience = \"a\"\njwks_url = \"https://t/certs\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs [trusted_proxy] assertion_header"),
            "{e}"
        );
        let ok = parse(&format!("{base}assertion_header = \"cf-access-jwt-assertion\"\n[trusted_proxy.assertion]\nissuer = \"https://t\"\naudience = \"a\"\njwks_url = \"https://t/certs\"\nsubject_claim = \"email\"\n")).unwrap();
        let a = ok.trusted_proxy.unwrap().assertion.unwrap();
        assert_eq!(a.header, "cf-access-jwt-assertion");
        assert_eq!(a.jwt.subject_claim, "email");
    }

    #[test]
    fn api_token_digest_must_be_hex() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[[api_tokens]]\nsubject=\"ci\"\nsha256=\"nothex\"\nscopes=[\"operator.read\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("test.toml:5: sha256 must be 64 hex"),
            "{e}"
        );
    }
}
