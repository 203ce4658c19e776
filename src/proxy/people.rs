//! People at the gateway: whether a person's WebSocket may be forwarded, by `[openclaw] people`, and
//! the writer that adds people to the gateway's `identityScopes` (`people = "provision"`).
//!
//! The gateway's WebSocket grant is `identityScopes[person] ∩ X-OpenClaw-Scopes`; a person it does not
//! list would be admitted with no scopes at all, a session where every RPC fails. So before a
//! WebSocket is forwarded: a listed person (or the shared identity) goes through; with `listed` an
//! unlisted person is refused here with a 403 that says why; with `provision` scopegate first makes
//! sure the gateway lists them (`upstream::openclaw::provision` keeps the books, this module writes).
//! HTTP needs none of this: the gateway takes `X-OpenClaw-Scopes` as the whole grant there; nor does
//! a browser scopegate signed in (its device is auto-approved, see `admit_websocket`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::context::Context;
use crate::error::{Reason, Refusal, RefusalKind};
use crate::runtime::{Shared, Snapshot};
use crate::upstream::client::UpstreamClient;
use crate::upstream::openclaw::admin_rpc::AdminSession;
use crate::upstream::openclaw::provision::{Batch, ProvisionError, BATCH_WINDOW, MIN_INTERVAL};
use crate::upstream::openclaw::{identity_key, Listing};

/// Lets the context's WebSocket through to the gateway, provisioning its person first if the config
/// says so, or refuses it.
pub async fn admit_websocket(shared: &Shared, ctx: &Context) -> Result<(), Refusal> {
    let (Some(oc), Some(id)) = (&ctx.snap.openclaw, ctx.identified.identity.as_deref()) else {
        return Ok(());
    };
    if id.method == crate::identity::AuthMethod::Oidc {
        // A browser scopegate signed in brings its own device identity on a relayed, untouched
        // WebSocket; the gateway approves it through trustedProxy.deviceAutoApprove (which
        // `openclaw-config` emits whenever [oidc] is on), capped by X-OpenClaw-Scopes, with no
        // identityScopes entry — so neither a refusal nor a config.patch is needed.
        return Ok(());
    }
    match oc.listing(&id.subject) {
        Listing::Listed | Listing::Shared => Ok(()),
        Listing::Unlisted => Err(Refusal::new(
            RefusalKind::Forbidden,
            "gateway_identity_unlisted",
            format!(
                "the gateway's WebSocket grants {:?} no scopes: its identityScopes does not list them",
                id.subject
            ),
        )
        .with_reasons(vec![
            Reason::new("identity", id.describe()),
            Reason::new(
                "people_listed",
                "[openclaw] people = \"listed\": the gateway's identityScopes lists only the people scopegate's config names ([[grants]] subjects, API-token subjects, [openclaw] users)",
            ),
            Reason::new(
                "hint",
                format!(
                    "name {:?} in [openclaw] users and merge `scopegate openclaw-config` into the gateway, or set [openclaw] people = \"provision\"; HTTP is not affected",
                    id.subject
                ),
            ),
        ])),
        Listing::Provisioned => shared
            .provisioner
            .ensure(&id.subject, oc.provision_limit)
            .await
            .map_err(|e| provision_refusal(&id.subject, e)),
    }
}

fn provision_refusal(subject: &str, e: ProvisionError) -> Refusal {
    match e {
        ProvisionError::Limit(n) => Refusal::new(
            RefusalKind::Forbidden,
            "provision_limit",
            format!("scopegate will not add {subject:?} to the gateway: it has added {n} people already"),
        )
        .with_reasons(vec![Reason::new(
            "provision_limit",
            format!("[openclaw] provision_limit = {n} bounds how many people scopegate adds to the gateway's identityScopes"),
        )]),
        ProvisionError::Failed(why) => Refusal::new(
            RefusalKind::ServiceUnavailable,
            "provision_failed",
            format!("scopegate could not add {subject:?} to the gateway's identityScopes"),
        )
        .with_reasons(vec![Reason::new("provision_failed", why)]),
    }
}

/// Queues the people the current config names for the writer to check (at startup and after a
/// reload), when it provisions: one write adds whoever of them the gateway does not list yet.
pub fn preprovision_named(shared: &Shared) {
    let snap = shared.snapshot();
    if let Some(oc) = &snap.openclaw {
        if oc.people == crate::config::People::Provision {
            shared.provisioner.preprovision(oc.listed());
        }
    }
}

/// Runs the provisioning writer until `shared.draining`: pre-provisions the people the config names,
/// then writes each batch of first visits with one `config.patch`, paced to the gateway's limit. It
/// waits idle while nothing is queued (nothing is, unless `people = "provision"`).
pub async fn run_writer(shared: Arc<Shared>) {
    let p = shared.provisioner.clone();
    preprovision_named(&shared);
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = p.wait_for_work() => {}
            _ = shared.draining.cancelled() => return,
        }
        // Let a burst of first visits share this write, and keep within the gateway's write limit.
        let mut at = tokio::time::Instant::now() + BATCH_WINDOW;
        if let Some(last) = last_write {
            at = at.max(last + MIN_INTERVAL);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shared.draining.cancelled() => return,
        }
        let batch = p.take_batch();
        if batch.names.is_empty() {
            continue;
        }
        let snap = shared.snapshot();
        let outcome = write(&snap, &batch).await;
        last_write = Some(tokio::time::Instant::now());
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, people = batch.names.len(), "provisioning people at the gateway failed");
        }
        p.finish(&batch, outcome);
    }
}

