//! The claim rules, applied after the signature holds: `iss`, `aud` and `exp` required, `nbf` and `iat`
//! checked, all with one bounded leeway; NumericDates must be JSON numbers (a string `exp` is a type
//! error, never "absent": the CVE-2026-25537 class); then the subject, scope and group claims are read
//! (dotted paths such as `realm_access.roles`, space-delimited or list-valued scopes). It is separate
//! from the verifier because it is a pure function of a claims object, the config and a clock — the
//! part of JWT handling that a reviewer checks against the RFCs line by line.

use serde_json::{Map, Value};

use super::JwtError;
use crate::config::JwtConfig;

/// The claims scopegate uses, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedClaims {
    pub subject: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub name: Option<String>,
}

/// What claim validation needs from the config.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub issuer: String,
    pub audience: Vec<String>,
    pub leeway: u64,
    pub scope_claims: Vec<String>,
    pub groups_claim: Option<String>,
    pub subject_claim: String,
}

impl ClaimRules {
    pub fn from_config(c: &JwtConfig) -> ClaimRules {
        ClaimRules {
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            leeway: c.leeway.as_secs(),
            scope_claims: c.scope_claims.clone(),
            groups_claim: c.groups_claim.clone(),
            subject_claim: c.subject_claim.clone(),
        }
    }
}

/// A NumericDate: a JSON number, never a string (CVE-2026-25537 treated `"exp": "123"` as absent).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if let Some(f) = n.as_f64() {
                if f.is_finite() && f >= 0.0 {
                    Ok(Some(f.floor() as u64))
                } else {
                    Err(JwtError::ClaimType(name))
                }
            } else {
                Err(JwtError::ClaimType(name))
            }
        }
        Some(_) => Err(JwtError::ClaimType(name)),
    }
}

