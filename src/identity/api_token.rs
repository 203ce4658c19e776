//! Opaque API tokens for scripts and CLIs, stored only as SHA-256 digests.
//!
//! The presented token is hashed and compared with every configured digest in constant time (no early
//! exit), so neither the match nor its position leaks through timing. Each token's identity is built
//! once per config snapshot; a request pays one SHA-256 and a few 32-byte comparisons.

use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::ApiTokenConfig;
use crate::error::Reason;
use crate::identity::{AuthMethod, Identity};

pub struct ApiTokens {
    digests: Vec<[u8; 32]>,
    identities: Vec<Arc<Identity>>,
}

impl ApiTokens {
    pub fn new(tokens: &[ApiTokenConfig]) -> ApiTokens {
        let identities = tokens
            .iter()
            .map(|t| {
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
            })
            .collect();
        ApiTokens {
            digests: tokens.iter().map(|t| t.sha256).collect(),
            identities,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn lookup(&self, token: &str) -> Option<Arc<Identity>> {
        if self.digests.is_empty() {
            return None;
        }
        let digest = sha256(token.as_bytes());
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u32;
        for (i, d) in self.digests.iter().enumerate() {
            let eq = d.ct_eq(&digest);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        if bool::from(found) {
            self.identities.get(index as usize).cloned()
        } else {
            None
        }
    }
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
}
