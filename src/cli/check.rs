//! `scopegate check`: validates the config and prints the effective policy (sources, limits, routes,
//! grants, scope closure) as a table; exit 1 with `file:line: message`.

use std::path::Path;
use std::process::ExitCode;

use super::load;
use crate::runtime::Snapshot;

pub(super) fn check(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let snap = match Snapshot::build(cfg, 1, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    print!("{}", policy_table(&snap));
    for w in warnings(&snap.config) {
        eprintln!("{}: warning: {w}", path.display());
    }
    println!("\n{}: OK", path.display());
    ExitCode::SUCCESS
}

/// `[openclaw] people` as `check` shows it: who the gateway sees, and the warning `listed` needs when
/// some identity source can admit people the config does not name.
fn people_lines(snap: &Snapshot, oc: &crate::upstream::openclaw::OpenClawProfile) -> String {
    use crate::config::People;
    let cfg = &snap.config;
    let open_sources = cfg.jwt.is_some()
        || cfg.tailscale.is_some()
        || cfg.trusted_proxy.is_some()
        || cfg.grants.iter().any(|g| !g.groups.is_empty());
    match oc.people {
        People::Listed => {
            let mut s = "people     listed: each person is their own gateway identity (their subject)".to_string();
            if open_sources {
                s.push_str("\nwarning: [openclaw] people = \"listed\": people the config does not name (JWT subjects, group members, Tailscale and trusted-proxy users) cannot use the gateway's WebSocket — the gateway's identityScopes lists only named people, so scopegate refuses their WebSocket with 403; name them in [openclaw] users or set people = \"provision\"");
            }
            s
        }
        People::Provision => format!(
            "people     provision: each person is their own gateway identity; scopegate signs in as {:?} and adds new people to the gateway's identityScopes (config.patch) before their first WebSocket, at most {}; named people are checked at startup: {}",
            oc.provision_user,
            oc.provision_limit,
            if oc.listed().is_empty() { "none".to_string() } else { oc.listed().join(", ") }
        ),
        People::Shared => format!(
            "people     shared: everyone the config does not name reaches the gateway as {:?} (one profile, one set of sessions)",
            oc.shared_user
        ),
    }
}

/// What is valid but probably not what the operator meant.
fn warnings(cfg: &crate::config::Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.oidc.is_some() && cfg.server.allowed_origins.is_empty() {
        out.push(
            "[oidc] sign-in is on but [server] allowed_origins names no public origin: scopegate will sign browsers in on whatever Host they send, and `openclaw-config` cannot emit the gateway's controlUi.allowedOrigins".to_string(),
        );
    }
    out
}

/// `[limits]` as `check` shows it: each bucket's rate and burst, or "off".
fn limits_table(l: &crate::config::LimitsConfig) -> String {
    let rate = |r: Option<crate::config::RateLimit>| match r {
        None => "off".to_string(),
        Some(r) => format!(
            "{}/{} (bursts of {})",
            r.count,
            humantime::format_duration(r.period),
            r.burst
        ),
    };
    let cap = |n: usize| {
        if n == 0 {
            "no cap".to_string()
        } else {
            n.to_string()
        }
    };
    format!(
        "  requests per address         {}\n  requests per identity        {}\n  failed authentications       {} per address; then 429 before any signature check\n  unauthenticated WebSockets   {} per address, {} in all\n  table size                   {} entries per limit (fixed)",
        rate(l.address_requests),
        rate(l.identity_requests),
        rate(l.failed_auth),
        cap(l.unauthenticated_websockets_per_address),
        cap(l.unauthenticated_websockets_total),
        l.table_size
    )
}

/// The effective policy as text: sources, routes, grants and the scope closure.
fn policy_table(snap: &Snapshot) -> String {
    use std::fmt::Write;
    let cfg = &snap.config;
    let cat = &snap.policy.catalogue;
    let mut out = String::new();
    let _ = writeln!(out, "listen     {}", cfg.server.listen);
    let _ = writeln!(
        out,
        "upstream   {} (profile {})",
        cfg.upstream.url,
        cfg.upstream.profile.name()
    );
    let _ = writeln!(
        out,
        "assertion  {} {} kid={} aud={}{}",
        cfg.assertion.header,
        snap.assertion.algorithm().name(),
        snap.assertion.kid(),
        snap.assertion.audience(),
        if snap.assertion.is_ephemeral() {
            " (ephemeral key: set [assertion] key_file)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "\nidentity sources");
    if let Some(j) = &cfg.jwt {
        let _ = writeln!(
            out,
            "  jwt             issuer={} audience={} keys={} jwks={} leeway={}s",
            j.issuer,
            j.audience.join(","),
            j.keys
                .iter()
                .map(|k| format!(
                    "{}{}",
                    k.algorithm,
                    k.kid
                        .as_deref()
                        .map(|x| format!("({x})"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(","),
            j.jwks_url.as_deref().unwrap_or("-"),
            j.leeway.as_secs()
        );
    }
    if !cfg.api_tokens.is_empty() {
        for t in &cfg.api_tokens {
            let _ = writeln!(
                out,
                "  api_token       {} → {}",
                t.subject,
                t.scopes.join(" ")
            );
        }
    }
    if let Some(t) = &cfg.tailscale {
        let _ = writeln!(
            out,
            "  tailscale       peers={} whois={} capability={}",
            t.trusted_peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            t.whois_socket
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into()),
            t.app_capability.as_deref().unwrap_or("-")
        );
    }
    if let Some(t) = &cfg.trusted_proxy {
        let _ = writeln!(
            out,
            "  trusted_proxy   peers={} user={} groups={}",
            t.peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            t.user_header,
            t.groups_header.as_ref().map(|h| h.as_str()).unwrap_or("-")
        );
        if let Some(a) = &t.assertion {
            let _ = writeln!(
                out,
                "                  signed assertion required: {} (issuer {}, audience {}); user and groups from it",
                a.header,
                a.jwt.issuer,
                a.jwt.audience.join(",")
            );
        }
    }
    if let Some(o) = &cfg.oidc {
        let _ = writeln!(
            out,
            "  oidc (sign-in)  issuer={} client={} ({}) scopes={} subject={} groups={} session={} cookie keys={} callback={}",
            o.issuer,
            o.client_id,
            if o.client_secret.is_some() { "confidential" } else { "public, PKCE only" },
            o.scopes.join(" "),
            o.subject_claim,
            o.groups_claim.as_deref().unwrap_or("-"),
            humantime::format_duration(o.session_ttl),
            o.cookie_keys.len(),
            crate::identity::oidc::CALLBACK_PATH,
        );
    }
    let _ = writeln!(
        out,
        "\nlimits (per client address after trusted hops; per instance)"
    );
    let _ = writeln!(out, "{}", limits_table(&cfg.limits));
    let _ = writeln!(
        out,
        "\nroutes (first match wins{})",
        if cfg.routes_from_profile {
            "; the openclaw profile's default table"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "  {:<4} {:<44} requires", "#", "route");
    for (i, r) in snap.policy.routes.routes.iter().enumerate() {
        let req = match r.access {
            crate::policy::Access::Public => "public".to_string(),
            crate::policy::Access::Deny => "deny".to_string(),
            crate::policy::Access::Require(s) if s.is_empty() => {
                "any authenticated identity".to_string()
            }
            crate::policy::Access::Require(s) => cat.join(s, " + "),
        };
        let _ = writeln!(out, "  {:<4} {:<44} {}", i + 1, r.label, req);
    }
    let default = match snap.policy.routes.default {
        crate::policy::Access::Require(s) => format!("requires {}", cat.join(s, " + ")),
        _ => "deny".to_string(),
    };
    let _ = writeln!(out, "  {:<4} {:<44} {}", "-", "anything else", default);
    if !snap.policy.grants.is_empty() {
        let _ = writeln!(out, "\ngrants");
        for (i, g) in snap.policy.grants.iter().enumerate() {
            let who: Vec<String> = g
                .subjects
                .iter()
                .map(|s| format!("subject {s}"))
                .chain(g.groups.iter().map(|s| format!("group {s}")))
                .collect();
            let _ = writeln!(
                out,
                "  #{:<3} {:<40} → {}",
                i + 1,
                who.join(", "),
                cat.join(g.scopes, " ")
            );
        }
    }
    let _ = writeln!(out, "\nscope closure (holding the scope satisfies)");
    for id in 0..cat.len() {
        let _ = writeln!(
            out,
            "  {:<26} {}",
            cat.name(id),
            cat.join(cat.closure_of(id), " ")
        );
    }
    if let Some(oc) = &snap.openclaw {
        let _ = writeln!(
            out,
            "\nopenclaw   user header {}; gateway identities: {}; loopback clients appear as {}",
            oc.user_header,
            oc.gateway_identities().join(", "),
            oc.local_client_ip
        );
        let _ = writeln!(out, "{}", people_lines(snap, oc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::warnings;

    #[test]
    fn sign_in_without_a_public_origin_is_warned_about() {
        std::env::set_var(
            "SG_TEST_CHECK_KEYS",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        );
        let cfg = |server: &str| {
            crate::config::Config::parse(
                &format!("[server]\n{server}\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"sg\"\ncookie_keys_env = \"SG_TEST_CHECK_KEYS\"\n"),
                None,
            )
            .unwrap()
        };
        let w = warnings(&cfg(""));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("allowed_origins"), "{w:?}");
        assert!(warnings(&cfg("allowed_origins = [\"https://gw.example.com\"]")).is_empty());
    }
}
