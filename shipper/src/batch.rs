//! The batcher: one thread that takes items from the queue, parses them, numbers each
//! record with the sender id and a sequence number reserved on disk ([`State`]), places it
//! on one group (rendezvous hashing of its sender and block of sequence numbers, see
//! `sawmill_cluster::placement`), writes it as NDJSON into that group's batch, compresses
//! full or lingering batches and hands each to the backlog of every replica of its group.
//! It also adds the drop reports.

use std::borrow::Cow;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use sawmill_cluster::{group_for, PlacementKey};
use sawmill_record::Key;
use time::OffsetDateTime;

use crate::ack::AckTracker;
use crate::event::Event;
use crate::fleet::Fleet;
use crate::forward::{Batch, BatchParts};
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
    /// The replicas, by group, as discovery finds them.
    pub fleet: Fleet,
    pub metrics: Arc<Metrics>,
    /// The `host` of records whose source names none.
    pub host: String,
    pub config: BatchConfig,
    pub reports: DropReports,
    /// Set while sequence numbers cannot be reserved on disk.
    pub outage: Option<StateOutage>,
    /// The batches being filled, one per group.
    pub placing: Placing,
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

/// The batch being filled for one group.
#[derive(Default)]
struct Pending {
    group: String,
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

/// Which group each record goes to, and the batch being filled for each: one per group,
/// so that batches stay as large as with one group, each cut at the usual limits.
#[derive(Default)]
pub struct Placing {
    /// In the order of the fleet's group names.
    pending: Vec<Pending>,
    /// The last block placed (sender, block) and its group's index: consecutive records
    /// of a sender share a block, so the hash is computed about once per block.
    last_src: String,
    last: Option<(u64, usize)>,
    /// Records placed without a key so far (see [`Placing::unkeyed`]).
    unkeyed: u64,
}

impl Placing {
    /// The index of the group (`key`'s, or `group` when it is one of them) a record goes
    /// to; none while no group is known.
    fn place(&mut self, src: &str, at: At, group: Option<&str>) -> Option<usize> {
        if let Some(i) = group.and_then(|g| self.pending.iter().position(|p| p.group == g)) {
            return Some(i);
        }
        let key = match at {
            At::Seq(seq) => PlacementKey::of(src, seq),
            At::Offset(offset) => PlacementKey::of_offset(src, offset),
        };
        if let Some((block, i)) = self.last {
            if block == key.block && self.last_src == src {
                return Some(i);
            }
        }
        let g = group_for(self.pending.iter().map(|p| p.group.as_str()), &key)?;
        let i = self.pending.iter().position(|p| p.group == g)?;
        self.last_src.clear();
        self.last_src.push_str(src);
        self.last = Some((key.block, i));
        Some(i)
    }

    /// The placement sequence of a record sent without a key (sequence numbers could not
    /// be saved): a per-process counter. Its group is still fixed for the record, since
    /// the record is never placed again: a resend is the same batch, kept by the same
    /// group's backlogs.
    fn unkeyed(&mut self) -> u64 {
        self.unkeyed += 1;
        // Far above any real sequence number, so these blocks are their own.
        u64::MAX / 2 + self.unkeyed
    }
}

/// Where a record is in its sender's stream, for placement.
#[derive(Clone, Copy, Debug)]
enum At {
    /// A sequence number (one per record).
    Seq(u64),
    /// A file line's byte offset.
    Offset(u64),
}

/// How long the batcher naps when the queue is empty, and how many naps in a row before
/// it parks until the next push.
const NAP: Duration = Duration::from_millis(2);
const IDLE_NAPS: u32 = 3;

/// How often the batcher looks for a group while none is known.
const NO_GROUP_NAP: Duration = Duration::from_millis(50);

impl Batcher {
    /// Batches until `stop` is raised and the queue is empty; returns the replicas, for
    /// the stop to drain.
    pub fn run(mut self, stop: &AtomicBool) -> Fleet {
        self.regroup();
        let mut idle_naps = 0;
        loop {
            if self.fleet.news() {
                // What is pending goes to the replicas it was placed for, before they change.
                self.flush_all();
                if self.fleet.refresh() {
                    self.regroup();
                }
            }
            if self.placing.pending.is_empty() {
                // No group known yet (no replica answered): records wait in the queue,
                // whose bound counts what sockets drop meanwhile; files and Docker wait.
                if stop.load(Relaxed) {
                    self.give_up_queue();
                    return self.fleet;
                }
                std::thread::sleep(NO_GROUP_NAP);
                continue;
            }
            let wait = self.wait();
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
                self.add(ev, None);
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
            for (ev, group) in self.reports.due(&self.metrics, stopping) {
                let i = self.add(ev, group.as_deref());
                if let Some(i) = i {
                    self.placing.pending[i].pinned = true;
                }
            }
            self.flush_due();
            if stopping {
                break;
            }
        }
        self.flush_all();
        self.fleet
    }

