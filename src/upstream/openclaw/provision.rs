//! `[openclaw] people = "provision"`: which people scopegate has made known to the gateway, and who
//! waits for the next write.
//!
//! The gateway's WebSocket grant is `identityScopes[person] ∩ X-OpenClaw-Scopes`, and a person its
//! `identityScopes` does not list gets no scopes at all. In provision mode scopegate adds each new person
//! before forwarding their first WebSocket, through the gateway's own `config.patch` (see `admin_rpc`).
//! Each such write closes every live WebSocket on the gateway (close 4001 "gateway policy changed";
//! clients reconnect) and `config.patch` is limited to 30 writes a minute, so writes are:
//!
//! - **idempotent**: a person known to be present is never written again, and each write first reads
//!   the gateway's current `identityScopes` and adds only who is missing (so a restart of scopegate
//!   adds nobody twice);
//! - **batched**: everyone who arrives while a write is pending or being paced shares the next one;
//! - **paced**: at most one write per [`MIN_INTERVAL`];
//! - **bounded**: at most `provision_limit` people are ever added by one scopegate process, so a flood
//!   of new subjects cannot grow the gateway's config without limit;
//! - **pre-provisioned**: at startup the people scopegate's config names are checked and added in one
//!   write, so their first visits cost nobody a reconnect.
//!
//! This module is the bookkeeping only (no I/O, tested as plain data); `proxy::people` runs the writes.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::identity_key;

/// The least time between two `config.patch` writes: 30 a minute is the gateway's own limit.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// How long a write waits for more first visits to join it.
pub const BATCH_WINDOW: Duration = Duration::from_millis(200);

/// Why a person could not be provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionError {
    /// `provision_limit` people were added already.
    Limit(usize),
    /// The write failed (the gateway's or the session's words).
    Failed(String),
}

#[derive(Default)]
struct State {
    /// `identityScopes` keys known to be present at the gateway.
    present: HashSet<String>,
    /// Names waiting for the next write, in arrival order, and their keys.
    pending: Vec<String>,
    pending_keys: HashSet<String>,
    /// People this process added that the config does not name (the bound counts these and the
    /// pending ones).
    added: usize,
    /// How many pending names count against the bound.
    pending_counted: usize,
    /// Keys of the people the config names: never counted against the bound.
    named: HashSet<String>,
    /// The number of the write pending names will go into.
    next_batch: u64,
    /// The last failed write and why.
    last_failure: Option<(u64, String)>,
}

/// The provisioning state shared by every worker (one per process).
pub struct Provisioner {
    state: Mutex<State>,
    wake: Notify,
    finished: watch::Sender<u64>,
}

/// One write's worth of work, taken by the writer.
#[derive(Debug)]
pub struct Batch {
    pub number: u64,
    pub names: Vec<String>,
}

impl Default for Provisioner {
    fn default() -> Self {
        Provisioner::new()
    }
}

impl Provisioner {
    pub fn new() -> Provisioner {
        Provisioner {
            state: Mutex::new(State {
                next_batch: 1,
                ..State::default()
            }),
            wake: Notify::new(),
            finished: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain sets behind, still consistent enough to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `name` for the next write unless it is present or queued. `Ok(None)`: present already;
    /// `Ok(Some(batch))`: wait for that write.
    fn enqueue(&self, name: &str, limit: Option<usize>) -> Result<Option<u64>, ProvisionError> {
        let key = identity_key(name);
        let mut st = self.lock();
        if st.present.contains(&key) {
            return Ok(None);
        }
        if !st.pending_keys.contains(&key) {
            match limit {
                Some(limit) => {
                    if st.added + st.pending_counted >= limit {
                        return Err(ProvisionError::Limit(limit));
                    }
                    st.pending_counted += 1;
                }
                None => {
                    st.named.insert(key.clone());
                }
            }
            st.pending_keys.insert(key);
            st.pending.push(name.to_string());
        }
        let batch = st.next_batch;
        drop(st);
        self.wake.notify_one();
        Ok(Some(batch))
    }

    /// Queues the people the config names (startup, reload): not counted against the limit.
    pub fn preprovision<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            let _ = self.enqueue(n, None);
        }
    }

