//! One fetch per key at a time: the map of fetches in progress, and the guarantee that a fetch task
//! which ends in any way (its result, a panic, its runtime going away) releases its key and wakes
//! every waiter. Without it, one panic left a finished-but-listed fetch behind and its URL answered
//! 500 until a restart, never asking the origin again.
//!
//! The release is a drop guard owned by the task, so unwinding runs it; the waiters hold clones of
//! one shared future over the task's `JoinHandle`, so a panic reaches them as an internal error.
//! Each entry also carries the body as it arrives ([`Arrivals`]): the task owns the one [`Tap`], so
//! its end in any way is seen by every reader too.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use prometheus::IntGauge;

use crate::error::FetchError;
use crate::origin::arriving::{Arrivals, Tap};

/// The outcome of a fetch, shared by every waiter.
pub type FetchResult = Result<Arc<crate::cache::CachedObject>, FetchError>;
/// What waiters of one fetch hold.
pub type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// What a caller of one fetch holds: its outcome, and its body as it arrives.
#[derive(Clone)]
pub struct Joined {
    pub result: SharedFetch,
    pub arrivals: Arrivals,
}

type Map<K> = Arc<Mutex<HashMap<K, Joined>>>;

/// See the module docs.
pub struct InFlight<K> {
    map: Map<K>,
    /// Fetch tasks running (`gateway_origin_in_flight`); moved by the guard, so never left high.
    gauge: IntGauge,
}

impl<K> std::fmt::Debug for InFlight<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("fetches", &lock(&self.map).len())
            .finish()
    }
}

fn lock<K>(map: &Mutex<HashMap<K, Joined>>) -> MutexGuard<'_, HashMap<K, Joined>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// Owned by a fetch task from its first poll: on drop (completion, panic, cancellation) the key is
/// released and the gauge goes down.
struct Release<K: Eq + Hash> {
    map: Map<K>,
    key: Option<K>,
    gauge: IntGauge,
}

impl<K: Eq + Hash> Drop for Release<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.map).remove(&key);
        }
        self.gauge.dec();
    }
}

impl<K> InFlight<K>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            map: Arc::new(Mutex::new(HashMap::new())),
            gauge,
        }
    }

    /// Joins the fetch of `key` in progress, or spawns `start(tap)` as its task. The second value is
    /// true when this call started it.
    pub fn join_or_start<F>(&self, key: &K, start: impl FnOnce(Tap) -> F) -> (Joined, bool)
    where
        F: Future<Output = FetchResult> + Send + 'static,
    {
        let mut map = lock(&self.map);
        if let Some(joined) = map.get(key) {
            return (joined.clone(), false);
        }
        let (tap, arrivals) = Tap::new();
        let work = start(tap);
        let release_map = Arc::clone(&self.map);
        let release_key = key.clone();
        let gauge = self.gauge.clone();
        // The map stays locked until the entry is inserted below, so the guard (which locks it)
        // cannot remove the key before it is there, however fast the task ends.
        let handle = tokio::spawn(async move {
            gauge.inc();
            let _release = Release {
                map: release_map,
                key: Some(release_key),
                gauge,
            };
            work.await
        });
        let shared = async move {
            match handle.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(FetchError::Internal("fetch task panicked".into())),
                Err(e) => Err(FetchError::Internal(format!("fetch task ended: {e}"))),
            }
        }
        .boxed()
        .shared();
        let joined = Joined {
            result: shared,
            arrivals,
        };
        map.insert(key.clone(), joined.clone());
        (joined, true)
    }

    /// Fetches in progress.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn gauge() -> IntGauge {
        IntGauge::new("test_in_flight", "test").expect("gauge")
    }

    #[tokio::test]
    async fn a_panicking_fetch_releases_its_key_and_wakes_waiters_with_an_error() {
        let in_flight: InFlight<String> = InFlight::new(gauge());
        let key = "/live/index.m3u8".to_owned();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let (first, started) = in_flight.join_or_start(&key, |_tap| async move {
            if gate_rx.await.is_ok() {
                panic!("arithmetic on origin input");
            }
            Err(FetchError::CircuitOpen)
        });
        assert!(started);
        let (waiter, started) =
            in_flight.join_or_start(&key, |_tap| async { Err(FetchError::CircuitOpen) });
        assert!(!started, "a second caller joins the running fetch");
        assert_eq!(in_flight.len(), 1);
        assert_eq!(in_flight.gauge.get(), 0, "not polled yet");
        let _ = gate_tx.send(());
        for result in [first.result.await, waiter.result.await] {
            assert!(
                matches!(&result, Err(FetchError::Internal(m)) if m.contains("panicked")),
                "{result:?}"
            );
        }
        assert!(in_flight.is_empty(), "the key is released after a panic");
        assert_eq!(in_flight.gauge.get(), 0, "the gauge is back down");

        // The next request starts a new fetch, which is served.
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let (next, started) = in_flight.join_or_start(&key, move |_tap| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(FetchError::TooLarge(7)) }
        });
        assert!(started, "the key is not poisoned");
        assert_eq!(next.result.await.err(), Some(FetchError::TooLarge(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(in_flight.is_empty());
    }

    #[tokio::test]
    async fn a_fetch_that_ends_at_once_is_not_left_listed() {
        let in_flight: InFlight<u32> = InFlight::new(gauge());
        for i in 0..100 {
            let (fetch, started) =
                in_flight.join_or_start(&i, |_tap| async { Err(FetchError::CircuitOpen) });
            assert!(started);
            assert_eq!(fetch.result.await.err(), Some(FetchError::CircuitOpen));
        }
        tokio::task::yield_now().await;
        assert!(in_flight.is_empty());
        assert_eq!(in_flight.gauge.get(), 0);
    }
}
