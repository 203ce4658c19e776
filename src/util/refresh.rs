//! Keeping a fetched document fresh: the one loop behind the JWKS cache and OIDC discovery.
//!
//! Before the listener reports ready, [`initial_fetch`] fetches with exponential backoff (200 ms,
//! doubling, at most 5 s between tries) until the first success or until the deadline would pass.
//! Afterwards [`spawn_refresher`] fetches again every [`Refreshable::interval`] while the source is
//! ready, and every 2 s while it is not, until its cancellation token is cancelled. A failed fetch
//! keeps the last good document; the source logs and counts it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first wait between failed initial fetches; doubled after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between failed initial fetches.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a source that is not ready is fetched again in the background.
const NOT_READY_RETRY: Duration = Duration::from_secs(2);

/// Something fetched from the network and kept.
pub trait Refreshable: Send + Sync + 'static {
    /// Fetches once; `Err` keeps the last good state.
    fn refresh(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// True when the source holds what it needs to serve (keys, metadata).
    fn ready(&self) -> bool;
    /// How long to wait between background fetches while ready.
    fn interval(&self) -> Duration;
}

/// Fetches until the first success (`true`) or until the next wait would pass `deadline` (`false`).
/// The clock is tokio's (the same as `std::time::Instant` unless a test pauses time).
pub async fn initial_fetch<R: Refreshable + ?Sized>(source: &R, deadline: Duration) -> bool {
    let start = tokio::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if source.refresh().await.is_ok() {
            return true;
        }
        if start.elapsed() + backoff > deadline {
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Refreshes `source` in the background until `stop` is cancelled: every `interval()` while it is
/// ready, every 2 s while it is not.
pub fn spawn_refresher<R: Refreshable>(source: &Arc<R>, stop: CancellationToken) {
    let this = source.clone();
    tokio::spawn(async move {
        loop {
            let wait = if this.ready() {
                this.interval()
            } else {
                NOT_READY_RETRY
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let _ = this.refresh().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Fails until `succeed_from` calls have been made; counts calls.
    struct Source {
        calls: AtomicUsize,
        succeed_from: usize,
        ready: AtomicBool,
    }

    impl Source {
        fn new(succeed_from: usize) -> Arc<Source> {
            Arc::new(Source {
                calls: AtomicUsize::new(0),
                succeed_from,
                ready: AtomicBool::new(false),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Refreshable for Source {
        async fn refresh(&self) -> Result<(), String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.succeed_from {
                self.ready.store(true, Ordering::SeqCst);
                Ok(())
            } else {
                Err(format!("failure {n}"))
            }
        }
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(600)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn initial_fetch_backs_off_until_success() {
        // Fails at 0 ms, 200 ms, 600 ms, 1.4 s; succeeds at 3 s.
        let s = Source::new(5);
        let t0 = tokio::time::Instant::now();
        assert!(initial_fetch(&*s, Duration::from_secs(10)).await);
        assert_eq!(s.calls(), 5);
        assert_eq!(t0.elapsed(), Duration::from_millis(200 + 400 + 800 + 1600));
    }

    #[tokio::test(start_paused = true)]
    async fn initial_fetch_caps_the_backoff_and_gives_up_before_the_deadline() {
        let s = Source::new(usize::MAX);
        let t0 = tokio::time::Instant::now();
        assert!(!initial_fetch(&*s, Duration::from_secs(20)).await);
        // Waits 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 + 5 = 16.2 s; the next 5 s would pass 20 s.
        assert_eq!(t0.elapsed(), Duration::from_millis(16_200));
        assert_eq!(s.calls(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn refresher_retries_fast_until_ready_then_waits_the_interval_and_stops() {
        let s = Source::new(3);
        let stop = CancellationToken::new();
        spawn_refresher(&s, stop.clone());
        tokio::time::sleep(Duration::from_millis(6_100)).await;
        assert_eq!(s.calls(), 3, "every 2 s while not ready");
        tokio::time::sleep(Duration::from_secs(590)).await;
        assert_eq!(s.calls(), 3, "nothing before the interval once ready");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(s.calls(), 4);
        stop.cancel();
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert_eq!(s.calls(), 4, "no fetch after stop");
    }
}