    /// Returns once `name` is present at the gateway: at once if known, else after the write that
    /// adds it.
    pub async fn ensure(&self, name: &str, limit: usize) -> Result<(), ProvisionError> {
        let Some(batch) = self.enqueue(name, Some(limit))? else {
            return Ok(());
        };
        let mut done = self.finished.subscribe();
        if done.wait_for(|n| *n >= batch).await.is_err() {
            return Err(ProvisionError::Failed("scopegate is shutting down".into()));
        }
        let st = self.lock();
        if st.present.contains(&identity_key(name)) {
            return Ok(());
        }
        Err(ProvisionError::Failed(match &st.last_failure {
            Some((n, why)) if *n == batch => why.clone(),
            _ => "the gateway's identityScopes was not updated".into(),
        }))
    }

    /// Whether `name` is known to be present at the gateway.
    pub fn is_present(&self, name: &str) -> bool {
        self.lock().present.contains(&identity_key(name))
    }

    /// How many people this process added that the config does not name.
    pub fn added(&self) -> usize {
        self.lock().added
    }

    /// Waits until something is queued.
    pub async fn wait_for_work(&self) {
        loop {
            if !self.lock().pending.is_empty() {
                return;
            }
            self.wake.notified().await;
        }
    }

    /// Takes everything queued as one write.
    pub fn take_batch(&self) -> Batch {
        let mut st = self.lock();
        let number = st.next_batch;
        st.next_batch += 1;
        st.pending_keys.clear();
        st.pending_counted = 0;
        Batch {
            number,
            names: std::mem::take(&mut st.pending),
        }
    }

    /// Records a write's outcome: `present` are the keys the gateway lists now (read before the
    /// write, plus the ones it added), `added` the names the write added.
    pub fn finish(&self, batch: &Batch, outcome: Result<(Vec<String>, Vec<String>), String>) {
        let mut st = self.lock();
        match outcome {
            Ok((present, added)) => {
                st.present.extend(present.iter().map(|k| identity_key(k)));
                let counted = added
                    .iter()
                    .filter(|n| !st.named.contains(&identity_key(n)))
                    .count();
                st.added += counted;
            }
            Err(why) => st.last_failure = Some((batch.number, why)),
        }
        drop(st);
        self.finished.send_replace(batch.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_person_seen_twice_is_written_once_and_the_limit_holds() {
        let p = Arc::new(Provisioner::new());
        let a1 = tokio::spawn({
            let p = p.clone();
            async move { p.ensure("Ann@Example.com", 2).await }
        });
        let a2 = tokio::spawn({
            let p = p.clone();
            async move { p.ensure("ann@example.com", 2).await }
        });
        let b = tokio::spawn({
            let p = p.clone();
            async move { p.ensure("bo", 2).await }
        });
        // Wait until all three are queued (each enqueues before it waits).
        for _ in 0..1000 {
            if p.lock().pending.len() == 2 && p.finished.receiver_count() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // The limit counts queued people: a third distinct person is refused now.
        assert_eq!(
            p.ensure("cy", 2).await,
            Err(ProvisionError::Limit(2)),
            "bounded"
        );
        p.wait_for_work().await;
        let batch = p.take_batch();
        assert_eq!(
            batch.names,
            vec!["Ann@Example.com", "bo"],
            "one entry per person"
        );
        let both: Vec<String> = vec!["Ann@Example.com".into(), "bo".into()];
        p.finish(&batch, Ok((both.clone(), both)));
        for h in [a1, a2, b] {
            assert_eq!(h.await.unwrap(), Ok(()));
        }
        // Present now: no further write is queued for either.
        assert_eq!(p.ensure("ANN@example.com", 2).await, Ok(()));
        assert!(p.lock().pending.is_empty());
        assert_eq!(p.added(), 2);
        assert_eq!(p.ensure("cy", 2).await, Err(ProvisionError::Limit(2)));
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_to_its_waiters_and_preprovisioning_is_not_counted() {
        let p = Arc::new(Provisioner::new());
        p.preprovision(&["listed".to_string()]);
        let w = tokio::spawn({
            let p = p.clone();
            async move { p.ensure("dee", 1).await }
        });
        for _ in 0..1000 {
            if p.lock().pending.len() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let batch = p.take_batch();
        assert_eq!(batch.names.len(), 2);
        p.finish(&batch, Err("config.patch: rate limited".into()));
        assert_eq!(
            w.await.unwrap(),
            Err(ProvisionError::Failed("config.patch: rate limited".into()))
        );
        assert!(!p.is_present("dee"));
    }
}
