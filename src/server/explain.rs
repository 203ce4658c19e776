//! "Why": the identity, scopes and decision rendered as JSON, shared by `GET /.scopegate/whoami` and the
//! offline `scopegate explain`, so the two cannot disagree with each other or with the live decision
//! (they call the same `identify` and `decide`).

use std::net::IpAddr;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::error::Refusal;
use crate::identity::Identified;
use crate::policy::{canonical_path, decide};
use crate::runtime::Snapshot;

/// The explanation of an identity and, if a request is named, of the decision for it.
pub fn explain_value(
    snap: &Snapshot,
    identified: &Identified,
    client_ip: Option<IpAddr>,
    request: Option<(&Method, &str, bool)>,
) -> Result<Value, Refusal> {
    let cat = &snap.policy.catalogue;
    let identity = identified.identity.as_deref();
    let mut out = serde_json::Map::new();
    out.insert("authenticated".into(), identity.is_some().into());
    if let Some(id) = identity {
        out.insert("subject".into(), id.subject.clone().into());
        out.insert("method".into(), id.method.amr().into());
        if let Some(n) = &id.display_name {
            out.insert("display_name".into(), n.clone().into());
        }
        out.insert("groups".into(), id.groups.clone().into());
        out.insert("granted".into(), cat.names_owned(id.granted).into());
        out.insert("effective".into(), cat.names_owned(id.effective).into());
        if !id.unknown_scopes.is_empty() {
            out.insert("ignored_scopes".into(), id.unknown_scopes.clone().into());
        }
        if let Some(exp) = id.expires_at {
            out.insert("expires_at".into(), exp.into());
        }
        if let Some(oc) = &snap.openclaw {
            out.insert("gateway_user".into(), oc.gateway_user(&id.subject).into());
        }
    } else {
        out.insert("granted".into(), Value::Array(vec![]));
        out.insert("effective".into(), Value::Array(vec![]));
    }
    out.insert(
        "client_ip".into(),
        client_ip
            .map(|i| Value::from(i.to_string()))
            .unwrap_or(Value::Null),
    );
    out.insert(
        "seen".into(),
        identified
            .seen
            .iter()
            .map(|s| json!({"method": s.method.amr(), "subject": s.subject}))
            .collect::<Vec<_>>()
            .into(),
    );
    // Identity reasons: the same explanation a decision would carry, without a route.
    let mut reasons: Vec<Value> = Vec::new();
    if let Some(id) = identity {
        let route = snap
            .policy
            .routes
            .find(&Method::GET, "/.scopegate/whoami", false);
        let d = decide(&snap.policy, Some(id), route, None);
        for r in d
            .reasons(&snap.policy, Some(id), &Method::GET, "/.scopegate/whoami")
            .into_iter()
            .skip(1)
        {
            reasons.push(json!({"code": r.code, "message": r.message}));
        }
    } else if let Some(r) = &identified.anonymous_reason {
        reasons.push(json!({"code": r.code, "message": r.message}));
    } else {
        reasons.push(json!({"code": "no_credential", "message": "no credential was presented"}));
    }
    out.insert("reasons".into(), reasons.into());

    if let Some((method, path, websocket)) = request {
        canonical_path(path).map_err(|why| {
            Refusal::bad_request(why.code(), format!("ambiguous path: {}", why.message()))
        })?;
        let route = snap.policy.routes.find(method, path, websocket);
        let d = decide(&snap.policy, identity, route, None);
        let reasons = match d.refusal(&snap.policy, identity, method, path) {
            Some(r) => {
                let mut reasons = r.reasons.clone();
                if identity.is_none() {
                    if let Some(h) = &identified.anonymous_reason {
                        reasons.push(h.clone());
                    }
                }
                json!({
                    "allowed": false,
                    "status": r.status().as_u16(),
                    "message": r.message,
                    "reasons": reasons.iter().map(|x| x.message.clone()).collect::<Vec<_>>(),
                    "reason_codes": reasons.iter().map(|x| x.code).collect::<Vec<_>>(),
                })
            }
            None => {
                let reasons = d.reasons(&snap.policy, identity, method, path);
                json!({
                    "allowed": true,
                    "status": Value::Null,
                    "message": "allowed",
                    "reasons": reasons.iter().map(|x| x.message.clone()).collect::<Vec<_>>(),
                    "reason_codes": reasons.iter().map(|x| x.code).collect::<Vec<_>>(),
                })
            }
        };
        let mut decision = reasons;
        decision["method"] = method.as_str().into();
        decision["path"] = path.into();
        decision["route"] = snap.policy.routes.label(route).into();
        decision["required"] = cat.names_owned(d.required).into();
        decision["effective"] = cat.names_owned(d.effective).into();
        decision["missing"] = cat.names_owned(d.missing).into();
        out.insert("decision".into(), decision);
    }
    Ok(Value::Object(out))
}

/// `GET /.scopegate/whoami[?method=POST&path=/v1/responses]`.
pub fn whoami(
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
    let value = explain_value(
        snap,
        identified,
        client_ip,
        request.as_ref().map(|(m, p)| (m, p.as_str(), false)),
    )?;
    Ok(Bytes::from(
        serde_json::to_vec_pretty(&value).unwrap_or_default(),
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
