//! One compiled, immutable configuration: everything a request needs, built once per load.
//!
//! A request takes the current [`Snapshot`] at its start (one `ArcSwap` load) and keeps it for its whole
//! life, WebSocket relays included, so a reload never changes a request halfway. Building a snapshot
//! does the expensive work up front: scope closure, route compilation, key parsing, API-token
//! identities, the managed-header set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use http::{HeaderName, HeaderValue};

use crate::assertion::AssertionSigner;
use crate::config::{Config, PeerMatch, Profile};
use crate::identity::hygiene::Hygiene;
use crate::identity::jwks::JwksCache;
use crate::identity::jwt::JwtVerifier;
use crate::identity::tailscale::TailscaleSource;
use crate::identity::trusted_proxy::TrustedProxySource;
use crate::identity::{api_token::ApiTokens, Peer, Sources};
use crate::policy::{Policy, ScopeSet};
use crate::upstream::openclaw::OpenClawProfile;

/// A route's latency histograms.
pub struct RouteMetrics {
    pub duration: prometheus_client::metrics::histogram::Histogram,
    pub upstream: prometheus_client::metrics::histogram::Histogram,
}

/// `(route index, method, status, decision)` of the request counter.
type CounterKey = (usize, &'static str, u16, &'static str);

pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub policy: Policy,
    pub sources: Sources,
    pub hygiene: Arc<Hygiene>,
    pub assertion: AssertionSigner,
    pub openclaw: Option<OpenClawProfile>,
    /// Every peer net trusted to send forwarding headers (Tailscale peers ∪ trusted proxies).
    pub forwarding_peers: Vec<PeerMatch>,
    /// Route labels as interned metric labels, by route index; the default route last.
    pub route_labels: Vec<Arc<str>>,
    pub upstream_fingerprint: String,
    /// The TLS acceptor for new connections, when the listener terminates TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The abuse limiter's tables, carried over from the previous snapshot while their size holds.
    pub limiter: Arc<crate::limits::Limiter>,
    /// Per-route histogram handles, resolved once so a request does no label lookups.
    route_metrics: Vec<RouteMetrics>,
    request_counters:
        quick_cache::sync::Cache<CounterKey, prometheus_client::metrics::counter::Counter>,
    scope_headers: quick_cache::sync::Cache<ScopeSet, (HeaderValue, Arc<str>)>,
}

