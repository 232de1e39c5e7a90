//! The shipper's own records: `sawmill dropped N records from SOURCE in the last S s`, made
//! from the drop counters at every report interval, as rsyslog reports its own losses.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sawmill_record::Severity;
use serde_json::Value;
use time::OffsetDateTime;

use crate::event::{Event, Source};
use crate::metrics::Metrics;

/// What was reported so far, to report only what is new.
pub struct DropReports {
    interval: Duration,
    last: Instant,
    /// Queue drops per source, as last reported.
    queue: [u64; Source::ALL.len()],
    /// Records every replica gave up, as last reported.
    lost: u64,
    /// Per replica row (its id): records given up for it as last reported, and when its
    /// episode began.
    replica: HashMap<u64, (u64, u64)>,
}

/// A report, and the group it must reach: the group of the replica it names (whose peers
/// hold it, and which gets it too when back), or none for drops any group could have had
/// (placed like any record).
pub type Report = (Event, Option<String>);

impl DropReports {
    pub fn new(interval: Duration) -> DropReports {
        DropReports {
            interval,
            last: Instant::now(),
            queue: [0; Source::ALL.len()],
            lost: 0,
            replica: HashMap::new(),
        }
    }

    /// The reports due now: none before the interval has passed (a stop makes a last round
    /// at once), then one per source that dropped, one for records lost everywhere, and
    /// one per replica that missed records.
    pub fn due(&mut self, metrics: &Metrics, stopping: bool) -> Vec<Report> {
        if !stopping && self.last.elapsed() < self.interval {
            return Vec::new();
        }
        let secs = self.last.elapsed().as_secs();
        self.last = Instant::now();
        let mut out = Vec::new();
        let dropped = metrics.queue_dropped();
        for s in Source::ALL {
            let n = dropped[s.index()] - self.queue[s.index()];
            self.queue[s.index()] = dropped[s.index()];
            if n > 0 {
                out.push((report(n, s.name(), None, secs), None));
            }
        }
        // Records every replica gave up on are lost just the same.
        let lost = metrics.records_lost();
        if lost > self.lost {
            out.push((report(lost - self.lost, "backlog", None, secs), None));
            self.lost = lost;
        }
        // What one replica gave up while others took it: the replica misses it, so say
        // which one (the others hold the report; it gets it too when back, as reports are
        // never evicted).
        let rows = metrics.replicas();
        // Rows go when replicas do: so does what was reported of them.
        self.replica
            .retain(|id, _| rows.iter().any(|m| m.id == *id));
        for m in rows {
            // Before its drops are read: a row given up has no drop to come (see below).
            let given_up = m.state() == "given_up";
            let (reported, episode_start) = self.replica.entry(m.id).or_default();
            // Never below what was reported: lines a replica gave up count as re-read only
            // once every replica has given them up, so this can shrink after a report went
            // out (a panic, or a report of 2^64 records, before).
            let total = m.missed();
            let n = total.saturating_sub(*reported);
            *reported = (*reported).max(total);
            if n > 0 {
                out.push((report(n, "replica", Some(&m.url), secs), Some(m.group())));
            } else if m.overflowing.swap(false, Relaxed) {
                m.has_room(total.saturating_sub(*episode_start));
            }
            if !m.overflowing.load(Relaxed) {
                *episode_start = total;
            }
            // Reported (in `out`): the row may go now, and not before.
            m.reported_if_given_up(given_up);
        }
        for _ in &out {
            metrics.drop_reported();
        }
        out
    }
}

/// A `sawmill dropped N records …` record.
fn report(n: u64, source: &str, replica: Option<&str>, secs: u64) -> Event {
    let message = match replica {
        Some(url) => format!("sawmill dropped {n} records for replica {url} in the last {secs} s"),
        None => format!("sawmill dropped {n} records from {source} in the last {secs} s"),
    };
    let mut ev = Event {
        message,
        service: Some("sawmill-shipper".into()),
        severity: Some(Severity::Warning),
        received: Some(OffsetDateTime::now_utc()),
        ..Default::default()
    };
    ev.fields.insert("dropped".into(), Value::from(n));
    ev.fields.insert("source".into(), Value::from(source));
    if let Some(url) = replica {
        ev.fields.insert("replica".into(), Value::from(url));
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_up_row_replaced_before_its_drops_were_reported_is_still_reported() {
        let m = Metrics::default();
        let mut reports = DropReports::new(Duration::from_secs(3600));
        let old = m.add_replica("http://a", "g0");
        old.dropped(5);
        m.replica_given_up(&old, 5, Duration::ZERO);
        // Another task takes the address before the next report round.
        m.add_replica("http://a", "g1");
        let due = reports.due(&m, true);
        let groups: Vec<Option<String>> = due.into_iter().map(|(_, g)| g).collect();
        assert_eq!(groups, [Some("g0".to_string())], "the old row's drops");
        // Reported: the old row goes at the next replacement.
        m.add_replica("http://a", "g1");
        assert!(m.replicas().iter().all(|r| r.group() == "g1"));
        // The metrics show one row per URL.
        let text = m.render();
        assert_eq!(text.matches("replica_info{replica=\"http://a\"").count(), 1);
    }
}
