//! Process metrics in the Prometheus text format, built on `prometheus-client`.
//!
//! One registry for the process (metrics outlive config reloads). Labels are bounded and cheap:
//! routes are interned `Arc<str>` labels made once per config, methods and outcomes are `&'static str`,
//! so recording a request allocates nothing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<str>,
    pub method: &'static str,
    pub status: u16,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevokedLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The JSON audit writer's counters (`src/audit/writer.rs`), updated once per block written, not per
/// line. Text logs (`--log-format text`) print audit lines through tracing, uncounted.
#[derive(Clone, Default)]
pub struct AuditMetrics {
    pub lines: Counter,
    pub bytes: Counter,
    pub lines_lost: Counter,
    pub writer_waits: Counter,
    pub flushes: Family<ReasonLabels, Counter>,
}

impl AuditMetrics {
    pub(crate) fn flush(&self, reason: &'static str) {
        self.flushes.get_or_create(&ReasonLabels { reason }).inc();
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub denials: Family<ReasonLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub upstream_duration: Family<RouteLabels, Histogram>,
    pub active_connections: Gauge,
    pub active_websockets: Gauge,
    /// Live sessions watched for revocation (`sessions`).
    pub live_sessions: Gauge,
    /// Sessions ended because their credential ended, by why.
    pub revoked: Family<RevokedLabels, Counter>,
    /// People added to the gateway's `identityScopes` (`[openclaw] people = "provision"`).
    pub provisioned: Counter,
    /// Which relay carried a WebSocket: `tcp` (both sockets taken back from hyper, no buffers) or
    /// `stream` (TLS or unix sockets, a small-buffer copy); a drop in `tcp` is a memory regression.
    pub websocket_relays: Family<TransportLabels, Counter>,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub jwks_fetches: Family<OutcomeLabels, Counter>,
    pub token_cache_hits: Counter,
    pub token_cache_misses: Counter,
    pub token_cache_hit_ratio: Gauge<f64, AtomicU64>,
    pub reloads: Family<OutcomeLabels, Counter>,
    pub config_generation: Gauge,
    pub ready: Gauge,
    pub rate_limited: Family<ReasonLabels, Counter>,
    pub rate_limit_evictions: Family<KindLabels, Counter>,
    pub rate_limit_entries: Family<KindLabels, Gauge>,
    pub rate_limit_capacity: Family<KindLabels, Gauge>,
    /// Signature checks of bearer JWTs: what a credential flood costs, and what the limits cap.
    pub signature_verifications: Counter,
    pub audit: AuditMetrics,
}

fn histogram() -> Histogram {
    // 50 µs .. ~52 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 21))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("scopegate");
        let requests = Family::<RequestLabels, Counter>::default();
        let denials = Family::<ReasonLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let upstream_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let active_connections = Gauge::<i64, AtomicI64>::default();
        let active_websockets = Gauge::<i64, AtomicI64>::default();
        let live_sessions = Gauge::<i64, AtomicI64>::default();
        let revoked = Family::<RevokedLabels, Counter>::default();
        let provisioned = Counter::default();
        registry.register(
            "live_sessions",
            "Live WebSockets watched for revocation",
            live_sessions.clone(),
        );
        registry.register(
            "sessions_revoked",
            "Sessions ended because their credential ended",
            revoked.clone(),
        );
        registry.register(
            "openclaw_provisioned",
            "People added to the gateway's identityScopes",
            provisioned.clone(),
        );
        let websocket_relays = Family::<TransportLabels, Counter>::default();
        let upstream_errors = Family::<KindLabels, Counter>::default();
        let jwks_fetches = Family::<OutcomeLabels, Counter>::default();
        let token_cache_hits = Counter::default();
        let token_cache_misses = Counter::default();
        let token_cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        let reloads = Family::<OutcomeLabels, Counter>::default();
        let config_generation = Gauge::<i64, AtomicI64>::default();
        let ready = Gauge::<i64, AtomicI64>::default();
        let rate_limited = Family::<ReasonLabels, Counter>::default();
        let rate_limit_evictions = Family::<KindLabels, Counter>::default();
        let rate_limit_entries = Family::<KindLabels, Gauge>::default();
        let rate_limit_capacity = Family::<KindLabels, Gauge>::default();
        let signature_verifications = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused by a [limits] bucket, by reason",
            rate_limited.clone(),
        );
        registry.register(
            "rate_limit_evictions",
            "Busy rate-limit entries evicted by new keys, by table",
            rate_limit_evictions.clone(),
        );
        registry.register(
            "rate_limit_entries",
            "Rate-limit entries holding state, by table",
            rate_limit_entries.clone(),
        );
        registry.register(
            "rate_limit_capacity",
            "Rate-limit table size (fixed), by table",
            rate_limit_capacity.clone(),
        );
        registry.register(
            "signature_verifications",
            "Bearer JWT signature checks",
            signature_verifications.clone(),
        );
        registry.register(
            "requests",
            "Requests by route, method, status and decision",
            requests.clone(),
        );
        registry.register("denials", "Refusals by reason code", denials.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers",
            request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time the upstream took to send response headers",
            upstream_duration.clone(),
        );
        registry.register(
            "active_connections",
            "Open client connections",
            active_connections.clone(),
        );
        registry.register(
            "active_websockets",
            "Open relayed WebSockets",
            active_websockets.clone(),
        );
        registry.register(
            "websocket_relays",
            "Relayed WebSockets by relay transport (tcp: zero-buffer readiness relay)",
            websocket_relays.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "jwks_fetches",
            "JWKS fetches by outcome",
            jwks_fetches.clone(),
        );
        registry.register(
            "token_cache_hits",
            "Verified-token cache hits",
            token_cache_hits.clone(),
        );
        registry.register(
            "token_cache_misses",
            "Verified-token cache misses",
            token_cache_misses.clone(),
        );
        registry.register(
            "token_cache_hit_ratio",
            "Verified-token cache hit ratio since start",
            token_cache_hit_ratio.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads by outcome",
            reloads.clone(),
        );
        registry.register(
            "config_generation",
            "Generation of the configuration in use",
            config_generation.clone(),
        );
        registry.register("ready", "1 when the proxy reports ready", ready.clone());
        let audit = AuditMetrics::default();
        registry.register(
            "audit_lines",
            "Audit lines written to the log destination",
            audit.lines.clone(),
        );
        registry.register(
            "audit_bytes",
            "Bytes of audit lines written to the log destination",
            audit.bytes.clone(),
        );
        registry.register(
            "audit_lines_lost",
            "Audit lines the log destination failed to take (write error, or not in time at exit)",
            audit.lines_lost.clone(),
        );
        registry.register(
            "audit_writer_waits",
            "Times a worker waited for a slow log destination (the audit queue was full)",
            audit.writer_waits.clone(),
        );
        registry.register(
            "audit_flushes",
            "Audit blocks written, by why (size, time, drain, thread_exit)",
            audit.flushes.clone(),
        );
        Metrics {
            registry,
            requests,
            denials,
            request_duration,
            upstream_duration,
            active_connections,
            active_websockets,
            live_sessions,
            revoked,
            provisioned,
            websocket_relays,
            upstream_errors,
            jwks_fetches,
            token_cache_hits,
            token_cache_misses,
            token_cache_hit_ratio,
            reloads,
            config_generation,
            ready,
            rate_limited,
            rate_limit_evictions,
            rate_limit_entries,
            rate_limit_capacity,
            signature_verifications,
            audit,
        }
    }

    /// Requests counted so far, over every label set (for the summary at exit).
    pub(crate) fn requests_total(&self) -> u64 {
        self.render()
            .lines()
            .filter(|l| l.starts_with("scopegate_requests_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let hits = self.token_cache_hits.get() as f64;
        let misses = self.token_cache_misses.get() as f64;
        self.token_cache_hit_ratio.set(if hits + misses > 0.0 {
            hits / (hits + misses)
        } else {
            0.0
        });
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// Interned method labels: the standard methods by name, everything else as "other".
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "other",
    }
}

pub fn jwks_fetch(outcome: &'static str) {
    get()
        .jwks_fetches
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

pub fn upstream_error(kind: &'static str) {
    get()
        .upstream_errors
        .get_or_create(&KindLabels { kind })
        .inc();
}

pub fn denial(reason: &'static str) {
    get().denials.get_or_create(&ReasonLabels { reason }).inc();
}

pub fn rate_limited(reason: &'static str) {
    get()
        .rate_limited
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

pub fn rate_limit_eviction(kind: &'static str) {
    get()
        .rate_limit_evictions
        .get_or_create(&KindLabels { kind })
        .inc();
}

/// Publishes the limiter's table occupancy (at scrape time: counting entries walks the tables).
pub fn rate_limit_tables(tables: &[(&'static str, usize, usize)]) {
    for &(kind, used, capacity) in tables {
        let labels = KindLabels { kind };
        get()
            .rate_limit_entries
            .get_or_create(&labels)
            .set(used as i64);
        get()
            .rate_limit_capacity
            .get_or_create(&labels)
            .set(capacity as i64);
    }
}

pub fn reload(outcome: &'static str) {
    get()
        .reloads
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

pub fn token_cache(hit: bool) {
    if hit {
        get().token_cache_hits.inc();
    } else {
        get().token_cache_misses.inc();
    }
}

/// Counts a value up on creation and down on drop (connections, WebSockets).
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn connection() -> GaugeGuard {
        get().active_connections.inc();
        GaugeGuard(&get().active_connections)
    }
    pub fn websocket() -> GaugeGuard {
        get().active_websockets.inc();
        GaugeGuard(&get().active_websockets)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A monotonically increasing counter for request ids within a process.
pub(crate) static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_seq() -> u64 {
    REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
}
