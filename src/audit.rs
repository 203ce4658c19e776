//! The audit record: one structured line per decision, rendered from the decision itself.
//!
//! It names who (subject and identity source), from where (client address), what (method, path, route),
//! the scopes required and effective, the outcome with its reason codes, the status and the timings. It
//! never contains a token, a secret or an assertion: only values scopegate derived.

use std::net::IpAddr;
use std::time::Duration;

/// The fields of one audit line.
pub struct AuditRecord<'a> {
    pub request_id: &'a str,
    pub subject: Option<&'a str>,
    pub source: Option<&'static str>,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub required: &'a str,
    pub effective: &'a str,
    pub decision: &'static str,
    pub reasons: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub websocket: bool,
}

/// Emits the record at target `scopegate::audit` (info level), if auditing is on.
pub fn record(enabled: bool, r: &AuditRecord<'_>) {
    if !enabled {
        return;
    }
    tracing::info!(
        target: "scopegate::audit",
        request_id = r.request_id,
        subject = r.subject.unwrap_or("-"),
        source = r.source.unwrap_or("-"),
        client_ip = %r.client_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        method = r.method,
        path = r.path,
        route = r.route,
        required = r.required,
        effective = r.effective,
        decision = r.decision,
        reasons = r.reasons,
        status = r.status,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        upstream_ms = r.upstream.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(-1.0),
        websocket = r.websocket,
        "decision"
    );
}
