//! Access ends with the credential: registering a relayed session with what admitted it, judging it
//! again after a reload, and the `revoked` audit line (the registry and its one timer are
//! `crate::sessions`).
//!
//! A session is revoked when its JWT's `exp` plus the configured leeway passes; when a reload removes
//! or changes the API token that admitted it, removes its identity source or stops trusting the peer
//! it came through; or when the scopes its identity holds under the new config are fewer than those
//! it was admitted with (a grant removed, a group dropped from one). Widened scopes do not revoke: the
//! client keeps what it was admitted with until it reconnects.

use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use crate::identity::{AuthMethod, Identity};
use crate::runtime::{Shared, Snapshot};
use crate::sessions::{Admission, Ended, Registration, Revocation, Revoked};

/// Registers the context's session (a WebSocket about to be relayed, an event stream about to be
/// answered). `None` for an anonymous one:
/// it holds nothing that could be revoked.
pub fn register(shared: &Shared, ctx: &Context) -> Option<(Registration, Revoked)> {
    let id = ctx.identified.identity.as_deref()?;
    let snap = &ctx.snap;
    let cat = &snap.policy.catalogue;
    let admission = Admission {
        subject: id.subject.clone(),
        method: id.method,
        groups: id.groups.clone(),
        credential_scopes: id.scope_claim.clone(),
        effective: cat.names_owned(snap.policy.standing(id).effective),
        token_digest: match id.method {
            AuthMethod::ApiToken => snap.sources.api_tokens.digest_of(id),
            _ => None,
        },
        signed_in_until: match id.method {
            AuthMethod::Oidc => id.expires_at,
            _ => None,
        },
        peer: ctx.conn.peer,
        request_id: ctx.request_id.to_str().unwrap_or("-").to_string(),
        client_ip: ctx.forwarded.client_ip,
        path: ctx.uri.path().to_string(),
    };
    Some(shared.sessions.register(admission, deadline(snap, id)))
}

/// When a session admitted with `id` must end: its token's `exp` (a bearer JWT's, or the trusted
/// proxy's signed assertion's) plus the leeway scopegate accepted that token with; a signed-in
/// browser's session at its sealed expiry, without leeway.
fn deadline(snap: &Snapshot, id: &Identity) -> Option<tokio::time::Instant> {
    let exp = id.expires_at?;
    let cfg = &snap.config;
    let leeway = match id.method {
        AuthMethod::TrustedProxy => cfg
            .trusted_proxy
            .as_ref()
            .and_then(|t| t.assertion.as_ref())
            .map_or(0, |a| a.jwt.leeway.as_secs()),
        AuthMethod::Oidc => 0,
        _ => cfg.jwt.as_ref().map_or(0, |j| j.leeway.as_secs()),
    };
    let now_unix = crate::identity::jwt::unix_now();
    let left = (exp + leeway).saturating_sub(now_unix);
    Some(tokio::time::Instant::now() + Duration::from_secs(left))
}

/// Judges one live session under a new snapshot: `Some` revokes it.
pub fn judge(snap: &Snapshot, a: &Admission) -> Option<Revocation> {
    let revoked = |code: &'static str, reason: String| Some(Revocation { code, reason });
    let sources = &snap.sources;
    let identity = match a.method {
        AuthMethod::ApiToken => {
            let digest = a.token_digest?;
            match sources.api_tokens.by_digest(&digest) {
                Some(id) if crate::values::subject_eq(&id.subject, &a.subject) => id,
                _ => {
                    return revoked(
                        "api_token_removed",
                        format!("the API token for {} was removed or changed", a.subject),
                    )
                }
            }
        }
        AuthMethod::Jwt => {
            if sources.jwt.is_none() {
                return revoked(
                    "jwt_removed",
                    "JWTs are no longer accepted ([jwt] was removed)".into(),
                );
            }
            Arc::new(rebuild(a))
        }
        AuthMethod::Oidc => {
            if sources.oidc.is_none() {
                return revoked(
                    "oidc_removed",
                    "browser sign-in is no longer configured ([oidc] was removed)".into(),
                );
            }
            Arc::new(rebuild(a))
        }
        AuthMethod::Tailscale | AuthMethod::TrustedProxy => {
            let trusted = match a.method {
                AuthMethod::Tailscale => {
                    sources.tailscale.as_ref().is_some_and(|t| t.trusts(a.peer))
                }
                _ => sources
                    .trusted_proxy
                    .as_ref()
                    .is_some_and(|t| t.trusts(a.peer)),
            };
            if !trusted {
                return revoked(
                    "peer_untrusted",
                    format!(
                        "the peer this session came through is no longer trusted for {}",
                        a.method.amr()
                    ),
                );
            }
            Arc::new(rebuild(a))
        }
    };
    let now: Vec<&str> = snap
        .policy
        .catalogue
        .names(snap.policy.standing(&identity).effective);
    let lost: Vec<&str> = a
        .effective
        .iter()
        .map(String::as_str)
        .filter(|s| !now.contains(s))
        .collect();
    if lost.is_empty() {
        None
    } else {
        revoked(
            "scopes_reduced",
            format!(
                "the config no longer grants {}: {}",
                a.subject,
                lost.join(" ")
            ),
        )
    }
}

/// The identity `a` stands for again, with the scopes its credential carried (what the new policy
/// grants it is `Policy::standing`'s to say).
fn rebuild(a: &Admission) -> Identity {
    Identity::new(
        &a.subject,
        a.method,
        a.groups.clone(),
        a.credential_scopes.iter().map(String::as_str),
    )
}

