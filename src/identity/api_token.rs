//! Opaque API tokens for scripts and CLIs, stored only as SHA-256 digests.
//!
//! The presented token is hashed and its SHA-256 digest looked up in a table of the configured
//! digests. The lookup's timing can depend only on the digest, never on the token: learning that a
//! digest shares bits with a configured one tells an attacker nothing without a SHA-256 preimage, so
//! no comparison of secrets takes place. Each token's identity is built once per config snapshot; a
//! request pays one SHA-256 and one table lookup, with 3 tokens or 10 000 (a constant-time scan of
//! every digest cost 3.9 M instructions per request at 10 000; `SG_SCALE=1 bash bench/callgrind.sh`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ApiTokenConfig;
use crate::error::Reason;
use crate::identity::{AuthMethod, Identity};

pub struct ApiTokens {
    by_digest: HashMap<[u8; 32], Arc<Identity>, foldhash::fast::RandomState>,
    /// Each identity's digest, keyed by the identity's address (`Arc::as_ptr`). The identities live
    /// in `by_digest` as long as this table does, so an address names exactly one of them.
    digest_by_identity: HashMap<usize, [u8; 32], foldhash::fast::RandomState>,
}

impl ApiTokens {
    pub fn new(tokens: &[ApiTokenConfig]) -> ApiTokens {
        let mut by_digest = HashMap::default();
        for t in tokens {
            by_digest.entry(t.sha256).or_insert_with(|| {
                let mut id = Identity::new(
                    &t.subject,
                    AuthMethod::ApiToken,
                    t.groups.clone(),
                    t.scopes.iter().map(String::as_str),
                );
                id.notes.push(Reason::new(
                    "api_token_matched",
                    format!("API token for {} matched its configured SHA-256", t.subject),
                ));
                Arc::new(id)
            });
        }
        let digest_by_identity = by_digest
            .iter()
            .map(|(digest, id)| (identity_key(id), *digest))
            .collect();
        ApiTokens {
            by_digest,
            digest_by_identity,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The digest of the token whose identity `id` is (the same `Arc`, not an equal identity): what a
    /// live session keeps to tell, after a reload, whether its token is still configured. One lookup.
    pub fn digest_of(&self, id: &Identity) -> Option<[u8; 32]> {
        self.digest_by_identity.get(&identity_key(id)).copied()
    }

    /// The identity of the token with this digest.
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<Arc<Identity>> {
        self.by_digest.get(digest).cloned()
    }

    pub fn lookup(&self, token: &str) -> Option<Arc<Identity>> {
        if self.by_digest.is_empty() {
            return None;
        }
        self.by_digest.get(&sha256(token.as_bytes())).cloned()
    }
}

/// The key of `digest_by_identity`: the identity's address (for an `Arc`'s, `Arc::as_ptr`).
fn identity_key(id: &Identity) -> usize {
    std::ptr::from_ref(id) as usize
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    sha256(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn matches_by_digest_only() {
        let digest = sha256_hex(b"sg_ci_token_123");
        let cfg = Config::parse(
            &format!(
                "[upstream]\nurl=\"http://x:1\"\n[[api_tokens]]\nsubject=\"ci-bot\"\nsha256=\"{digest}\"\nscopes=[\"operator.read\"]\n[[api_tokens]]\nsubject=\"other\"\nsha256=\"{}\"\n",
                sha256_hex(b"other")
            ),
            None,
        )
        .unwrap();
        let tokens = ApiTokens::new(&cfg.api_tokens);
        let id = tokens.lookup("sg_ci_token_123").unwrap();
        assert_eq!(id.subject, "ci-bot");
        assert_eq!(id.scope_claim, ["operator.read"]);
        assert_eq!(id.method, AuthMethod::ApiToken);
        assert_eq!(tokens.lookup("other").unwrap().subject, "other");
        assert!(tokens.lookup("sg_ci_token_124").is_none());
        assert!(
            tokens.lookup(&digest).is_none(),
            "the digest itself is not the token"
        );
    }

    #[test]
    fn ten_thousand_tokens_each_find_their_own_identity() {
        let mut toml = String::from("[upstream]\nurl=\"http://x:1\"\n");
        for i in 0..10_000 {
            toml.push_str(&format!(
                "[[api_tokens]]\nsubject=\"bot-{i}\"\nsha256=\"{}\"\n",
                sha256_hex(format!("token-{i}").as_bytes())
            ));
        }
        let cfg = Config::parse(&toml, None).unwrap();
        let tokens = ApiTokens::new(&cfg.api_tokens);
        for i in [0, 1, 4_999, 9_999] {
            let id = tokens.lookup(&format!("token-{i}")).unwrap();
            assert_eq!(id.subject, format!("bot-{i}"));
        }
        assert!(tokens.lookup("token-10000").is_none());
    }

    #[test]
    fn digest_of_names_the_digest_of_that_very_identity() {
        let mut toml = String::from("[upstream]\nurl=\"http://x:1\"\n");
        for i in 0..100 {
            toml.push_str(&format!(
                "[[api_tokens]]\nsubject=\"bot-{i}\"\nsha256=\"{}\"\n",
                sha256_hex(format!("token-{i}").as_bytes())
            ));
        }
        // A second token for the same subject and scopes: an identity equal to bot-7's, not the same.
        toml.push_str(&format!(
            "[[api_tokens]]\nsubject=\"bot-7\"\nsha256=\"{}\"\n",
            sha256_hex(b"token-7-spare")
        ));
        let cfg = Config::parse(&toml, None).unwrap();
        let tokens = ApiTokens::new(&cfg.api_tokens);
        for i in 0..100 {
            let token = format!("token-{i}");
            let id = tokens.lookup(&token).unwrap();
            assert_eq!(
                tokens.digest_of(&id),
                Some(sha256(token.as_bytes())),
                "{token}"
            );
            assert_eq!(
                tokens
                    .by_digest(&sha256(token.as_bytes()))
                    .map(|i| i.subject.clone()),
                Some(format!("bot-{i}"))
            );
        }
        let spare = tokens.lookup("token-7-spare").unwrap();
        assert_eq!(spare.subject, "bot-7");
        assert_eq!(tokens.digest_of(&spare), Some(sha256(b"token-7-spare")));

        // An identity this table did not build has no digest here, even with a token's subject;
        // nor has a token's identity in another table built from the same config.
        let lookalike = Identity::new("bot-3", AuthMethod::ApiToken, Vec::new(), []);
        assert_eq!(tokens.digest_of(&lookalike), None);
        let other = ApiTokens::new(&cfg.api_tokens);
        assert_eq!(tokens.digest_of(&other.lookup("token-3").unwrap()), None);
    }
}
