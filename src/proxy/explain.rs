//! "Why": the identity, scopes and decision as one typed [`Explanation`], shared by
//! `GET /.scopegate/whoami` and the offline `scopegate explain`, so the two cannot disagree with each
//! other or with the live decision (they call the same `identify` and `decide`). JSON is rendered from it
//! by serde; `scopegate explain` renders its text view from the same value.

use std::net::IpAddr;

use bytes::Bytes;
use http::Method;
use serde::Serialize;

use crate::error::{Reason, Refusal};
use crate::identity::{AuthMethod, Identified, Seen};
use crate::policy::{canonical_path, decide};
use crate::proxy::WHOAMI_PATH;
use crate::runtime::Snapshot;

/// What an identity is and holds and, if a request is named, the decision for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Explanation {
    /// The identity the request's credential or trusted peer established, if any.
    pub caller: Option<Caller>,
    /// The client address after trusted hops (none for a unix-socket peer without one).
    pub client_ip: Option<IpAddr>,
    /// Network identities that were present but not used (a bearer credential took precedence).
    pub seen: Vec<Seen>,
    /// How the caller was established and came to hold its scopes, or why there is no caller.
    pub reasons: Vec<Reason>,
    /// The decision for the named request.
    pub decision: Option<RequestDecision>,
}

/// An established identity and its scopes (catalogue names, in catalogue order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub subject: String,
    pub method: AuthMethod,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    /// Literal scopes: the credential's and `[[grants]]`.
    pub granted: Vec<String>,
    /// `granted` with implication applied.
    pub effective: Vec<String>,
    /// Scope names the credential carried that the catalogue does not know.
    pub ignored_scopes: Vec<String>,
    /// Unix seconds after which the credential is no longer valid.
    pub expires_at: Option<u64>,
    /// The identity the OpenClaw gateway is told (openclaw profile only).
    pub gateway_user: Option<String>,
    /// Why it is that identity, and whether its WebSocket is forwarded (`[openclaw] people`).
    pub gateway_user_reason: Option<String>,
}

/// The live decision for one request, with the reasons the live refusal (or audit line) carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestDecision {
    pub method: Method,
    pub path: String,
    /// The matching route's label (or the default route's).
    pub route: String,
    pub required: Vec<String>,
    pub effective: Vec<String>,
    pub missing: Vec<String>,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

/// Allowed, or the refusal the live proxy would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    Deny { status: u16, message: String },
}

impl RequestDecision {
    pub(crate) fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// A request to decide: what `scopegate explain` and `whoami?method&path` name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamedRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub websocket: bool,
}

impl Explanation {
    /// Explains `identified` and, if `request` is given, decides it with the live `decide`. An
    /// ambiguous path is refused as the live proxy refuses it.
    pub(crate) fn new(
        snap: &Snapshot,
        identified: &Identified,
        client_ip: Option<IpAddr>,
        request: Option<NamedRequest<'_>>,
    ) -> Result<Explanation, Refusal> {
        let cat = &snap.policy.catalogue;
        let identity = identified.identity.as_deref();
        let caller = identity.map(|id| Caller {
            subject: id.subject.clone(),
            method: id.method,
            display_name: id.display_name.clone(),
            groups: id.groups.clone(),
            granted: cat.names_owned(snap.policy.standing(id).granted),
            effective: cat.names_owned(snap.policy.standing(id).effective),
            ignored_scopes: snap.policy.standing(id).unknown.clone(),
            expires_at: id.expires_at,
            gateway_user: snap
                .openclaw
                .as_ref()
                .map(|oc| oc.gateway_user(&id.subject).to_string()),
            gateway_user_reason: snap
                .openclaw
                .as_ref()
                .map(|oc| oc.gateway_user_reason(&id.subject)),
        });
        // Identity reasons: the same explanation a decision would carry, without the route's.
        let reasons = match identity {
            Some(id) => {
                let route = snap.policy.routes.find(&Method::GET, WHOAMI_PATH, false);
                decide(&snap.policy, Some(id), route, None)
                    .reasons(&snap.policy, Some(id), &Method::GET, WHOAMI_PATH)
                    .into_iter()
                    .skip(1)
                    .collect()
            }
            None => vec![identified
                .anonymous_reason
                .clone()
                .unwrap_or_else(|| Reason::new("no_credential", "no credential was presented"))],
        };
        let decision = match request {
            Some(r) => Some(RequestDecision::new(snap, identified, r)?),
            None => None,
        };
        Ok(Explanation {
            caller,
            client_ip,
            seen: identified.seen.clone(),
            reasons,
            decision,
        })
    }
}