    fn flush_all(&mut self) {
        for i in 0..self.placing.pending.len() {
            self.flush(i);
        }
    }

    /// How long the oldest pending record may still wait.
    fn wait(&self) -> Duration {
        self.placing
            .pending
            .iter()
            .filter_map(|p| p.since)
            .map(|s| self.config.linger.saturating_sub(s.elapsed()))
            .min()
            .unwrap_or(self.config.linger)
            .max(Duration::from_millis(1))
    }

    /// Sends every batch that is full, has lingered long enough, or holds a drop report.
    fn flush_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.placing.pending.len() {
            let p = &self.placing.pending[i];
            let full =
                p.records as usize >= self.config.records || p.ndjson.len() >= self.config.bytes;
            let due = p
                .since
                .is_some_and(|s| now.saturating_duration_since(s) >= self.config.linger);
            if full || due || (p.pinned && p.records > 0) {
                self.flush(i);
            }
        }
    }

    /// The group names changed: what is pending goes where it was placed, and placement
    /// starts over with the new names. (A batch already queued for a group stays there.)
    fn regroup(&mut self) {
        self.flush_all();
        self.placing.pending = self
            .fleet
            .groups()
            .iter()
            .map(|g| Pending {
                group: g.clone(),
                ..Default::default()
            })
            .collect();
        self.placing.last = None;
    }

    /// Stopping before any replica said its group: what the queue holds cannot be placed.
    /// File lines are read again after a restart (their checkpoints stay before them); the
    /// rest is lost, counted (Docker's checkpoint was saved when its lines were queued).
    fn give_up_queue(&mut self) {
        let mut lost = 0;
        while let Some(item) = self.queue.try_pop() {
            let ev = parse::event(item, &self.parser, &self.metrics);
            if ev.ack.is_none() {
                lost += 1;
            }
        }
        if lost > 0 {
            self.metrics.lost(lost);
            tracing::error!(
                records = lost,
                "Stopped before any indexer replica said its group; these records are lost."
            );
        }
    }