/// One write: reads the gateway's `identityScopes` and adds whoever of `batch` is missing, each with
/// the whole catalogue (scopegate's `X-OpenClaw-Scopes` caps every connection). Returns the keys
/// present afterwards and the names added.
async fn write(snap: &Snapshot, batch: &Batch) -> Result<(Vec<String>, Vec<String>), String> {
    let oc = snap
        .openclaw
        .as_ref()
        .ok_or("the upstream profile is no longer openclaw")?;
    let client = UpstreamClient::new(&snap.config.upstream)?;
    let mut session =
        tokio::time::timeout(Duration::from_secs(30), AdminSession::open(&client, oc))
            .await
            .map_err(|_| "the gateway's admin session did not open in time".to_string())??;
    let current = session.call("config.get", json!({})).await?;
    let hash = current
        .get("hash")
        .and_then(Value::as_str)
        .ok_or("config.get returned no hash")?
        .to_string();
    let mut present: Vec<String> = identity_scopes(&current);
    let have: std::collections::HashSet<String> = present.iter().map(|k| identity_key(k)).collect();
    let missing: Vec<&String> = batch
        .names
        .iter()
        .filter(|n| !have.contains(&identity_key(n)))
        .collect();
    if !missing.is_empty() {
        let catalogue: Vec<&str> = (0..snap.policy.catalogue.len())
            .map(|i| snap.policy.catalogue.name(i))
            .collect();
        let entries: serde_json::Map<String, Value> = missing
            .iter()
            .map(|n| ((*n).clone(), json!(catalogue)))
            .collect();
        let patch = json!({"gateway": {"auth": {"identityScopes": entries}}});
        let started = std::time::Instant::now();
        session
            .call(
                "config.patch",
                json!({
                    "raw": patch.to_string(),
                    "baseHash": hash,
                    "note": format!("scopegate: {} people first seen", missing.len()),
                }),
            )
            .await?;
        let took = started.elapsed();
        for n in &missing {
            audit_provisioned(snap, n, &catalogue.join(" "), took);
        }
        crate::metrics::get()
            .provisioned
            .inc_by(missing.len() as u64);
        tracing::info!(
            people = missing.len(),
            took_ms = took.as_millis() as u64,
            "added people to the gateway's identityScopes (the gateway closes its live WebSockets with 4001 once per such write)"
        );
    }
    session.close().await;
    let added: Vec<String> = missing.into_iter().cloned().collect();
    present.extend(added.iter().cloned());
    Ok((present, added))
}

/// The keys of `gateway.auth.identityScopes` in a `config.get` answer.
fn identity_scopes(current: &Value) -> Vec<String> {
    for root in ["/config", "/sourceConfig", "/parsed", "/resolved"] {
        if let Some(map) = current
            .pointer(&format!("{root}/gateway/auth/identityScopes"))
            .and_then(Value::as_object)
        {
            return map.keys().cloned().collect();
        }
    }
    Vec::new()
}

fn audit_provisioned(snap: &Snapshot, person: &str, scopes: &str, took: Duration) {
    if !snap.config.log.audit {
        return;
    }
    crate::audit::record(
        true,
        &crate::audit::AuditRecord {
            request_id: "-",
            subject: Some(person),
            source: None,
            client_ip: None,
            method: "-",
            path: "-",
            route: "openclaw identityScopes",
            required: "".into(),
            effective: scopes.into(),
            decision: "provisioned",
            reasons: "added to the gateway's identityScopes with config.patch before the person's first WebSocket".into(),
            status: 0,
            duration: took,
            upstream: None,
            websocket: false,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, snapshot};

    #[test]
    fn identity_scopes_are_read_from_the_config_get_answer() {
        let v = json!({"hash": "h", "config": {"gateway": {"auth": {"identityScopes": {"a@x": [], "b": []}}}}});
        let mut keys = identity_scopes(&v);
        keys.sort();
        assert_eq!(keys, vec!["a@x", "b"]);
        assert!(identity_scopes(&json!({"hash": "h"})).is_empty());
    }

    #[tokio::test]
    async fn an_unlisted_persons_websocket_is_refused_with_reasons() {
        let snap = snapshot(&config());
        let shared = Shared::new(
            Snapshot::build((*snap.config).clone(), 1, None).unwrap(),
            "t".into(),
        );
        let mut ex = exchange(&snap, "192.0.2.9", get("/").body(()).unwrap());
        let id = crate::identity::Identity::new(
            "stranger",
            crate::identity::AuthMethod::Jwt,
            vec![],
            ["operator.read"],
        );
        ex.ctx.identified.identity = Some(Arc::new(id));
        let got = admit_websocket(&shared, &ex.ctx).await;
        match snap.openclaw.as_ref().map(|o| o.listing("stranger")) {
            Some(Listing::Unlisted) => {
                let r = got.expect_err("refused");
                assert_eq!(r.status(), 403);
                assert_eq!(r.code, "gateway_identity_unlisted");
                assert!(r.reasons.iter().any(|x| x.code == "people_listed"));
            }
            other => panic!("the test config should be openclaw, listed: {other:?}"),
        }
    }
}
