//! The token endpoint (RFC 6749 §4.1.3, §6): redeeming a code with its PKCE verifier, and a refresh
//! token for fresh tokens. A confidential client authenticates with HTTP Basic (the default of
//! OpenID Connect Core §9, `client_secret_basic`) or in the body when the provider only offers
//! `client_secret_post`; a public client sends only its `client_id`. An error answer from the provider
//! (`invalid_grant`: another client's code, a used one, a wrong verifier) is a refused credential; a
//! provider that cannot be reached is a bad gateway.

use base64::Engine;
use serde::Deserialize;

use super::discovery::Metadata;
use super::error::OidcError;
use super::flow::encode;
use crate::config::OidcConfig;

/// What a token endpoint answers that scopegate uses.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// Redeems an authorization code.
pub async fn redeem_code(
    cfg: &OidcConfig,
    meta: &Metadata,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenResponse, OidcError> {
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        encode(code),
        encode(redirect_uri),
        encode(verifier)
    );
    post(cfg, meta, form).await
}

/// Uses a refresh token (RFC 6749 §6).
pub async fn refresh(
    cfg: &OidcConfig,
    meta: &Metadata,
    refresh_token: &str,
) -> Result<TokenResponse, OidcError> {
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        encode(refresh_token)
    );
    post(cfg, meta, form).await
}

async fn post(
    cfg: &OidcConfig,
    meta: &Metadata,
    mut form: String,
) -> Result<TokenResponse, OidcError> {
    let mut authorization = None;
    match &cfg.client_secret {
        Some(secret) if !meta.secret_in_body => {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            let pair = format!("{}:{}", encode(&cfg.client_id), encode(secret));
            authorization = Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ));
        }
        Some(secret) => {
            form.push_str(&format!(
                "&client_id={}&client_secret={}",
                encode(&cfg.client_id),
                encode(secret)
            ));
        }
        None => form.push_str(&format!("&client_id={}", encode(&cfg.client_id))),
    }
    let answer = crate::util::http_post_form(
        &meta.token_endpoint,
        authorization.as_deref(),
        form,
        cfg.timeout,
        64 * 1024,
    )
    .await
    .map_err(OidcError::TokenEndpoint)?;
    if answer.status.is_success() {
        return serde_json::from_slice(&answer.body)
            .map_err(|_| OidcError::TokenEndpoint("the token response is not JSON".into()));
    }
    match serde_json::from_slice::<ErrorResponse>(&answer.body) {
        Ok(e) if answer.status.is_client_error() => Err(OidcError::CodeRejected {
            error: e
                .error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect(),
        }),
        _ => Err(OidcError::TokenEndpoint(format!(
            "status {}",
            answer.status
        ))),
    }
}