impl Snapshot {
    /// Compiles a config. `previous` lets a reload keep a JWKS cache that still serves the same document.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let policy = Policy::compile(&config);
        let jwt = match &config.jwt {
            None => None,
            Some(j) => {
                let reuse = previous
                    .and_then(|p| p.sources.jwt.as_ref())
                    .and_then(|v| v.jwks())
                    .filter(|c| c.same_source(j))
                    .cloned();
                let jwks = reuse.or_else(|| JwksCache::new(j));
                Some(JwtVerifier::new(j, jwks))
            }
        };
        let oidc = match &config.oidc {
            None => None,
            Some(o) => {
                let reuse = previous
                    .and_then(|p| p.sources.oidc.as_ref())
                    .map(|s| s.discovery())
                    .filter(|d| d.same_source(o))
                    .cloned();
                let discovery =
                    reuse.unwrap_or_else(|| crate::identity::oidc::discovery::Discovery::new(o));
                Some(crate::identity::oidc::OidcSource::new(o, discovery)?)
            }
        };
        let sources = Sources {
            oidc,
            jwt,
            api_tokens: ApiTokens::new(&config.api_tokens),
            tailscale: config.tailscale.as_ref().map(TailscaleSource::new),
            trusted_proxy: config.trusted_proxy.as_ref().map(TrustedProxySource::new),
        };
        let mut managed: Vec<&HeaderName> = vec![&config.assertion.header];
        let mut read_from_peers: Vec<&HeaderName> = Vec::new();
        if let Some(tp) = &config.trusted_proxy {
            managed.push(&tp.user_header);
            read_from_peers.push(&tp.user_header);
            if let Some(g) = &tp.groups_header {
                managed.push(g);
                read_from_peers.push(g);
            }
            if let Some(a) = &tp.assertion {
                managed.push(&a.header);
                read_from_peers.push(&a.header);
            }
        }
        if let Some(h) = &config.request_scopes_header {
            managed.push(h);
        }
        let openclaw =
            (config.upstream.profile == Profile::OpenClaw).then(|| OpenClawProfile::new(&config));
        if let Some(oc) = &openclaw {
            managed.push(&oc.user_header);
        }
        let hygiene = Arc::new(Hygiene::new(&managed, &read_from_peers));
        let assertion = AssertionSigner::new(&config.assertion)?;
        let mut forwarding_peers: Vec<PeerMatch> = Vec::new();
        if let Some(t) = &config.tailscale {
            forwarding_peers.extend(t.trusted_peers.iter().copied());
        }
        if let Some(t) = &config.trusted_proxy {
            forwarding_peers.extend(t.peers.iter().copied());
        }
        let mut route_labels: Vec<Arc<str>> = policy
            .routes
            .routes
            .iter()
            .map(|r| Arc::from(r.label.as_str()))
            .collect();
        route_labels.push(Arc::from("default"));
        let upstream_fingerprint = crate::upstream::client::fingerprint(&config.upstream);
        let tls = match &config.server.tls {
            Some(t) => Some(crate::tls::acceptor(t)?),
            None => None,
        };
        let table_size = config.limits.table_size.max(64);
        let limiter = previous
            .map(|p| p.limiter.clone())
            .filter(|l| l.table_size() == table_size)
            .unwrap_or_else(|| Arc::new(crate::limits::Limiter::new(table_size)));
        let m = crate::metrics::get();
        let route_metrics = route_labels
            .iter()
            .map(|l| RouteMetrics {
                duration: m
                    .request_duration
                    .get_or_create_owned(&crate::metrics::RouteLabels { route: l.clone() }),
                upstream: m
                    .upstream_duration
                    .get_or_create_owned(&crate::metrics::RouteLabels { route: l.clone() }),
            })
            .collect();
        Ok(Snapshot {
            generation,
            config: Arc::new(config),
            policy,
            sources,
            hygiene,
            assertion,
            openclaw,
            forwarding_peers,
            route_labels,
            limiter,
            upstream_fingerprint,
            tls,
            route_metrics,
            request_counters: crate::util::bounded_cache(512),
            scope_headers: crate::util::bounded_cache(1024),
        })
    }

    /// True when this peer may send forwarding and identity headers.
    pub fn trusts_forwarding(&self, peer: Peer) -> bool {
        crate::config::peer_matches(&self.forwarding_peers, peer.ip())
    }

    pub fn route_label(&self, index: Option<usize>) -> &str {
        match index {
            Some(i) => &self.route_labels[i],
            None => &self.route_labels[self.route_labels.len() - 1],
        }
    }

    pub fn route_metrics(&self, index: Option<usize>) -> &RouteMetrics {
        match index {
            Some(i) => &self.route_metrics[i],
            None => &self.route_metrics[self.route_metrics.len() - 1],
        }
    }

    /// The request counter for one label set, looked up in the registry only the first time.
    pub fn request_counter(
        &self,
        index: Option<usize>,
        method: &'static str,
        status: u16,
        decision: &'static str,
    ) -> prometheus_client::metrics::counter::Counter {
        let idx = index.unwrap_or(self.route_labels.len() - 1);
        let key = (idx, method, status, decision);
        if let Some(c) = self.request_counters.get(&key) {
            return c;
        }
        let c =
            crate::metrics::get()
                .requests
                .get_or_create_owned(&crate::metrics::RequestLabels {
                    route: self.route_labels[idx].clone(),
                    method,
                    status,
                    decision,
                });
        self.request_counters.insert(key, c.clone());
        c
    }

    /// The effective scopes rendered two ways, cached per set: the comma list for `X-OpenClaw-Scopes`
    /// and the space list for the assertion's `scope` claim.
    pub fn scope_strings(&self, set: ScopeSet) -> (HeaderValue, Arc<str>) {
        if let Some(hit) = self.scope_headers.get(&set) {
            return hit;
        }
        let cat = &self.policy.catalogue;
        let comma = HeaderValue::from_str(&cat.join(set, ","))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let space: Arc<str> = Arc::from(cat.join(set, " "));
        self.scope_headers
            .insert(set, (comma.clone(), space.clone()));
        (comma, space)
    }

    /// The sign-in provider's discovery this snapshot uses, if any.
    pub fn oidc_discovery(&self) -> Option<&Arc<crate::identity::oidc::discovery::Discovery>> {
        self.sources.oidc.as_ref().map(|o| o.discovery())
    }

    /// The JWKS cache this snapshot uses, if any.
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.sources.jwt.as_ref().and_then(|j| j.jwks())
    }
}

