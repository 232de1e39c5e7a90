//! The batcher: one thread that takes items from the queue, parses them, numbers each
//! record with the sender id and a sequence number reserved on disk ([`State`]), writes
//! them as NDJSON, compresses full or lingering batches and hands each to every replica's
//! backlog. It also adds the drop reports.

use std::borrow::Cow;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use sawmill_record::Key;
use time::OffsetDateTime;

use crate::ack::AckTracker;
use crate::event::Event;
use crate::forward::{Batch, Replica};
use crate::metrics::Metrics;
use crate::parse::{self, Parser};
use crate::queue::Queue;
use crate::report::DropReports;
use crate::state::State;

/// When a batch is sent.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Once it holds this many records …
    pub records: usize,
    /// … or this many bytes of NDJSON …
    pub bytes: usize,
    /// … or its first record has waited this long.
    pub linger: Duration,
}

pub struct Batcher {
    pub queue: Queue,
    pub parser: Parser,
    pub state: State,
    /// The state directory, for log lines.
    pub state_dir: PathBuf,
    pub replicas: Vec<Arc<Replica>>,
    pub metrics: Arc<Metrics>,
    /// The `host` of records whose source names none.
    pub host: String,
    pub config: BatchConfig,
    pub reports: DropReports,
    /// Set while sequence numbers cannot be reserved on disk.
    pub outage: Option<StateOutage>,
}

/// An episode in which the state directory could not be written (full or read-only disk).
pub struct StateOutage {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// Records sent without a key meanwhile.
    unkeyed: u64,
}

/// Retries of a failed reservation start this far apart and double up to the maximum.
const STATE_RETRY_FIRST: Duration = Duration::from_millis(50);
const STATE_RETRY_MAX: Duration = Duration::from_secs(1);

/// The batch being filled.
#[derive(Default)]
struct Pending {
    acks: Vec<(Arc<AckTracker>, Range<u64>)>,
    ndjson: Vec<u8>,
    records: u64,
    /// Records a source can read again (file lines).
    rereadable: u64,
    received_sum: i128,
    since: Option<Instant>,
    /// Holds a drop report: sent at once, never evicted.
    pinned: bool,
}

/// How long the batcher naps when the queue is empty, and how many naps in a row before
/// it parks until the next push.
const NAP: Duration = Duration::from_millis(2);
const IDLE_NAPS: u32 = 3;

