//! Live sessions (WebSockets, event streams), each with what admitted it, so that access ends with the
//! credential.
//!
//! A WebSocket or a server-sent event stream outlives the request that opened it: the JWT that
//! admitted it expires, a reload removes the API token or the grant, a trusted peer stops being
//! trusted. Every relayed WebSocket (and event stream) registers here once, at its upgrade (or its
//! response), with its [`Admission`]; nothing is added to the path of ordinary requests. Two things
//! end a session, both through its [`Revoked`] receiver, which the relay waits on next to its sockets:
//!
//! - **expiry**: one timer for the whole process ([`Sessions::run_expiry`]) sleeps until the earliest
//!   deadline in an ordered set (`exp` plus leeway), revokes whatever is due and sleeps again — no timer
//!   per connection, no polling;
//! - **reload**: [`Sessions::redecide`] asks a judge (the proxy's, against the new snapshot) about every
//!   live session and revokes those it refuses.
//!
//! Revocation itself is a `oneshot` send; a WebSocket relay closes the client side with 1008 and the
//! reason, an event stream ends.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::identity::{AuthMethod, Peer};

/// What admitted a session, kept to re-decide it later (scope names, not bits: a reload may change
/// the catalogue).
#[derive(Debug, Clone)]
pub struct Admission {
    pub subject: String,
    pub method: AuthMethod,
    pub groups: Vec<String>,
    /// Scopes the credential itself carried.
    pub credential_scopes: Vec<String>,
    /// The identity's effective scopes when it was admitted.
    pub effective: Vec<String>,
    /// The API token's digest, for an API-token session.
    pub token_digest: Option<[u8; 32]>,
    /// For a signed-in browser's session: the sealed session's end, which with the subject names
    /// the sign-in (so that signing out ends the connections it opened).
    pub signed_in_until: Option<u64>,
    pub peer: Peer,
    /// For the audit line.
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    pub path: String,
}

/// Why a session ended; the relay's close reason and the audit line's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub code: &'static str,
    pub reason: String,
}

/// A session's end signal, awaited by its relay.
pub type Revoked = oneshot::Receiver<Revocation>;

struct Entry {
    admission: Arc<Admission>,
    deadline: Option<Instant>,
    revoke: Option<oneshot::Sender<Revocation>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, Entry>,
    deadlines: BTreeSet<(Instant, u64)>,
}

/// The registry of live sessions (one per process).
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
    /// Woken when a deadline earlier than the one the timer sleeps for is added.
    earlier: Notify,
}

/// A registered session: deregisters on drop (whichever way the relay ended).
pub struct Registration {
    id: u64,
    sessions: Arc<Sessions>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.remove(self.id);
    }
}

