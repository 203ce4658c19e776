//! `scopegate explain`: runs the live identification and decision offline for one request and prints
//! the typed [`Explanation`] as text or JSON; exit 0 when allowed, 1 when denied, 2 when it cannot run.

use std::fmt::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{current_thread_runtime, load, ExplainArgs};
use crate::error::Refusal;
use crate::identity::{Peer, RequestFacts};
use crate::proxy::explain::{Explanation, NamedRequest, RequestDecision, Verdict};
use crate::runtime::Snapshot;

pub(super) fn explain(a: &ExplainArgs) -> ExitCode {
    let cfg = match load(&a.config.path()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let snap = match Snapshot::build(cfg, 1, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let method = match Method::from_bytes(a.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            eprintln!("invalid method {:?}", a.method);
            return ExitCode::from(2);
        }
    };
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(2),
    };
    let result = rt.block_on(async {
        if let Some(jwks) = snap.jwks() {
            let _ = jwks.fetch().await;
        }
        let (headers, peer) = explain_request(&snap, a);
        let forwarded = crate::identity::forwarded::resolve(
            &headers,
            peer.ip(),
            snap.trusts_forwarding(peer),
            &snap.forwarding_peers,
        )?;
        let facts = RequestFacts {
            peer,
            headers: &headers,
            client_ip: forwarded.client_ip,
            https: forwarded.proto == Some("https"),
        };
        let identified = snap.sources.identify(&facts).await?;
        Explanation::new(
            &snap,
            &identified,
            forwarded.client_ip,
            Some(NamedRequest {
                method: &method,
                path: &a.path,
                websocket: a.websocket,
            }),
        )
    });
    let explanation = match result {
        Ok(e) => e,
        Err(refusal) => {
            // Identification itself failed: the same refusal the live proxy would send.
            if a.json {
                let v = refusal.body_json("explain");
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", refusal_text(&refusal));
            }
            return ExitCode::from(1);
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation).unwrap_or_default()
        );
    } else {
        print!("{}", explanation_text(&explanation));
    }
    let allowed = explanation
        .decision
        .as_ref()
        .is_some_and(RequestDecision::allowed);
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Builds the request headers `explain` feeds into the live identification code.
fn explain_request(snap: &Snapshot, a: &ExplainArgs) -> (HeaderMap, Peer) {
    let mut h = HeaderMap::new();
    let mut peer = Peer::Tcp(IpAddr::from([198, 51, 100, 10]));
    let first_trusted = |peers: &[crate::config::PeerMatch]| -> Peer {
        match peers.first() {
            Some(crate::config::PeerMatch::Net(n)) => Peer::Tcp(n.network()),
            Some(crate::config::PeerMatch::Unix) => Peer::Unix,
            None => Peer::Tcp(IpAddr::from([198, 51, 100, 10])),
        }
    };
    let set = |h: &mut HeaderMap, name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    };
    if let Some(t) = a.token.as_ref().or(a.api_token.as_ref()) {
        set(&mut h, "authorization", &format!("Bearer {t}"));
    }
    if let Some(session) = &a.session {
        set(&mut h, "cookie", &format!("scopegate-session={session}"));
    }
    if let Some(login) = &a.tailscale_user {
        if let Some(ts) = &snap.config.tailscale {
            peer = first_trusted(&ts.trusted_peers);
        }
        set(&mut h, "tailscale-user-login", login);
        set(&mut h, "x-forwarded-for", "100.64.0.1");
    }
    if let Some(user) = &a.proxy_user {
        if let Some(tp) = &snap.config.trusted_proxy {
            peer = first_trusted(&tp.peers);
            set(&mut h, tp.user_header.as_str(), user);
            if let Some(g) = &tp.groups_header {
                if !a.groups.is_empty() {
                    set(&mut h, g.as_str(), &a.groups.join(","));
                }
            }
        }
    }
    if let Some(p) = a.peer {
        peer = Peer::Tcp(p);
    }
    (h, peer)
}

