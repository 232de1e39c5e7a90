//! Where searches run, and how many at once: a pool of low-priority threads apart from the
//! async workers and the log thread that serve ingest; admission (a slot each, then a bounded
//! queue, then 429); and each search's [`Budget`], a deadline and a cancel flag that the
//! collectors check between blocks of documents, so a search past its time stops working
//! instead of only being abandoned.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use crate::error::{Error, Result};
use crate::metrics::{Metrics, M};

/// How many searches run at once, how many wait, and for how long. Every field is a flag of
/// `sawmill indexer`.
#[derive(Clone, Debug)]
pub struct SearchLimits {
    /// Searches running at once; also the number of search threads.
    pub max_concurrent: usize,
    /// Searches waiting for a slot; beyond this, 429.
    pub queue: usize,
    /// Longest wait for a slot; beyond this, 503.
    pub queue_timeout: Duration,
    /// Longest a search may run; beyond this it is stopped, 504.
    pub timeout: Duration,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            max_concurrent: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            queue: 64,
            queue_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What one search may spend: checked between segments and blocks of documents.
#[derive(Clone, Debug)]
pub struct Budget {
    deadline: Instant,
    timeout: Duration,
    cancelled: Arc<AtomicBool>,
}

impl Budget {
    fn new(timeout: Duration, cancelled: Arc<AtomicBool>) -> Budget {
        let now = Instant::now();
        Budget {
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(1 << 32)),
            timeout,
            cancelled,
        }
    }

    /// `Err` once the search must stop: its time is up, or nobody waits for it any more.
    pub fn check(&self) -> Result<()> {
        if self.cancelled.load(Relaxed) {
            return Err(Error::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(Error::SearchTimeout {
                timeout: self.timeout,
            });
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The search threads and their admission; cheap to clone.
#[derive(Clone)]
pub struct Searches {
    inner: Arc<Inner>,
}

struct Inner {
    limits: SearchLimits,
    slots: Arc<Semaphore>,
    queued: AtomicU64,
    jobs: crossbeam_channel::Sender<Job>,
    metrics: Arc<Metrics>,
}

/// Ingest's threads keep their CPU share while searches fill the rest: at nice 10 a search
/// thread weighs about a tenth of a normal one in the kernel's scheduler.
const SEARCH_NICE: i32 = 10;

impl Searches {
    /// Starts `limits.max_concurrent` search threads; they end when the last clone is dropped.
    pub fn start(limits: SearchLimits, metrics: Arc<Metrics>) -> Searches {
        let threads = limits.max_concurrent.max(1);
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sawmill-search-{i}"))
                .spawn(move || {
                    lower_priority();
                    for job in rx {
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "Could not start a search thread.");
            }
        }
        Searches {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(threads)),
                limits,
                queued: AtomicU64::new(0),
                jobs: tx,
                metrics,
            }),
        }
    }

    /// Takes a slot (waiting in the queue if need be), then runs `f` on a search thread with
    /// a fresh budget. If the caller goes away (the client disconnected), the search is
    /// cancelled at its next check.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Budget) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = &self.inner;
        let m = &inner.metrics;
        let slot = match inner.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let waiting = inner.queued.fetch_add(1, Relaxed);
                m.add(M::SearchesQueued, 1);
                let _leave = Leave(&inner.queued, m);
                if waiting >= inner.limits.queue as u64 {
                    m.add(M::SearchesRejectedQueueFull, 1);
                    return Err(Error::Busy {
                        running: inner.limits.max_concurrent,
                        queued: waiting as usize,
                    });
                }
                match tokio::time::timeout(
                    inner.limits.queue_timeout,
                    inner.slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return Err(Error::ShuttingDown),
                    Err(_) => {
                        m.add(M::SearchesRejectedQueueTimeout, 1);
                        return Err(Error::QueueTimeout {
                            waited: inner.limits.queue_timeout,
                        });
                    }
                }
            }
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let cancel = CancelOnDrop(Some(cancelled.clone()));
        let timeout = inner.limits.timeout;
        let metrics = inner.metrics.clone();
        let res = self
            .spawn(move || {
                metrics.add(M::SearchesRunning, 1);
                // Left however `f` ends, a panic included.
                let _running = Running(&metrics);
                // The clock starts when the search does: waiting had its own limit.
                let res = f(&Budget::new(timeout, cancelled));
                drop(slot);
                match &res {
                    Err(Error::SearchTimeout { .. }) => {
                        metrics.add(M::SearchesTimedOut, 1);
                    }
                    Err(Error::Cancelled) => {
                        metrics.add(M::SearchesCancelled, 1);
                    }
                    _ => {}
                }
                res
            })
            .await
            .and_then(|r| r);
        cancel.disarm();
        res
    }

    /// Runs `f` on a search thread without taking a slot: the rest of the work of a search
    /// that had one, such as reading a streamed answer's hits as the client takes them.
    pub async fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic in tantivy or a collector must cost one answer (a 500), not a search
            // thread: the pool never regrows, and with every thread gone each search would
            // be refused until a restart.
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(Error::from_panic);
            let _ = tx.send(res);
        });
        self.inner.jobs.send(job).map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Leaves the queue, however the wait ends.
struct Leave<'a>(&'a AtomicU64, &'a Metrics);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
        self.1.sub(M::SearchesQueued, 1);
    }
}

/// Counts a search as running until dropped, however it ends.
struct Running<'a>(&'a Metrics);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.sub(M::SearchesRunning, 1);
    }
}

/// Cancels the search if the request is dropped before its answer arrives.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Relaxed);
        }
    }
}

fn lower_priority() {
    // SAFETY: plain system calls on the calling thread (Linux gives each thread its own nice
    // value; `who` is this thread's id).
    let res = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SEARCH_NICE)
    };
    if res != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "Could not lower a search thread's priority.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_search_costs_its_answer_not_the_thread() {
        // Review: a panic ended the pool's only thread for good, and every later search was
        // refused as "shutting down" until a restart.
        let metrics = Arc::new(Metrics::default());
        let searches = Searches::start(
            SearchLimits {
                max_concurrent: 1,
                ..SearchLimits::default()
            },
            metrics.clone(),
        );
        let res = searches
            .run(|_| -> Result<()> { panic!("a bug in a collector") })
            .await;
        assert!(
            matches!(&res, Err(Error::Panicked(m)) if m.contains("collector")),
            "{res:?}"
        );
        for _ in 0..3 {
            assert_eq!(searches.run(|_| Ok(7)).await.unwrap(), 7);
        }
        assert_eq!(metrics.get(M::SearchesRunning), 0);
    }
}
