//! The shipper's counters, and the events that move them. Vector's internal events are the
//! model: [`METRICS`] lists every metric once (name, kind, help, label), each event below
//! bumps its counters and writes its log line in one place, and `/metrics` is a loop over
//! the list. A new metric is a field, a row and an event, all in this file.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use std::time::Duration;

use crate::event::Source;

/// How many [`Source`]s there are: the length of the per-source counter arrays.
const SOURCES: usize = Source::ALL.len();

#[derive(Default)]
pub struct Metrics {
    /// Per [`Source`], in the order of `Source::ALL`.
    received: [AtomicU64; SOURCES],
    queue_dropped: [AtomicU64; SOURCES],
    queue_pushed: AtomicU64,
    queue_popped: AtomicU64,
    parse_fallbacks: AtomicU64,
    /// Records every replica gave up on, but for file lines, which are read again.
    records_lost: AtomicU64,
    drop_reports: AtomicU64,
    latency_micros: AtomicU64,
    latency_records: AtomicU64,
    /// Records sent without a de-duplication key because no sequence number could be
    /// reserved on disk.
    state_unkeyed: AtomicU64,
    /// 1 while sequence numbers cannot be reserved (the state directory is full or
    /// read-only), else 0.
    state_unwritable: AtomicU64,
    /// `--tail` patterns that match no file at the last look.
    tail_patterns_unmatched: AtomicU64,
    /// Replicas given up after leaving discovery for longer than `--replica-grace`.
    replicas_given_up: AtomicU64,
    rows_made: AtomicU64,
    /// One row per replica: found by discovery as they come, kept after one is given up
    /// until its last drops were reported, and then up to [`GIVEN_UP_ROWS`] of those.
    replicas: RwLock<Vec<Arc<ReplicaMetrics>>>,
}

/// Rows of given-up replicas kept: a churning orchestrator gives every task a new
/// address, and the rows must not grow with the churn.
const GIVEN_UP_ROWS: usize = 64;

#[derive(Default)]
pub struct ReplicaMetrics {
    pub url: String,
    /// Unique among the rows ever made: a URL that comes back is a new row.
    pub id: u64,
    /// Its group; a fixed URL not yet heard from is presumed in `default` and may move.
    group: RwLock<String>,
    /// `live`, `gone` (left discovery, within its grace) or `given_up`.
    state: RwLock<&'static str>,
    /// Given up, and a drop report round has seen it since: every drop of it was reported,
    /// so the row may go.
    reported: AtomicBool,
    /// The replica id its `/healthz` said, once known: the same replica may come back at
    /// another address (a restarted pod), and must not count twice for `--ack-replicas`.
    replica_id: RwLock<Option<String>>,
    /// Its backlog has overflowed since the batcher last found it with nothing new given
    /// up: one log line per episode, not one per batch.
    pub overflowing: AtomicBool,
    batches_sent: AtomicU64,
    batches_acked: AtomicU64,
    batches_retried: AtomicU64,
    records_delivered: AtomicU64,
    records_dropped: AtomicU64,
    /// Of those, file lines every replica gave up, which the file source reads again.
    records_reread: AtomicU64,
    records_enqueued: AtomicU64,
    backlog_bytes: AtomicU64,
    backlog_records: AtomicU64,
}

/// How a metric's value is read.
enum Read {
    One(fn(&Metrics) -> u64),
    /// Seconds, printed with microseconds.
    Seconds(fn(&Metrics) -> f64),
    PerSource(fn(&Metrics) -> &[AtomicU64; SOURCES]),
    PerReplica(fn(&ReplicaMetrics) -> &AtomicU64),
    /// The replicas' labels: a series of its own, so the counters keep one label (`replica`)
    /// however a replica's group or state changes.
    Info,
}

/// One exported metric, `sawmill_shipper_{name}`.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: Read,
}

const fn counter(name: &'static str, help: &'static str, read: Read) -> Metric {
    Metric {
        name,
        kind: "counter",
        help,
        read,
    }
}