impl Batcher {
    /// Batches until `stop` is raised and the queue is empty.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut p = Pending::default();
        let mut idle_naps = 0;
        loop {
            let wait = p
                .since
                .map_or(self.config.linger, |s| {
                    self.config.linger.saturating_sub(s.elapsed())
                })
                .max(Duration::from_millis(1));
            // Under load the batcher naps instead of parking on the queue: a parked reader
            // makes every push pay a wake-up syscall, on the socket reader's time.
            let item = match self.queue.try_pop() {
                Some(item) => {
                    idle_naps = 0;
                    Some(item)
                }
                None if idle_naps < IDLE_NAPS => {
                    idle_naps += 1;
                    std::thread::sleep(NAP.min(wait));
                    None
                }
                None => match self.queue.pop(wait) {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Some(item) = item {
                let ev = parse::event(item, &self.parser, &self.metrics);
                self.add(&mut p, ev);
            }
            if self
                .outage
                .as_ref()
                .is_some_and(|o| Instant::now() >= o.retry_at)
            {
                // Recover without waiting for the next record.
                self.reserved(1);
            }
            // A stop makes a last round of reports: drops of the last moments are reported
            // like any others.
            let stopping = stop.load(Relaxed) && self.queue.is_empty();
            for ev in self.reports.due(&self.metrics, &self.replicas, stopping) {
                self.add(&mut p, ev);
                p.pinned = true;
            }
            let full =
                p.records as usize >= self.config.records || p.ndjson.len() >= self.config.bytes;
            let due = p.since.is_some_and(|s| s.elapsed() >= self.config.linger);
            if full || due || (p.pinned && p.records > 0) {
                self.flush(&mut p);
            }
            if stopping {
                self.flush(&mut p);
                return;
            }
        }
        self.flush(&mut p);
    }

    /// Writes `ev` into the pending batch, with its key: the one its source fixed (a file
    /// and an offset), or the next sequence number, or none if no number could be saved.
    fn add(&mut self, p: &mut Pending, mut ev: Event) {
        match &ev.key {
            Some((src, seq)) => {
                let key = Key {
                    src: Cow::Borrowed(src),
                    seq: *seq,
                };
                ev.write_record(&mut p.ndjson, Some(key), &self.host)
            }
            None => {
                let key = self.number().map(|seq| Key {
                    src: Cow::Borrowed(&self.state.src),
                    seq,
                });
                ev.write_record(&mut p.ndjson, key, &self.host)
            }
        }
        // Only once the record is in the batch: an ack released for a record that was
        // not sent would let its source's checkpoint pass a line never sent.
        if let Some((t, range)) = ev.ack.take() {
            p.rereadable += 1;
            // A source's lines arrive in order: one range per source and batch.
            match p.acks.last_mut() {
                Some((last, r)) if Arc::ptr_eq(last, &t) && r.end == range.start => {
                    r.end = range.end
                }
                _ => p.acks.push((t, range)),
            }
        }
        p.records += 1;
        p.received_sum += ev
            .received
            .unwrap_or_else(OffsetDateTime::now_utc)
            .unix_timestamp_nanos()
            / 1000;
        p.since.get_or_insert_with(Instant::now);
    }

    /// The next sequence number, if it is reserved on disk. Otherwise none: a number not
    /// made durable would be handed out again after a restart, and the indexer would drop
    /// the record that then carries it as a duplicate. A record without a number goes
    /// without a key (issue 10, B2): stored, though a resend may store it twice.
    fn number(&mut self) -> Option<u64> {
        match self.reserved(1).then(|| self.state.next_seq()) {
            Some(Ok(s)) => Some(s),
            _ => {
                self.metrics.unkeyed();
                if let Some(o) = &mut self.outage {
                    o.unkeyed += 1;
                }
                None
            }
        }
    }

    /// Whether the next `n` sequence numbers are reserved on disk, reserving them if
    /// needed. After a failure, tries again only once its backoff has passed; logs ERROR
    /// once per episode and INFO when it ends.
    fn reserved(&mut self, n: u64) -> bool {
        // Called for every record: the clock is read only during an outage.
        if self
            .outage
            .as_ref()
            .is_some_and(|o| Instant::now() < o.retry_at)
        {
            return false;
        }
        match self.state.reserve(n) {
            Ok(()) => {
                if let Some(o) = self.outage.take() {
                    self.metrics
                        .state_writable(o.unkeyed, o.since.elapsed().as_secs());
                }
                true
            }
            Err(e) => {
                let now = Instant::now();
                match &mut self.outage {
                    Some(o) => {
                        o.backoff = (o.backoff * 2).min(STATE_RETRY_MAX);
                        o.retry_at = now + o.backoff;
                    }
                    None => {
                        self.metrics.state_unwritable(&e, &self.state_dir);
                        self.outage = Some(StateOutage {
                            since: now,
                            retry_at: now + STATE_RETRY_FIRST,
                            backoff: STATE_RETRY_FIRST,
                            unkeyed: 0,
                        });
                    }
                }
                false
            }
        }
    }

    /// Compresses the pending batch and hands it to every replica's backlog.
    fn flush(&self, p: &mut Pending) {
        if p.records == 0 {
            return;
        }
        // zstd at level 1 compresses log lines about as well as gzip at a fraction of the CPU.
        let body = zstd::bulk::compress(&p.ndjson, 1).unwrap_or_else(|_| p.ndjson.clone());
        let acks = std::mem::take(&mut p.acks);
        let batch = Arc::new(Batch::new(
            body,
            p.records,
            p.rereadable,
            p.pinned,
            p.received_sum,
            acks,
        ));
        for r in &self.replicas {
            r.push(batch.clone(), &self.metrics);
        }
        *p = Pending::default();
    }
}