/// State shared by every worker and the control thread.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// Set when shutdown begins: stop accepting, finish in-flight work.
    pub draining: CancellationToken,
    /// Set when the drain deadline passes: end everything still running.
    pub stop: CancellationToken,
    /// Upgraded connections (WebSockets) outlive their HTTP connection; they are tracked here.
    pub tracker: TaskTracker,
    pub boot_id: String,
    /// Who scopegate has added to the gateway's `identityScopes` (`[openclaw] people = "provision"`).
    pub provisioner: Arc<crate::upstream::openclaw::provision::Provisioner>,
    /// Every live WebSocket, with what admitted it, re-decided on reload and ended when it expires.
    pub sessions: Arc<crate::sessions::Sessions>,
    generation: AtomicU64,
    reload_lock: Mutex<()>,
    jwks_ready: AtomicBool,
}

impl Shared {
    /// The state of a proxy about to start with `snapshot` (generation 1).
    pub fn new(snapshot: Snapshot, boot_id: String) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            boot_id,
            provisioner: Arc::new(crate::upstream::openclaw::provision::Provisioner::new()),
            sessions: Arc::new(crate::sessions::Sessions::new()),
            generation: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
            jwks_ready: AtomicBool::new(false),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Compiles `config` and, if that succeeds, makes it current. On failure the old config keeps
    /// serving. Returns the new generation.
    pub async fn install(&self, config: Config) -> Result<u64, String> {
        let current = self.snapshot();
        if config.server.listen != current.config.server.listen
            || config.server.admin_listen != current.config.server.admin_listen
            || config.server.workers != current.config.server.workers
        {
            tracing::warn!("listen addresses and worker count change only on restart; the rest of the new config applies now");
        }
        let generation = {
            let _guard = self
                .reload_lock
                .lock()
                .map_err(|_| "reload lock poisoned".to_string())?;
            self.generation.load(Ordering::Acquire) + 1
        };
        let snap = Snapshot::build(config, generation, Some(&current))?;
        if let Some(jwks) = snap.jwks() {
            let reused = current.jwks().is_some_and(|c| Arc::ptr_eq(c, jwks));
            if !reused {
                if !jwks.initial_fetch(Duration::from_secs(10)).await {
                    tracing::warn!(
                        url = jwks.url(),
                        "new JWKS is not reachable yet; JWT requests get 503 until it is"
                    );
                }
                jwks.spawn_refresher(self.draining.clone());
            }
        }
        if let Some(d) = snap.oidc_discovery() {
            let reused = current.oidc_discovery().is_some_and(|c| Arc::ptr_eq(c, d));
            if !reused {
                if !d.initial_fetch(Duration::from_secs(10)).await {
                    tracing::warn!(
                        url = d.url(),
                        "the new OIDC provider is not reachable yet; sign-in answers 503 until it is"
                    );
                }
                d.spawn_refresher(self.draining.clone());
            }
        }
        let _guard = self
            .reload_lock
            .lock()
            .map_err(|_| "reload lock poisoned".to_string())?;
        self.generation.store(generation, Ordering::Release);
        self.snapshot.store(Arc::new(snap));
        crate::metrics::get()
            .config_generation
            .set(generation as i64);
        Ok(generation)
    }

    /// Ready: not draining, JWKS (if any) loaded, upstream accepting TCP connections.
    pub async fn readiness(&self) -> Readiness {
        let snap = self.snapshot();
        let jwks_ok = snap.jwks().is_none_or(|j| j.has_keys())
            && snap.oidc_discovery().is_none_or(|d| d.ready());
        if jwks_ok {
            self.jwks_ready.store(true, Ordering::Release);
        }
        let authority = snap.config.upstream.authority.clone();
        let port = authority
            .port_u16()
            .unwrap_or(if snap.config.upstream.scheme_https {
                443
            } else {
                80
            });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let upstream_ok = matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
        let draining = self.draining.is_cancelled();
        Readiness {
            ready: jwks_ok && upstream_ok && !draining,
            config_generation: snap.generation,
            jwks_ok,
            upstream_ok,
            draining,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub config_generation: u64,
    pub jwks_ok: bool,
    pub upstream_ok: bool,
    pub draining: bool,
}