/// Re-decides every live session against the current snapshot (after a reload).
pub fn redecide(shared: &Shared) {
    let snap = shared.snapshot();
    for e in shared.sessions.redecide(|a| judge(&snap, a)) {
        audit_revoked(&snap, &e);
    }
}

/// Ends the connections a signed-in browser session opened, when that session signs out: the
/// subject's sessions whose sealed end is `until` (one sign-in; another browser of the same person
/// has its own).
pub fn signed_out(shared: &Shared, subject: &str, until: u64) {
    let snap = shared.snapshot();
    let ended = shared.sessions.redecide(|a| {
        (a.method == AuthMethod::Oidc && a.signed_in_until == Some(until) && a.subject == subject)
            .then(|| Revocation {
                code: "signed_out",
                reason: "the browser session that opened this connection signed out".into(),
            })
    });
    for e in ended {
        audit_revoked(&snap, &e);
    }
}

/// Runs the process's expiry timer until shutdown.
pub async fn run_expiry(shared: Arc<Shared>) {
    let sessions = shared.sessions.clone();
    let stop = shared.stop.clone();
    sessions
        .run_expiry(stop, |e| audit_revoked(&shared.snapshot(), &e))
        .await;
}

/// The `revoked` audit line and metric for one ended session.
pub fn audit_revoked(snap: &Snapshot, e: &Ended) {
    crate::metrics::get()
        .revoked
        .get_or_create(&crate::metrics::RevokedLabels {
            reason: e.revocation.code,
        })
        .inc();
    tracing::info!(
        subject = %e.admission.subject,
        why = e.revocation.code,
        "session revoked: {}",
        e.revocation.reason
    );
    if !snap.config.log.audit {
        return;
    }
    let a = &e.admission;
    let effective = |f: &mut dyn FnMut(&str)| a.effective.iter().for_each(|s| f(s));
    crate::audit::record(
        true,
        &crate::audit::AuditRecord {
            request_id: &a.request_id,
            subject: Some(&a.subject),
            source: Some(a.method.amr()),
            client_ip: a.client_ip,
            method: "GET",
            path: &a.path,
            route: "websocket",
            required: "".into(),
            effective: crate::audit::Words::List(&effective),
            decision: "revoked",
            reasons: format!("{}: {}", e.revocation.code, e.revocation.reason)
                .as_str()
                .into(),
            status: 1008,
            duration: Duration::ZERO,
            upstream: None,
            websocket: true,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Peer;
    use crate::proxy::testing::{config, snapshot};

    fn admission(snap: &Snapshot, token: &str) -> Admission {
        let id = snap.sources.api_tokens.lookup(token).expect("a test token");
        let cat = &snap.policy.catalogue;
        Admission {
            subject: id.subject.clone(),
            method: id.method,
            groups: id.groups.clone(),
            credential_scopes: id.scope_claim.clone(),
            effective: cat.names_owned(snap.policy.standing(&id).effective),
            token_digest: snap.sources.api_tokens.digest_of(&id),
            signed_in_until: None,
            peer: Peer::Unix,
            request_id: "r".into(),
            client_ip: None,
            path: "/".into(),
        }
    }

    fn proxy_user(snap: &Snapshot, peer: &str, groups: &[&str]) -> Admission {
        let id = Identity::new(
            "carol",
            AuthMethod::TrustedProxy,
            groups.iter().map(|g| g.to_string()).collect(),
            std::iter::empty(),
        );
        let cat = &snap.policy.catalogue;
        Admission {
            subject: "carol".into(),
            method: AuthMethod::TrustedProxy,
            groups: id.groups.clone(),
            credential_scopes: Vec::new(),
            effective: cat.names_owned(snap.policy.standing(&id).effective),
            token_digest: None,
            signed_in_until: None,
            peer: Peer::Tcp(peer.parse().unwrap()),
            request_id: "r".into(),
            client_ip: None,
            path: "/".into(),
        }
    }

    #[test]
    fn a_reload_that_removes_the_token_distrusts_the_peer_or_drops_a_grant_revokes() {
        let text = config();
        let before = snapshot(&text);
        let reader = admission(&before, "sg_reader");
        assert_eq!(judge(&before, &reader), None, "same config: kept");
        // The reader's token rotated: the digest that admitted the session is gone.
        let rotated = text.replace(
            &crate::identity::api_token::sha256_hex(b"sg_reader"),
            &crate::identity::api_token::sha256_hex(b"sg_rotated"),
        );
        let got = judge(&snapshot(&rotated), &reader).expect("revoked");
        assert_eq!(got.code, "api_token_removed");

        let granted =
            format!("{text}\n[[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n");
        let with_grant = snapshot(&granted);
        let carol = proxy_user(&with_grant, "10.1.2.3", &["ops"]);
        assert!(carol.effective.contains(&"operator.write".to_string()));
        assert_eq!(judge(&with_grant, &carol), None);
        let got = judge(&before, &carol).expect("the grant is gone");
        assert_eq!(got.code, "scopes_reduced");
        assert!(got.reason.contains("operator.write"), "{}", got.reason);
        let moved = granted.replace("10.0.0.0/8", "192.168.0.0/16");
        let got = judge(&snapshot(&moved), &carol).expect("the peer is no longer trusted");
        assert_eq!(got.code, "peer_untrusted");
    }
}