    /// Writes `ev` into the pending batch of its group, with its key: the one its source
    /// fixed (a file and an offset), or the next sequence number, or none if no number
    /// could be saved. Its group is the one its key places it on (`group`, for a drop
    /// report about a replica of it). Returns the group's index.
    fn add(&mut self, mut ev: Event, group: Option<&str>) -> Option<usize> {
        let seq = match ev.key {
            Some(_) => None,
            None => self.number(),
        };
        let i = match (&ev.key, seq) {
            // Only file sources fix a key: a byte offset.
            (Some((src, at)), _) => self.placing.place(src, At::Offset(*at), group),
            (None, Some(at)) => self.placing.place(&self.state.src, At::Seq(at), group),
            (None, None) => {
                let at = self.placing.unkeyed();
                self.placing.place(&self.state.src, At::Seq(at), group)
            }
        }?;
        let p = &mut self.placing.pending[i];
        let key = match (&ev.key, seq) {
            (Some((src, seq)), _) => Some(Key {
                src: Cow::Borrowed(src.as_str()),
                seq: *seq,
            }),
            (None, Some(seq)) => Some(Key {
                src: Cow::Borrowed(self.state.src.as_str()),
                seq,
            }),
            (None, None) => None,
        };
        ev.write_record(&mut p.ndjson, key, &self.host);
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
        Some(i)
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

    /// Compresses group `i`'s pending batch and hands it to every replica of the group.
    fn flush(&mut self, i: usize) {
        let p = &mut self.placing.pending[i];
        if p.records == 0 {
            return;
        }
        // zstd at level 1 compresses log lines about as well as gzip at a fraction of the CPU.
        let body = zstd::bulk::compress(&p.ndjson, 1).unwrap_or_else(|_| p.ndjson.clone());
        let parts = BatchParts {
            records: p.records,
            rereadable: p.rereadable,
            pinned: p.pinned,
            received_micros_sum: p.received_sum,
            acks: std::mem::take(&mut p.acks),
        };
        let group = std::mem::take(&mut p.group);
        *p = Pending {
            group,
            ..Default::default()
        };
        let group = &self.placing.pending[i].group;
        let replicas = self.fleet.replicas_of(group);
        if replicas.is_empty() {
            // Every replica of the group was given up while the batch filled.
            self.metrics.lost(parts.records - parts.rereadable);
            for (t, range) in parts.acks {
                t.lose(range);
            }
            tracing::error!(%group, records = parts.records, "No replica of the group is left; its last batch is lost.");
            return;
        }
        let targets = replicas.iter().map(|r| r.m.clone()).collect();
        let short = self.fleet.shortfall(group);
        let batch = Arc::new(Batch::new(
            body,
            parts,
            targets,
            self.fleet.ack_replicas(),
            short,
        ));
        for r in &replicas {
            r.push(batch.clone(), &self.metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placing(groups: &[&str]) -> Placing {
        Placing {
            pending: groups
                .iter()
                .map(|g| Pending {
                    group: g.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_goes_where_group_for_says_whatever_came_before_it() {
        let groups = ["g0", "g1", "g2"];
        let mut p = placing(&groups);
        let mut seqs: Vec<u64> = (0..5_000).chain(0..5_000).collect();
        // Out of order too, as a resent or re-read record is: the block cache must not
        // answer for another block.
        seqs.extend((0..5_000).map(|_| fastrand::u64(..100_000)));
        for seq in seqs {
            let src = if seq % 3 == 0 { "host-a" } else { "host-b" };
            let want = group_for(groups, &PlacementKey::of(src, seq)).unwrap();
            let i = p.place(src, At::Seq(seq), None).unwrap();
            assert_eq!(groups[i], want, "{src} {seq}");
        }
    }

    #[test]
    fn one_busy_sender_spreads_over_the_groups() {
        let mut p = placing(&["g0", "g1"]);
        let mut counts = [0u64; 2];
        for seq in 0..60_000 {
            counts[p
                .place("host-0123456789abcdef", At::Seq(seq), None)
                .unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| c * 5 >= 60_000), "{counts:?}");
    }

    #[test]
    fn a_report_goes_to_the_group_it_names_or_else_by_its_key() {
        let mut p = placing(&["g0", "g1"]);
        assert_eq!(p.place("s", At::Seq(0), Some("g1")), Some(1));
        assert_eq!(p.place("s", At::Seq(0), Some("g0")), Some(0));
        let by_key = p.place("s", At::Seq(0), None);
        assert_eq!(p.place("s", At::Seq(0), Some("gone")), by_key);
        assert_eq!(
            placing(&[]).place("s", At::Seq(0), None),
            None,
            "no group known"
        );
    }

    #[test]
    fn a_file_keeps_its_lines_of_one_64k_block_together() {
        let groups = ["g0", "g1"];
        let mut p = placing(&groups);
        // Lines of about 100 bytes: every line of a 64 KiB block goes to one group.
        let first = p.place("file", At::Offset(65_536), None);
        for offset in (65_536..131_072).step_by(100) {
            assert_eq!(p.place("file", At::Offset(offset), None), first, "{offset}");
        }
        let want = group_for(groups, &PlacementKey::of_offset("file", 65_536)).unwrap();
        assert_eq!(first.map(|i| groups[i]), Some(want));
    }

    #[test]
    fn unkeyed_records_get_blocks_of_their_own() {
        let mut p = placing(&["g0", "g1"]);
        let first = p.unkeyed();
        assert!(first > u64::MAX / 2);
        assert_eq!(p.unkeyed(), first + 1);
    }
}