const fn gauge(name: &'static str, help: &'static str, read: Read) -> Metric {
    Metric {
        name,
        kind: "gauge",
        help,
        read,
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// Every metric the shipper exports, in the order `/metrics` shows them.
const METRICS: [Metric; 23] = [
    counter("records_received_total", "Records received, per source.", Read::PerSource(|m| &m.received)),
    counter("queue_records_dropped_total", "Records dropped because the queue was full, per source.", Read::PerSource(|m| &m.queue_dropped)),
    counter("queue_pushed_total", "Records put in the queue.", Read::One(|m| get(&m.queue_pushed))),
    counter("queue_popped_total", "Records taken from the queue.", Read::One(|m| get(&m.queue_popped))),
    counter("parse_fallbacks_total", "Syslog datagrams whose header could not be read (kept whole as the message).", Read::One(|m| get(&m.parse_fallbacks))),
    counter("records_lost_total", "Records given up by every replica (backlogs overflowed, or refused), but for file lines, which are read again.", Read::One(|m| get(&m.records_lost))),
    counter("drop_reports_total", "`sawmill dropped N records` records emitted.", Read::One(|m| get(&m.drop_reports))),
    counter("state_records_unkeyed_total", "Records sent without a de-duplication key because no sequence number could be reserved in the state directory (full or read-only).", Read::One(|m| get(&m.state_unkeyed))),
    counter("latency_records_total", "Records acknowledged by the first replica, for the latency mean.", Read::One(|m| get(&m.latency_records))),
    counter("latency_seconds_total", "Sum of receipt-to-acknowledgement times (divide by latency_records_total).", Read::Seconds(|m| get(&m.latency_micros) as f64 / 1e6)),
    gauge("queue_records", "Records waiting in the queue.", Read::One(|m| get(&m.queue_pushed).saturating_sub(get(&m.queue_popped)))),
    gauge("state_unwritable", "1 while sequence numbers cannot be reserved in the state directory: records are sent without a de-duplication key.", Read::One(|m| get(&m.state_unwritable))),
    gauge("tail_patterns_unmatched", "Tail patterns (--tail) that match no file; they are still watched.", Read::One(|m| get(&m.tail_patterns_unmatched))),
    counter("replicas_given_up_total", "Replicas given up after leaving discovery for longer than --replica-grace (their backlogs count as dropped for them).", Read::One(|m| get(&m.replicas_given_up))),
    gauge("replica_info", "1 per replica, with its group and state (live, gone: left discovery and within --replica-grace, given_up).", Read::Info),
    counter("batches_sent_total", "Batch requests sent, per replica.", Read::PerReplica(|r| &r.batches_sent)),
    counter("batches_acknowledged_total", "Batches acknowledged, per replica.", Read::PerReplica(|r| &r.batches_acked)),
    counter("batches_retried_total", "Batch requests that failed and will be retried, per replica.", Read::PerReplica(|r| &r.batches_retried)),
    counter("replica_records_enqueued_total", "Records handed to a replica's backlog.", Read::PerReplica(|r| &r.records_enqueued)),
    counter("replica_records_delivered_total", "Records a replica acknowledged.", Read::PerReplica(|r| &r.records_delivered)),
    counter("replica_records_dropped_total", "Records given up for a replica (its backlog overflowed).", Read::PerReplica(|r| &r.records_dropped)),
    gauge("backlog_bytes", "Compressed bytes waiting for a replica.", Read::PerReplica(|r| &r.backlog_bytes)),
    gauge("backlog_records", "Records waiting for a replica (in flight included).", Read::PerReplica(|r| &r.backlog_records)),
];

impl Metrics {
    /// A row for a replica discovery found. An older row of the same URL is removed once
    /// its drops were reported (a URL comes back with a fresh backlog); until then both are
    /// kept, and the metrics show the newer.
    pub fn add_replica(&self, url: &str, group: &str) -> Arc<ReplicaMetrics> {
        let row = Arc::new(ReplicaMetrics {
            url: url.to_string(),
            id: self.rows_made.fetch_add(1, Relaxed),
            group: RwLock::new(group.to_string()),
            state: RwLock::new("live"),
            ..Default::default()
        });
        let mut rows = self.replicas.write().unwrap();
        rows.retain(|r| r.url != url || !r.settled());
        rows.push(row.clone());
        row
    }

    /// The rows the metrics show: of several rows of one URL, the newest.
    fn shown(&self) -> Vec<Arc<ReplicaMetrics>> {
        let rows = self.replicas();
        let newest = |r: &Arc<ReplicaMetrics>| !rows.iter().any(|o| o.url == r.url && o.id > r.id);
        rows.iter().filter(|r| newest(r)).cloned().collect()
    }

    /// Every replica's row, given-up ones included.
    pub fn replicas(&self) -> Vec<Arc<ReplicaMetrics>> {
        self.replicas.read().unwrap().clone()
    }

    /// `row`'s replica left discovery for longer than its grace and its backlog was
    /// dropped (`records`, counted by [`ReplicaMetrics::dropped`]). Data is lost for it:
    /// ERROR.
    pub fn replica_given_up(&self, row: &ReplicaMetrics, records: u64, grace: Duration) {
        row.set_state("given_up");
        self.replicas_given_up.fetch_add(1, Relaxed);
        tracing::error!(replica = %row.url, group = %row.group(), records, grace_secs = grace.as_secs(), "Replica left discovery longer than its grace; given up, its backlog is dropped.");
        let mut rows = self.replicas.write().unwrap();
        let given_up = rows.iter().filter(|r| r.state() == "given_up").count();
        if given_up > GIVEN_UP_ROWS {
            // Only a row whose drops were reported: the others still owe a report.
            if let Some(i) = rows.iter().position(|r| r.settled()) {
                rows.remove(i);
            }
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for m in &METRICS {
            let name = format!("sawmill_shipper_{}", m.name);
            let _ = writeln!(o, "# HELP {name} {}\n# TYPE {name} {}", m.help, m.kind);
            let _ = match m.read {
                Read::One(f) => writeln!(o, "{name} {}", f(self)),
                Read::Seconds(f) => writeln!(o, "{name} {:.6}", f(self)),
                Read::PerSource(f) => Source::ALL.iter().try_for_each(|s| {
                    let v = get(&f(self)[s.index()]);
                    writeln!(o, "{name}{{source=\"{}\"}} {v}", s.name())
                }),
                Read::PerReplica(f) => self
                    .shown()
                    .iter()
                    .try_for_each(|r| writeln!(o, "{name}{{replica=\"{}\"}} {}", r.url, get(f(r)))),
                Read::Info => self.shown().iter().try_for_each(|r| {
                    let (url, group, state) = (&r.url, r.group(), r.state());
                    writeln!(
                        o,
                        "{name}{{replica=\"{url}\",group=\"{group}\",state=\"{state}\"}} 1"
                    )
                }),
            };
        }
        o
    }
}

/// The events, one function each: what it counts, and what it logs. Hot-path events
/// (a datagram queued) log nothing.
impl Metrics {
    /// A source handed a record to the queue (taken or not).
    pub fn received(&self, s: Source) {
        self.received[s.index()].fetch_add(1, Relaxed);
    }

    /// The queue was full: the record is dropped (reported later as a record of its own).
    pub fn queue_full(&self, s: Source) {
        self.queue_dropped[s.index()].fetch_add(1, Relaxed);
    }

    pub fn queue_pushed(&self) {
        self.queue_pushed.fetch_add(1, Relaxed);
    }

    pub fn queue_popped(&self) {
        self.queue_popped.fetch_add(1, Relaxed);
    }

    /// Queue drops per source so far, for drop reports.
    pub fn queue_dropped(&self) -> [u64; SOURCES] {
        std::array::from_fn(|i| get(&self.queue_dropped[i]))
    }

    /// A datagram's header could not be read; it is kept whole as the message.
    pub fn parse_fallback(&self) {
        self.parse_fallbacks.fetch_add(1, Relaxed);
    }

    /// Records every replica gave up on (reported later as a record of its own).
    pub fn lost(&self, records: u64) {
        self.records_lost.fetch_add(records, Relaxed);
    }

    pub fn records_lost(&self) -> u64 {
        get(&self.records_lost)
    }

    /// A `sawmill dropped N records` report was made.
    pub fn drop_reported(&self) {
        self.drop_reports.fetch_add(1, Relaxed);
    }

    /// The first replica acknowledged `records` records received `micros` in all ago.
    pub fn first_acknowledged(&self, records: u64, micros: u64) {
        self.latency_micros.fetch_add(micros, Relaxed);
        self.latency_records.fetch_add(records, Relaxed);
    }

    /// A record goes without a de-duplication key: no sequence number could be saved.
    pub fn unkeyed(&self) {
        self.state_unkeyed.fetch_add(1, Relaxed);
    }

    /// Sequence numbers cannot be reserved on disk: said once per episode.
    pub fn state_unwritable(&self, error: &dyn std::fmt::Display, state: &std::path::Path) {
        self.state_unwritable.store(1, Relaxed);
        tracing::error!(%error, state = %state.display(), "Cannot reserve sequence numbers on disk; records are sent without a de-duplication key until it can.");
    }

    /// The episode [`Metrics::state_unwritable`] began is over.
    pub fn state_writable(&self, unkeyed: u64, seconds: u64) {
        self.state_unwritable.store(0, Relaxed);
        tracing::info!(
            unkeyed,
            seconds,
            "Sequence numbers are reserved on disk again; records are keyed again."
        );
    }

    /// How many `--tail` patterns match no file at the last look.
    pub fn tail_patterns_unmatched(&self, n: u64) {
        self.tail_patterns_unmatched.store(n, Relaxed);
    }
}

/// A replica's events.
impl ReplicaMetrics {
    pub fn group(&self) -> String {
        self.group.read().unwrap().clone()
    }

    /// Its `/healthz` names another group than presumed.
    pub fn set_group(&self, group: &str) {
        tracing::info!(replica = %self.url, from = %self.group(), to = group, "Replica's group is known now; new batches follow it.");
        *self.group.write().unwrap() = group.to_string();
    }

    pub fn state(&self) -> &'static str {
        *self.state.read().unwrap()
    }

    pub fn set_replica_id(&self, id: Option<&str>) {
        if let Some(id) = id {
            *self.replica_id.write().unwrap() = Some(id.to_string());
        }
    }

    /// Whether `other` is this replica: the same row, or the same replica id.
    pub fn same_replica(self: &Arc<Self>, other: &Arc<ReplicaMetrics>) -> bool {
        if Arc::ptr_eq(self, other) {
            return true;
        }
        let (a, b) = (
            self.replica_id.read().unwrap(),
            other.replica_id.read().unwrap(),
        );
        a.is_some() && *a == *b
    }

    /// Given up, and every drop of it reported.
    fn settled(&self) -> bool {
        self.state() == "given_up" && self.reported.load(Relaxed)
    }

    /// A report round saw it: if it is given up, every drop of it is reported now. The
    /// state is read before the drops, so drops made before it was given up are in them.
    pub fn reported_if_given_up(&self, given_up: bool) {
        if given_up {
            self.reported.store(true, Relaxed);
        }
    }

    pub fn set_state(&self, state: &'static str) {
        *self.state.write().unwrap() = state;
    }

    /// A batch entered its backlog.
    pub fn enqueued(&self, records: u64, bytes: u64) {
        self.records_enqueued.fetch_add(records, Relaxed);
        self.backlog_bytes.fetch_add(bytes, Relaxed);
        self.backlog_records.fetch_add(records, Relaxed);
    }

    /// A batch left its backlog (delivered, refused or given up).
    pub fn dequeued(&self, records: u64, bytes: u64) {
        self.backlog_bytes.fetch_sub(bytes, Relaxed);
        self.backlog_records.fetch_sub(records, Relaxed);
    }

    pub fn backlog_bytes(&self) -> u64 {
        get(&self.backlog_bytes)
    }

    pub fn backlog_records(&self) -> u64 {
        get(&self.backlog_records)
    }

    /// Records given up for this replica (its backlog overflowed, or it refused them).
    pub fn dropped(&self, records: u64) {
        self.records_dropped.fetch_add(records, Relaxed);
    }

    /// File lines given up by every backlog, which the file source reads again.
    pub fn reread(&self, records: u64) {
        self.records_reread.fetch_add(records, Relaxed);
    }

    /// Records this replica misses for good: given up, less what files read again.
    pub fn missed(&self) -> u64 {
        get(&self.records_dropped).saturating_sub(get(&self.records_reread))
    }

    /// The backlog overflowed and gave up its oldest batches: said once per episode (the
    /// batcher reports the counts as records).
    pub fn overflowed(&self, records: u64, backlog_bytes: u64) {
        // Data is lost for this replica (repair or a restart of a file source may bring it
        // back): an operator should know at once.
        tracing::error!(replica = %self.url, records, backlog_bytes, "Replica's backlog is full; its oldest batches are given up for it.");
    }

    /// The backlog has room again after [`ReplicaMetrics::overflowed`].
    pub fn has_room(&self, dropped: u64) {
        tracing::warn!(replica = %self.url, dropped, "Replica's backlog has room again; what it missed was reported.");
    }

    pub fn batch_sent(&self) {
        self.batches_sent.fetch_add(1, Relaxed);
    }

    pub fn batch_acknowledged(&self, records: u64) {
        self.batches_acked.fetch_add(1, Relaxed);
        self.records_delivered.fetch_add(records, Relaxed);
    }

    /// The replica refused a batch for good: resending cannot help.
    pub fn batch_refused(&self, records: u64, why: &dyn std::fmt::Display) {
        tracing::error!(replica = %self.url, %why, records, "Replica refused a batch; it is given up for this replica.");
        self.dropped(records);
    }

    /// A batch was not delivered and will be sent again.
    pub fn batch_retried(&self, why: &dyn std::fmt::Display) {
        self.batches_retried.fetch_add(1, Relaxed);
        tracing::debug!(replica = %self.url, %why, "Batch not delivered; retrying.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_a_type_and_its_values() {
        let m = Metrics::default();
        m.add_replica("http://a", "g0").batch_acknowledged(3);
        m.received(Source::File);
        let text = m.render();
        for def in &METRICS {
            let name = format!("sawmill_shipper_{}", def.name);
            assert!(
                text.contains(&format!("# HELP {name} {}\n", def.help)),
                "{name}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} {}\n", def.kind)),
                "{name}"
            );
        }
        assert!(text.contains("sawmill_shipper_records_received_total{source=\"file\"} 1\n"));
        assert!(text
            .contains("sawmill_shipper_replica_records_delivered_total{replica=\"http://a\"} 3\n"));
        assert!(text.contains("sawmill_shipper_latency_seconds_total 0.000000\n"));
        assert!(text.contains(
            "sawmill_shipper_replica_info{replica=\"http://a\",group=\"g0\",state=\"live\"} 1\n"
        ));
    }
}