impl RequestDecision {
    fn new(
        snap: &Snapshot,
        identified: &Identified,
        request: NamedRequest<'_>,
    ) -> Result<RequestDecision, Refusal> {
        let NamedRequest {
            method,
            path,
            websocket,
        } = request;
        canonical_path(path).map_err(|why| {
            Refusal::bad_request(why.code(), format!("ambiguous path: {}", why.message()))
        })?;
        let cat = &snap.policy.catalogue;
        let identity = identified.identity.as_deref();
        let route = snap.policy.routes.find(method, path, websocket);
        let d = decide(&snap.policy, identity, route, None);
        let (verdict, reasons) = match d.refusal(&snap.policy, identity, method, path) {
            Some(r) => {
                let mut reasons = r.reasons.clone();
                if identity.is_none() {
                    if let Some(hint) = &identified.anonymous_reason {
                        reasons.push(hint.clone());
                    }
                }
                let verdict = Verdict::Deny {
                    status: r.status().as_u16(),
                    message: r.message,
                };
                (verdict, reasons)
            }
            None => (
                Verdict::Allow,
                d.reasons(&snap.policy, identity, method, path),
            ),
        };
        Ok(RequestDecision {
            method: method.clone(),
            path: path.to_string(),
            route: snap.policy.routes.label(route).to_string(),
            required: cat.names_owned(d.required),
            effective: cat.names_owned(d.effective),
            missing: cat.names_owned(d.missing),
            verdict,
            reasons,
        })
    }
}

// ---- JSON --------------------------------------------------------------------------------------------
//
// The wire shape of `whoami` and `explain --json`. Keys are in alphabetical order, as these objects
// have always been printed (they were `serde_json::Map`s, which sort their keys); `whoami` stays byte for
// byte what it was. Keys that only an identity has are absent for an anonymous caller.

impl Serialize for Explanation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let caller = self.caller.as_ref();
        ExplanationJson {
            authenticated: caller.is_some(),
            client_ip: self.client_ip,
            decision: self.decision.as_ref().map(DecisionJson::from),
            display_name: caller.and_then(|c| c.display_name.as_deref()),
            effective: caller.map_or(&[], |c| &c.effective),
            expires_at: caller.and_then(|c| c.expires_at),
            gateway_user: caller.and_then(|c| c.gateway_user.as_deref()),
            gateway_user_reason: caller.and_then(|c| c.gateway_user_reason.as_deref()),
            granted: caller.map_or(&[], |c| &c.granted),
            groups: caller.map(|c| c.groups.as_slice()),
            ignored_scopes: caller.map_or(&[], |c| &c.ignored_scopes),
            method: caller.map(|c| c.method.amr()),
            reasons: &self.reasons,
            seen: self
                .seen
                .iter()
                .map(|s| SeenJson {
                    method: s.method.amr(),
                    subject: &s.subject,
                })
                .collect(),
            subject: caller.map(|c| c.subject.as_str()),
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct ExplanationJson<'a> {
    authenticated: bool,
    client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<DecisionJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    effective: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_user_reason: Option<&'a str>,
    granted: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ignored_scopes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
    reasons: &'a [Reason],
    seen: Vec<SeenJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
}

#[derive(Serialize)]
struct SeenJson<'a> {
    method: &'static str,
    subject: &'a str,
}

/// A decision as JSON: its reasons as two parallel lists, sentences and codes, as in a refusal body.
#[derive(Serialize)]
struct DecisionJson<'a> {
    allowed: bool,
    effective: &'a [String],
    message: &'a str,
    method: &'a str,
    missing: &'a [String],
    path: &'a str,
    reason_codes: Vec<&'static str>,
    reasons: Vec<&'a str>,
    required: &'a [String],
    route: &'a str,
    status: Option<u16>,
}

