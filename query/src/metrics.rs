//! What `sawmill query` counts, exposed as Prometheus text on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Counters of the fan-out, bumped where the event happens.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by route (index into [`ROUTES`]).
    pub requests: [AtomicU64; ROUTES.len()],
    /// Answers given without some group (`partial`).
    pub partial: AtomicU64,
    /// Times a group's replica failed and the next one was asked.
    pub failovers: AtomicU64,
    /// Times no replica of a group answered.
    pub group_failures: AtomicU64,
    /// Requests refused because too many were in flight.
    pub refused: AtomicU64,
}

/// The routes counted, in the order of [`Metrics::requests`].
pub const ROUTES: [&str; 6] = ["search", "histogram", "terms", "context", "trace", "tail"];

impl Metrics {
    pub fn count(&self, route: &str) {
        if let Some(i) = ROUTES.iter().position(|r| *r == route) {
            self.requests[i].fetch_add(1, Relaxed);
        }
    }

    /// Prometheus text, with `up`/`down` replica gauges per group given by the caller.
    pub fn render(&self, replicas: &[(String, bool)]) -> String {
        let mut s = String::new();
        s.push_str("# TYPE sawmill_query_requests_total counter\n");
        for (r, n) in ROUTES.iter().zip(&self.requests) {
            let _ = writeln!(
                s,
                "sawmill_query_requests_total{{route=\"{r}\"}} {}",
                n.load(Relaxed)
            );
        }
        for (name, v, help) in [
            (
                "sawmill_query_partial_answers_total",
                &self.partial,
                "answers without some group",
            ),
            (
                "sawmill_query_failovers_total",
                &self.failovers,
                "requests moved to the next replica of a group",
            ),
            (
                "sawmill_query_group_failures_total",
                &self.group_failures,
                "times no replica of a group answered",
            ),
            (
                "sawmill_query_refused_total",
                &self.refused,
                "requests refused: too many in flight",
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        s.push_str("# TYPE sawmill_query_replicas gauge\n");
        let mut counts = std::collections::BTreeMap::<(&str, bool), u64>::new();
        for (g, up) in replicas {
            *counts.entry((g.as_str(), *up)).or_default() += 1;
        }
        for ((g, up), n) in counts {
            let state = if up { "up" } else { "down" };
            let _ = writeln!(
                s,
                "sawmill_query_replicas{{group=\"{g}\",state=\"{state}\"}} {n}"
            );
        }
        s
    }
}