/// The text view: identity, request, scopes, decision and its reasons, one labelled line each.
fn explanation_text(e: &Explanation) -> String {
    let list = |names: &[String]| -> String {
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(" ")
        }
    };
    let mut out = String::new();
    match &e.caller {
        Some(c) => {
            let _ = writeln!(out, "identity   {} via {}", c.subject, c.method.amr());
            if !c.groups.is_empty() {
                let _ = writeln!(out, "groups     {}", c.groups.join(" "));
            }
            if let Some(u) = &c.gateway_user {
                let _ = writeln!(out, "gateway    user {u}");
            }
            if let Some(why) = &c.gateway_user_reason {
                let _ = writeln!(out, "           {why}");
            }
        }
        None => {
            let _ = writeln!(out, "identity   none");
        }
    }
    let granted = e.caller.as_ref().map_or(&[][..], |c| &c.granted);
    // `explain` always names a request; without one there is no decision to show.
    let Some(d) = &e.decision else {
        let _ = writeln!(out, "granted    {}", list(granted));
        return out;
    };
    let _ = writeln!(out, "request    {} {}", d.method, d.path);
    let _ = writeln!(out, "route      {}", d.route);
    let _ = writeln!(out, "required   {}", list(&d.required));
    let _ = writeln!(out, "granted    {}", list(granted));
    let _ = writeln!(out, "effective  {}", list(&d.effective));
    match &d.verdict {
        Verdict::Allow => {
            let _ = writeln!(out, "decision   ALLOW");
        }
        Verdict::Deny { status, message } => {
            let _ = writeln!(out, "decision   DENY ({status}): {message}");
        }
    }
    let _ = writeln!(out, "reasons");
    for r in &d.reasons {
        let _ = writeln!(out, "  - [{}] {}", r.code, r.message);
    }
    out
}

/// The text view of a refusal before any decision (the credential itself was refused).
fn refusal_text(refusal: &Refusal) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "decision   DENY ({} {})",
        refusal.status().as_u16(),
        refusal.kind.type_name()
    );
    let _ = writeln!(out, "message    {}", refusal.message);
    for r in &refusal.reasons {
        let _ = writeln!(out, "  - [{}] {}", r.code, r.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;
    use crate::identity::AuthMethod;
    use crate::proxy::explain::Caller;

    fn decision(verdict: Verdict) -> RequestDecision {
        RequestDecision {
            method: Method::POST,
            path: "/v1/responses".into(),
            route: "POST /v1/responses".into(),
            required: vec!["operator.write".into()],
            effective: vec!["operator.read".into(), "operator.sessions.read".into()],
            missing: vec!["operator.write".into()],
            verdict,
            reasons: vec![
                Reason::new(
                    "route_requires",
                    "route POST /v1/responses requires operator.write",
                ),
                Reason::new(
                    "missing_scope",
                    "operator.write is not among the effective scopes",
                ),
            ],
        }
    }

    #[test]
    fn the_text_view_of_a_denied_caller() {
        let e = Explanation {
            caller: Some(Caller {
                subject: "viewer".into(),
                method: AuthMethod::Jwt,
                display_name: None,
                groups: vec!["ops".into(), "viewers".into()],
                granted: vec!["operator.read".into()],
                effective: vec!["operator.read".into(), "operator.sessions.read".into()],
                ignored_scopes: vec![],
                expires_at: None,
                gateway_user: Some("viewer".into()),
                gateway_user_reason: Some(
                    "the gateway sees \"viewer\" over HTTP; its WebSocket is refused".into(),
                ),
            }),
            client_ip: None,
            seen: vec![],
            reasons: vec![],
            decision: Some(decision(Verdict::Deny {
                status: 403,
                message: "missing scope: operator.write".into(),
            })),
        };
        assert_eq!(
            explanation_text(&e),
            "identity   viewer via jwt\n\
             groups     ops viewers\n\
             gateway    user viewer\n\
             \x20          the gateway sees \"viewer\" over HTTP; its WebSocket is refused\n\
             request    POST /v1/responses\n\
             route      POST /v1/responses\n\
             required   operator.write\n\
             granted    operator.read\n\
             effective  operator.read operator.sessions.read\n\
             decision   DENY (403): missing scope: operator.write\n\
             reasons\n\
             \x20 - [route_requires] route POST /v1/responses requires operator.write\n\
             \x20 - [missing_scope] operator.write is not among the effective scopes\n"
        );
    }

    #[test]
    fn the_text_view_of_an_anonymous_allowed_request() {
        let mut d = decision(Verdict::Allow);
        d.required.clear();
        d.effective.clear();
        d.reasons.truncate(1);
        let e = Explanation {
            caller: None,
            client_ip: None,
            seen: vec![],
            reasons: vec![],
            decision: Some(d),
        };
        assert_eq!(
            explanation_text(&e),
            "identity   none\n\
             request    POST /v1/responses\n\
             route      POST /v1/responses\n\
             required   (none)\n\
             granted    (none)\n\
             effective  (none)\n\
             decision   ALLOW\n\
             reasons\n\
             \x20 - [route_requires] route POST /v1/responses requires operator.write\n"
        );
    }
}
