//! Which key a token is checked against, and whether its signature holds. A token with a `kid` is
//! checked only against the key with that `kid` (static or published; an unknown `kid` refetches the
//! JWKS once, rate-limited, for an IdP that rotated); a token without one, against every key pinned to
//! its algorithm, at most `max_candidates` of them so a forged token bounds the work it causes. A key
//! whose pinned algorithm differs from the token's is an `alg_mismatch`, never a fallback. It is apart
//! from the verifier's cache and claim rules because it is the only step that touches key material and
//! the only one that may wait on the network.

use super::{Compact, JwtError, JwtVerifier};
use crate::identity::jwks::KeyEntry;

impl JwtVerifier {
    /// Finds the token's key (refetching the JWKS once on an unknown `kid`) and checks the signature.
    pub(super) async fn verify_signature(&self, c: &Compact<'_>) -> Result<KeyEntry, JwtError> {
        let candidates = self.candidates(c)?;
        let candidates = match (candidates.is_empty(), &c.kid, &self.jwks) {
            (true, Some(_), Some(jwks)) => {
                // RFC 8725 and OIDC Core §10.1.1: an unknown kid may mean the IdP rotated; refetch
                // once, rate-limited inside the cache, then decide.
                jwks.refetch_for_unknown_kid().await;
                self.candidates(c)?
            }
            _ => candidates,
        };
        if candidates.is_empty() {
            if c.kid.is_some() {
                if let Some(j) = &self.jwks {
                    if !j.has_keys() {
                        return Err(JwtError::KeysUnavailable);
                    }
                }
                return Err(JwtError::KidUnknown);
            }
            if let Some(j) = &self.jwks {
                if !j.has_keys() && self.static_keys.is_empty() {
                    return Err(JwtError::KeysUnavailable);
                }
            }
            return Err(JwtError::NoKeyForAlg(c.alg));
        }
        for key in candidates.iter().take(self.max_candidates) {
            if key.alg != c.alg {
                return Err(JwtError::AlgMismatch {
                    token: c.alg,
                    key: key.alg,
                });
            }
            crate::metrics::get().signature_verifications.inc();
            match jsonwebtoken::crypto::verify(
                c.signature_b64,
                c.signing_input.as_bytes(),
                &key.key,
                key.alg.to_jsonwebtoken(),
            ) {
                Ok(true) => return Ok(key.clone()),
                Ok(false) => continue,
                Err(_) => {
                    return Err(JwtError::Malformed(
                        "signature is not valid base64url or has the wrong size",
                    ))
                }
            }
        }
        Err(JwtError::SignatureInvalid)
    }

    /// Keys the token may be checked against: by `kid` when it has one (any algorithm, so a mismatch is
    /// reported as such), otherwise every key pinned to the token's algorithm.
    fn candidates(&self, c: &Compact<'_>) -> Result<Vec<KeyEntry>, JwtError> {
        let published = self.jwks.as_ref().map(|j| j.current());
        let all = self
            .static_keys
            .iter()
            .chain(published.iter().flat_map(|k| k.iter()));
        Ok(match &c.kid {
            Some(kid) => all
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .cloned()
                .collect(),
            None => all.filter(|k| k.alg == c.alg).cloned().collect(),
        })
    }
}