/// A revoked session, for the revoker's audit line.
pub struct Ended {
    pub admission: Arc<Admission>,
    pub revocation: Revocation,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session that ends at `deadline` (if any) or when revoked.
    pub fn register(
        self: &Arc<Self>,
        admission: Admission,
        deadline: Option<Instant>,
    ) -> (Registration, Revoked) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let first = inner.deadlines.first().map(|(d, _)| *d);
        if let Some(d) = deadline {
            inner.deadlines.insert((d, id));
        }
        inner.live.insert(
            id,
            Entry {
                admission: Arc::new(admission),
                deadline,
                revoke: Some(tx),
            },
        );
        drop(inner);
        if deadline.is_some_and(|d| first.is_none_or(|f| d < f)) {
            self.earlier.notify_one();
        }
        crate::metrics::get().live_sessions.inc();
        (
            Registration {
                id,
                sessions: self.clone(),
            },
            rx,
        )
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.live.remove(&id) {
            if let Some(d) = e.deadline {
                inner.deadlines.remove(&(d, id));
            }
            crate::metrics::get().live_sessions.dec();
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the revocation to session `id`; the entry stays until its relay ends and drops it.
    fn revoke_locked(inner: &mut Inner, id: u64, why: Revocation) -> Option<Ended> {
        let e = inner.live.get_mut(&id)?;
        let tx = e.revoke.take()?;
        let admission = e.admission.clone();
        if let Some(d) = e.deadline.take() {
            inner.deadlines.remove(&(d, id));
        }
        let _ = tx.send(why.clone());
        Some(Ended {
            admission,
            revocation: why,
        })
    }

    /// Revokes every session whose deadline is at or before `now`; returns them.
    pub fn expire_due(&self, now: Instant) -> Vec<Ended> {
        let mut inner = self.lock();
        let mut ended = Vec::new();
        while let Some(&(d, id)) = inner.deadlines.first() {
            if d > now {
                break;
            }
            inner.deadlines.remove(&(d, id));
            if let Some(e) = inner.live.get_mut(&id) {
                e.deadline = None;
            }
            let why = Revocation {
                code: "credential_expired",
                reason: "the credential that admitted this session expired".into(),
            };
            ended.extend(Self::revoke_locked(&mut inner, id, why));
        }
        ended
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock().deadlines.first().map(|(d, _)| *d)
    }

    /// The process's one expiry timer: sleeps until the earliest deadline, revokes what is due and
    /// hands it to `ended` (the audit line), until `stop`.
    pub async fn run_expiry(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
        ended: impl Fn(Ended),
    ) {
        loop {
            // Registered before reading the deadline, so an earlier one added in between wakes us.
            let earlier = self.earlier.notified();
            tokio::pin!(earlier);
            earlier.as_mut().enable();
            let next = self.next_deadline();
            let sleep = async {
                match next {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut earlier => continue,
                _ = sleep => {}
            }
            for e in self.expire_due(Instant::now()) {
                ended(e);
            }
        }
    }

    /// Asks `judge` about every live session (after a reload) and revokes those it refuses.
    pub fn redecide(&self, judge: impl Fn(&Admission) -> Option<Revocation>) -> Vec<Ended> {
        let mut inner = self.lock();
        let verdicts: Vec<(u64, Revocation)> = inner
            .live
            .iter()
            .filter(|(_, e)| e.revoke.is_some())
            .filter_map(|(id, e)| judge(&e.admission).map(|r| (*id, r)))
            .collect();
        verdicts
            .into_iter()
            .filter_map(|(id, why)| Self::revoke_locked(&mut inner, id, why))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(subject: &str) -> Admission {
        Admission {
            subject: subject.into(),
            method: AuthMethod::Jwt,
            groups: Vec::new(),
            credential_scopes: vec!["operator.read".into()],
            effective: vec!["operator.read".into()],
            token_digest: None,
            signed_in_until: None,
            peer: Peer::Unix,
            request_id: "r".into(),
            client_ip: None,
            path: "/".into(),
        }
    }

    #[tokio::test]
    async fn the_one_timer_ends_each_session_at_its_own_deadline() {
        let s = Arc::new(Sessions::new());
        let ended = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let timer = tokio::spawn({
            let (s, ended, stop) = (s.clone(), ended.clone(), stop.clone());
            async move {
                s.run_expiry(stop, |e| {
                    ended.lock().unwrap().push(e.admission.subject.clone())
                })
                .await
            }
        });
        let t0 = Instant::now();
        let (late_at, soon_at) = (Duration::from_millis(900), Duration::from_millis(300));
        let (_late, mut late_rx) = s.register(admission("late"), Some(t0 + late_at));
        let (_never, mut never_rx) = s.register(admission("never"), None);
        // Registered after the timer went to sleep for the later one: it must wake for this one.
        tokio::task::yield_now().await;
        let (_soon, soon_rx) = s.register(admission("soon"), Some(t0 + soon_at));
        let five = Duration::from_secs(5);
        let got = tokio::time::timeout(five, soon_rx)
            .await
            .expect("in time")
            .expect("revoked");
        assert_eq!(got.code, "credential_expired");
        let at = t0.elapsed();
        assert!(at >= soon_at && at < late_at, "at its deadline: {at:?}");
        assert!(late_rx.try_recv().is_err(), "the later one is still live");
        let got = tokio::time::timeout(five, &mut late_rx)
            .await
            .expect("in time")
            .expect("revoked");
        assert_eq!(got.code, "credential_expired");
        let at = t0.elapsed();
        assert!(
            at >= late_at && at < late_at + Duration::from_millis(500),
            "{at:?}"
        );
        assert!(never_rx.try_recv().is_err());
        assert_eq!(*ended.lock().unwrap(), vec!["soon", "late"]);
        stop.cancel();
        timer.await.unwrap();
    }

    #[test]
    fn redecide_revokes_what_the_judge_refuses_once_and_drop_deregisters() {
        let s = Arc::new(Sessions::new());
        let (keep, mut keep_rx) = s.register(admission("keep"), None);
        let (gone, mut gone_rx) = s.register(admission("gone"), None);
        let judge = |a: &Admission| {
            (a.subject == "gone").then(|| Revocation {
                code: "grant_removed",
                reason: "x".into(),
            })
        };
        let ended = s.redecide(judge);
        assert_eq!(ended.len(), 1);
        assert_eq!(gone_rx.try_recv().unwrap().code, "grant_removed");
        assert!(keep_rx.try_recv().is_err());
        // Already revoked: a second reload does not revoke (or audit) it again.
        assert!(s.redecide(judge).is_empty());
        assert_eq!(s.len(), 2);
        drop(gone);
        drop(keep);
        assert!(s.is_empty());
    }
}