/// A string-or-list claim: `"a b c"` (space-delimited, RFC 8693 `scope`) or `["a", "b"]`.
fn string_list(v: &Value, split_spaces: bool) -> Option<Vec<String>> {
    match v {
        Value::String(s) if split_spaces => {
            Some(s.split_whitespace().map(str::to_string).collect())
        }
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// Looks up a dotted claim path (`realm_access.roles`), falling back to a literal key with dots.
pub(crate) fn claim_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut cur: Option<&Value> = None;
    for (i, part) in path.split('.').enumerate() {
        cur = if i == 0 {
            claims.get(part)
        } else {
            cur?.as_object()?.get(part)
        };
    }
    cur
}

/// Validates registered claims and extracts subject, scopes and groups.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now: u64,
) -> Result<VerifiedClaims, JwtError> {
    let leeway = rules.leeway;
    match claims.get("iss") {
        None => return Err(JwtError::ClaimMissing("iss")),
        Some(Value::String(iss)) if *iss == rules.issuer => {}
        Some(Value::String(_)) => {
            return Err(JwtError::IssuerMismatch {
                expected: rules.issuer.clone(),
            })
        }
        Some(_) => return Err(JwtError::ClaimType("iss")),
    }
    let aud_ok = match claims.get("aud") {
        None => return Err(JwtError::ClaimMissing("aud")),
        Some(Value::String(a)) => rules.audience.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            if list.iter().any(|v| !v.is_string()) {
                return Err(JwtError::ClaimType("aud"));
            }
            list.iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audience.iter().any(|x| x == a))
        }
        Some(_) => return Err(JwtError::ClaimType("aud")),
    };
    if !aud_ok {
        return Err(JwtError::AudienceMismatch {
            expected: rules.audience.clone(),
        });
    }
    let exp = numeric_date(claims, "exp")?.ok_or(JwtError::ClaimMissing("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired {
            ago: now - exp,
            leeway,
        });
    }
    let nbf = numeric_date(claims, "nbf")?;
    if let Some(nbf) = nbf {
        if now.saturating_add(leeway) < nbf {
            return Err(JwtError::NotYetValid {
                r#in: nbf - now,
                leeway,
            });
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if now.saturating_add(leeway) < iat {
            return Err(JwtError::IssuedInFuture {
                r#in: iat - now,
                leeway,
            });
        }
    }
    let subject = match claim_path(claims, &rules.subject_claim) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 => s.trim().to_string(),
        _ => return Err(JwtError::SubjectMissing(rules.subject_claim.clone())),
    };
    let mut scopes: Vec<String> = Vec::new();
    for name in &rules.scope_claims {
        if let Some(v) = claim_path(claims, name) {
            let list = string_list(v, true).ok_or(JwtError::ClaimType("scope"))?;
            for s in list {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
        }
    }
    let groups = match &rules.groups_claim {
        None => Vec::new(),
        Some(path) => match claim_path(claims, path) {
            None => Vec::new(),
            Some(v) => string_list(v, false).ok_or(JwtError::ClaimType("groups"))?,
        },
    };
    let name = claims
        .get("name")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(128).collect());
    Ok(VerifiedClaims {
        subject,
        scopes,
        groups,
        exp,
        nbf,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://idp".into(),
            audience: vec!["openclaw".into()],
            leeway: 30,
            scope_claims: vec!["scope".into(), "scp".into()],
            groups_claim: Some("realm_access.roles".into()),
            subject_claim: "sub".into(),
        }
    }

    fn claims(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claim_checks() {
        let now = 1_000_000;
        let good = serde_json::json!({"iss":"https://idp","aud":["x","openclaw"],"sub":"bob","exp":now+60,
            "scope":"operator.read operator.write","scp":["operator.read","x"],"realm_access":{"roles":["ops"]}});
        let v = check_claims(&claims(good.clone()), &rules(), now).unwrap();
        assert_eq!(v.subject, "bob");
        assert_eq!(v.scopes, vec!["operator.read", "operator.write", "x"]);
        assert_eq!(v.groups, vec!["ops"]);

        let with = |k: &str, val: Value| {
            let mut c = good.clone();
            c[k] = val;
            check_claims(&claims(c), &rules(), now)
        };
        let without = |k: &str| {
            let mut c = claims(good.clone());
            c.remove(k);
            check_claims(&c, &rules(), now)
        };
        assert_eq!(without("iss").unwrap_err(), JwtError::ClaimMissing("iss"));
        assert_eq!(without("aud").unwrap_err(), JwtError::ClaimMissing("aud"));
        assert_eq!(without("exp").unwrap_err(), JwtError::ClaimMissing("exp"));
        assert!(matches!(
            without("sub").unwrap_err(),
            JwtError::SubjectMissing(_)
        ));
        assert!(matches!(
            with("iss", "https://evil".into()).unwrap_err(),
            JwtError::IssuerMismatch { .. }
        ));
        assert!(matches!(
            with("aud", "other".into()).unwrap_err(),
            JwtError::AudienceMismatch { .. }
        ));
        assert_eq!(
            with("exp", Value::from(format!("{}", now + 60))).unwrap_err(),
            JwtError::ClaimType("exp")
        );
        assert_eq!(
            with("nbf", Value::from("0")).unwrap_err(),
            JwtError::ClaimType("nbf")
        );
        assert_eq!(
            with("exp", Value::from(now - 31)).unwrap_err(),
            JwtError::Expired {
                ago: 31,
                leeway: 30
            }
        );
        assert!(with("exp", Value::from(now - 29)).is_ok(), "within leeway");
        assert_eq!(
            with("nbf", Value::from(now + 100)).unwrap_err(),
            JwtError::NotYetValid {
                r#in: 100,
                leeway: 30
            }
        );
        assert!(with("nbf", Value::from(now + 10)).is_ok());
        assert!(matches!(
            with("iat", Value::from(now + 100)).unwrap_err(),
            JwtError::IssuedInFuture { .. }
        ));
        assert_eq!(
            with("scope", Value::from(5)).unwrap_err(),
            JwtError::ClaimType("scope")
        );
        assert!(with("exp", Value::from(1.5e6)).is_ok());
    }
}
