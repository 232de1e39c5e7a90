//! The shipper's counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::queue::Source;

#[derive(Default)]
pub struct Metrics {
    /// Per [`Source`], in the order of `Source::ALL`.
    pub received: [AtomicU64; 6],
    pub queue_dropped: [AtomicU64; 6],
    pub queue_pushed: AtomicU64,
    pub queue_popped: AtomicU64,
    pub parse_fallbacks: AtomicU64,
    /// Records every replica gave up on, but for file lines, which are read again.
    pub records_lost: AtomicU64,
    pub drop_reports: AtomicU64,
    pub latency_micros: AtomicU64,
    pub latency_records: AtomicU64,
    /// Records sent without a de-duplication key because no sequence number could be
    /// reserved on disk.
    pub state_unkeyed: AtomicU64,
    /// 1 while sequence numbers cannot be reserved (the state directory is full or
    /// read-only), else 0.
    pub state_unwritable: AtomicU64,
    /// `--tail` patterns that match no file at the last look.
    pub tail_patterns_unmatched: AtomicU64,
    pub replicas: Vec<ReplicaMetrics>,
}

/// Reads one of a replica's counters.
type Getter = fn(&ReplicaMetrics) -> &AtomicU64;

#[derive(Default)]
pub struct ReplicaMetrics {
    pub url: String,
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub batches_retried: AtomicU64,
    pub records_delivered: AtomicU64,
    pub records_dropped: AtomicU64,
    /// Of those, file lines every replica gave up, which the file source reads again.
    pub records_reread: AtomicU64,
    pub records_enqueued: AtomicU64,
    pub backlog_bytes: AtomicU64,
    pub backlog_records: AtomicU64,
}

impl Metrics {
    pub fn with_replicas(urls: &[String]) -> Metrics {
        Metrics {
            replicas: urls
                .iter()
                .map(|u| ReplicaMetrics {
                    url: u.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(
                o,
                "# HELP sawmill_shipper_{name} {help}\n# TYPE sawmill_shipper_{name} {kind}"
            );
        };
        head(
            &mut o,
            "records_received_total",
            "counter",
            "Records received, per source.",
        );
        for s in Source::ALL {
            let _ = writeln!(
                o,
                "sawmill_shipper_records_received_total{{source=\"{}\"}} {}",
                s.name(),
                self.received[s.index()].load(Relaxed)
            );
        }
        head(
            &mut o,
            "queue_records_dropped_total",
            "counter",
            "Records dropped because the queue was full, per source.",
        );
        for s in Source::ALL {
            let _ = writeln!(
                o,
                "sawmill_shipper_queue_records_dropped_total{{source=\"{}\"}} {}",
                s.name(),
                self.queue_dropped[s.index()].load(Relaxed)
            );
        }
        let pushed = self.queue_pushed.load(Relaxed);
        let popped = self.queue_popped.load(Relaxed);
        for (name, help, v) in [
            ("queue_pushed_total", "Records put in the queue.", pushed),
            (
                "queue_popped_total",
                "Records taken from the queue.",
                popped,
            ),
            (
                "parse_fallbacks_total",
                "Syslog datagrams whose header could not be read (kept whole as the message).",
                self.parse_fallbacks.load(Relaxed),
            ),
            (
                "records_lost_total",
                "Records given up by every replica (backlogs overflowed, or refused), but for file lines, which are read again.",
                self.records_lost.load(Relaxed),
            ),
            (
                "drop_reports_total",
                "`sawmill dropped N records` records emitted.",
                self.drop_reports.load(Relaxed),
            ),
            (
                "state_records_unkeyed_total",
                "Records sent without a de-duplication key because no sequence number could be reserved in the state directory (full or read-only).",
                self.state_unkeyed.load(Relaxed),
            ),
            (
                "latency_records_total",
                "Records acknowledged by the first replica, for the latency mean.",
                self.latency_records.load(Relaxed),
            ),
        ] {
            head(&mut o, name, "counter", help);
            let _ = writeln!(o, "sawmill_shipper_{name} {v}");
        }
        head(
            &mut o,
            "latency_seconds_total",
            "counter",
            "Sum of receipt-to-acknowledgement times (divide by latency_records_total).",
        );
        let _ = writeln!(
            o,
            "sawmill_shipper_latency_seconds_total {:.6}",
            self.latency_micros.load(Relaxed) as f64 / 1e6
        );
        head(
            &mut o,
            "queue_records",
            "gauge",
            "Records waiting in the queue.",
        );
        let _ = writeln!(
            o,
            "sawmill_shipper_queue_records {}",
            pushed.saturating_sub(popped)
        );
        head(
            &mut o,
            "state_unwritable",
            "gauge",
            "1 while sequence numbers cannot be reserved in the state directory: records are sent without a de-duplication key.",
        );
        let _ = writeln!(
            o,
            "sawmill_shipper_state_unwritable {}",
            self.state_unwritable.load(Relaxed)
        );
        head(
            &mut o,
            "tail_patterns_unmatched",
            "gauge",
            "Tail patterns (--tail) that match no file; they are still watched.",
        );
        let _ = writeln!(
            o,
            "sawmill_shipper_tail_patterns_unmatched {}",
            self.tail_patterns_unmatched.load(Relaxed)
        );
        let per_replica: [(&str, &str, &str, Getter); 8] = [
            (
                "batches_sent_total",
                "counter",
                "Batch requests sent, per replica.",
                |r| &r.batches_sent,
            ),
            (
                "batches_acknowledged_total",
                "counter",
                "Batches acknowledged, per replica.",
                |r| &r.batches_acked,
            ),
            (
                "batches_retried_total",
                "counter",
                "Batch requests that failed and will be retried, per replica.",
                |r| &r.batches_retried,
            ),
            (
                "replica_records_enqueued_total",
                "counter",
                "Records handed to a replica's backlog.",
                |r| &r.records_enqueued,
            ),
            (
                "replica_records_delivered_total",
                "counter",
                "Records a replica acknowledged.",
                |r| &r.records_delivered,
            ),
            (
                "replica_records_dropped_total",
                "counter",
                "Records given up for a replica (its backlog overflowed).",
                |r| &r.records_dropped,
            ),
            (
                "backlog_bytes",
                "gauge",
                "Compressed bytes waiting for a replica.",
                |r| &r.backlog_bytes,
            ),
            (
                "backlog_records",
                "gauge",
                "Records waiting for a replica (in flight included).",
                |r| &r.backlog_records,
            ),
        ];
        for (name, kind, help, get) in per_replica {
            head(&mut o, name, kind, help);
            for r in &self.replicas {
                let _ = writeln!(
                    o,
                    "sawmill_shipper_{name}{{replica=\"{}\"}} {}",
                    r.url,
                    get(r).load(Relaxed)
                );
            }
        }
        o
    }
}