impl<'a> From<&'a RequestDecision> for DecisionJson<'a> {
    fn from(d: &'a RequestDecision) -> Self {
        let (message, status) = match &d.verdict {
            Verdict::Allow => ("allowed", None),
            Verdict::Deny { status, message } => (message.as_str(), Some(*status)),
        };
        DecisionJson {
            allowed: d.allowed(),
            effective: &d.effective,
            message,
            method: d.method.as_str(),
            missing: &d.missing,
            path: &d.path,
            reason_codes: d.reasons.iter().map(|r| r.code).collect(),
            reasons: d.reasons.iter().map(|r| r.message.as_str()).collect(),
            required: &d.required,
            route: &d.route,
            status,
        }
    }
}

/// `GET /.scopegate/whoami[?method=POST&path=/v1/responses]`.
pub(crate) fn whoami(
    snap: &Snapshot,
    identified: &Identified,
    client_ip: Option<IpAddr>,
    query: Option<&str>,
) -> Result<Bytes, Refusal> {
    let mut method = None;
    let mut path = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| {
            Refusal::bad_request("bad_query", "whoami query is not valid percent-encoding")
        })?;
        match k {
            "method" => method = Some(v),
            "path" => path = Some(v),
            _ => {}
        }
    }
    let request = match (&method, &path) {
        (_, None) => None,
        (m, Some(p)) => {
            let m = Method::from_bytes(
                m.as_deref()
                    .unwrap_or("GET")
                    .to_ascii_uppercase()
                    .as_bytes(),
            )
            .map_err(|_| {
                Refusal::bad_request("bad_query", "whoami method is not an HTTP method")
            })?;
            Some((m, p.clone()))
        }
    };
    let explanation = Explanation::new(
        snap,
        identified,
        client_ip,
        request.as_ref().map(|(method, path)| NamedRequest {
            method,
            path,
            websocket: false,
        }),
    )?;
    Ok(Bytes::from(
        serde_json::to_vec_pretty(&explanation).unwrap_or_default(),
    ))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};

    use super::*;
    use crate::config::Config;
    use crate::identity::Identity;

    fn snapshot() -> Snapshot {
        let cfg = Config::parse(
            "[upstream]\nurl = \"http://127.0.0.1:18789\"\nprofile = \"openclaw\"\n\
             [[api_tokens]]\nsubject = \"ci-bot\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nscopes = [\"operator.read\"]\n\
             [[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n",
            None,
        )
        .unwrap();
        Snapshot::build(cfg, 1, None).unwrap()
    }

    fn caller() -> Identified {
        let mut id = Identity::new(
            "dev",
            AuthMethod::Jwt,
            vec!["ops".into()],
            ["operator.read", "operator.bogus"],
        );
        id.display_name = Some("Dev".into());
        id.expires_at = Some(2_000_000_000);
        Identified {
            identity: Some(Arc::new(id)),
            seen: vec![Seen {
                method: AuthMethod::TrustedProxy,
                subject: "carol".into(),
            }],
            anonymous_reason: None,
        }
    }

    fn request<'a>(method: &'a Method, path: &'a str) -> Option<NamedRequest<'a>> {
        Some(NamedRequest {
            method,
            path,
            websocket: false,
        })
    }

    /// The JSON keys come out sorted, at every level: exactly the bytes the `serde_json::Map` this
    /// replaced printed, which `whoami` keeps.
    fn assert_sorted_keys(e: &Explanation) {
        let direct = serde_json::to_string_pretty(e).unwrap();
        let sorted = serde_json::to_string_pretty(&serde_json::to_value(e).unwrap()).unwrap();
        assert_eq!(direct, sorted);
    }

    #[test]
    fn an_anonymous_caller_without_a_request() {
        let snap = snapshot();
        let e = Explanation::new(&snap, &Identified::default(), None, None).unwrap();
        assert_sorted_keys(&e);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({
                "authenticated": false,
                "client_ip": null,
                "effective": [],
                "granted": [],
                "reasons": [{"code": "no_credential", "message": "no credential was presented"}],
                "seen": [],
            })
        );
    }

    #[test]
    fn a_caller_and_an_allowed_request() {
        let snap = snapshot();
        let ip = Some(IpAddr::from([192, 0, 2, 7]));
        let e = Explanation::new(
            &snap,
            &caller(),
            ip,
            request(&Method::POST, "/v1/responses"),
        )
        .unwrap();
        assert_sorted_keys(&e);
        let c = e.caller.as_ref().unwrap();
        assert_eq!(c.granted, ["operator.read", "operator.write"]);
        assert_eq!(c.ignored_scopes, ["operator.bogus"]);
        assert_eq!(
            c.gateway_user.as_deref(),
            Some("dev"),
            "the person, not a shared name"
        );
        let d = e.decision.as_ref().unwrap();
        assert!(d.allowed());
        assert_eq!(d.route, "POST /v1/responses");
        assert_eq!(d.required, ["operator.write"]);
        assert!(d.missing.is_empty());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["authenticated"], true);
        assert_eq!(v["client_ip"], "192.0.2.7");
        assert_eq!(v["subject"], "dev");
        assert_eq!(v["method"], "jwt");
        assert_eq!(v["display_name"], "Dev");
        assert_eq!(v["groups"], json!(["ops"]));
        assert_eq!(v["ignored_scopes"], json!(["operator.bogus"]));
        assert_eq!(v["expires_at"], 2_000_000_000u64);
        assert_eq!(v["gateway_user"], "dev");
        assert!(
            v["gateway_user_reason"]
                .as_str()
                .is_some_and(|r| r.contains("WebSocket is refused")),
            "{v}"
        );
        assert_eq!(
            v["seen"],
            json!([{"method": "trusted_proxy", "subject": "carol"}])
        );
        assert_eq!(v["decision"]["allowed"], true);
        assert_eq!(v["decision"]["status"], Value::Null);
        assert_eq!(v["decision"]["message"], "allowed");
        assert_eq!(v["decision"]["method"], "POST");
        assert_eq!(v["decision"]["path"], "/v1/responses");
        let codes: Vec<&str> = d.reasons.iter().map(|r| r.code).collect();
        assert_eq!(v["decision"]["reason_codes"], json!(codes));
        assert_eq!(
            v["decision"]["reasons"].as_array().unwrap().len(),
            d.reasons.len()
        );
    }

    #[test]
    fn a_denied_request_carries_the_live_refusal() {
        let snap = snapshot();
        let identified = caller();
        let method = Method::POST;
        let e = Explanation::new(
            &snap,
            &identified,
            None,
            request(&method, "/sessions/x/kill"),
        )
        .unwrap();
        assert_sorted_keys(&e);
        let d = e.decision.as_ref().unwrap();
        // The same function the authorise phase calls, and the refusal it would send.
        let id = identified.identity.as_deref();
        let route = snap.policy.routes.find(&method, "/sessions/x/kill", false);
        let live = decide(&snap.policy, id, route, None)
            .refusal(&snap.policy, id, &method, "/sessions/x/kill")
            .unwrap();
        assert_eq!(
            d.verdict,
            Verdict::Deny {
                status: 403,
                message: live.message.clone()
            }
        );
        assert_eq!(d.reasons, live.reasons);
        assert_eq!(d.missing, ["operator.admin"]);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["decision"]["allowed"], false);
        assert_eq!(v["decision"]["status"], 403);
        assert_eq!(v["decision"]["message"], live.message.as_str());
    }

    #[test]
    fn an_anonymous_denial_adds_the_hint() {
        let snap = snapshot();
        let identified = Identified {
            anonymous_reason: Some(Reason::new("tagged_node", "a tagged node has no user")),
            ..Identified::default()
        };
        let e = Explanation::new(
            &snap,
            &identified,
            None,
            request(&Method::GET, "/v1/models"),
        )
        .unwrap();
        assert_eq!(e.reasons, [identified.anonymous_reason.clone().unwrap()]);
        let d = e.decision.unwrap();
        assert!(matches!(d.verdict, Verdict::Deny { status: 401, .. }));
        assert_eq!(d.reasons.last().unwrap().code, "tagged_node");
    }

    #[test]
    fn an_ambiguous_path_is_refused_as_live() {
        let snap = snapshot();
        let refusal = Explanation::new(
            &snap,
            &Identified::default(),
            None,
            request(&Method::GET, "/a/../b"),
        )
        .unwrap_err();
        assert_eq!(refusal.code, "path_dot_segment");
        assert_eq!(refusal.status().as_u16(), 400);
    }
}
