//! Ingest as one service: a decoded body in, a report out. Whatever the route (NDJSON on
//! `/api/v1/ingest`, Elasticsearch bulk on `/_bulk`), a body goes through the same steps:
//! parsed into objects (`body.rs` or `bulk.rs`), normalised and cut to size (`record.rs`),
//! checked against retention, stored (`store`: de-duplicated, logged, indexed), and counted
//! once, here.

use std::time::{Duration, Instant};

use sawmill_record::api::{IngestResponse, RejectedLine};
use serde_json::Value;
use time::OffsetDateTime;

use crate::body::ndjson_objects;
use crate::bulk::{self, Item};
use crate::error::{Error, Result};
use crate::metrics::Ingested;
use crate::record::{cut_message, Record};
use crate::store::{check_age, Outcome, Store};

/// How a body is written.
pub enum Format {
    /// One record per line (DESIGN.md "Records").
    Ndjson,
    /// Elasticsearch bulk: action and document line pairs; `index` where an action names none.
    Bulk { index: String },
}

/// The answer to an ingest request, in the form its route promises.
pub enum IngestReport {
    Ndjson(IngestResponse),
    /// Elasticsearch's bulk answer (per-item results and `errors`).
    Bulk(Value),
}

/// A body parsed into records, with what each route needs to answer about the rest.
struct Parsed {
    records: Vec<Record>,
    /// Per record: whether its message was cut to `max_message_bytes`.
    cut: Vec<bool>,
    lines: Lines,
}

enum Lines {
    /// The lines rejected, with their reasons.
    Ndjson(Vec<RejectedLine>),
    /// Every bulk item, the failed ones included.
    Bulk(Vec<Item>),
}

impl Lines {
    fn rejected(&self) -> usize {
        match self {
            Lines::Ndjson(rejected) => rejected.len(),
            Lines::Bulk(items) => items.iter().filter(|i| i.failed()).count(),
        }
    }
}

/// Stores the records of a decoded body, answering only once they are durable. Messages
/// longer than `max_message_bytes` are cut and flagged `truncated`.
pub async fn ingest(
    store: &Store,
    body: Vec<u8>,
    format: Format,
    max_message_bytes: usize,
    started: Instant,
) -> Result<IngestReport> {
    let retention = store.retention();
    let parsed = tokio::task::spawn_blocking(move || {
        let now = OffsetDateTime::now_utc();
        match format {
            Format::Ndjson => parse_ndjson(&body, now, max_message_bytes, retention),
            Format::Bulk { index } => {
                let (records, items, cut) = bulk::parse(&body, &index, now, max_message_bytes);
                Parsed {
                    records,
                    cut,
                    lines: Lines::Bulk(items),
                }
            }
        }
    })
    .await
    // A body whose parsing panicked (a bug) is refused, as it always was, not answered 500:
    // a sender retries a 5xx, and would send the same body for ever.
    .map_err(|e| Error::BadRequest(e.to_string()))?;
    let outcomes = match store.ingest(parsed.records).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            // NDJSON lines refused by parsing were refused whatever the store says (bulk
            // items are counted with their answer, as they always were).
            if matches!(parsed.lines, Lines::Ndjson(_)) {
                Ingested {
                    rejected: parsed.lines.rejected(),
                    ..Ingested::default()
                }
                .emit(store.metrics());
            }
            return Err(e);
        }
    };
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate)
        .count();
    let accepted = outcomes.len() - duplicates;
    Ingested {
        accepted,
        duplicates,
        rejected: parsed.lines.rejected(),
        // A resent duplicate's cut was counted when it was stored.
        truncated: outcomes
            .iter()
            .zip(&parsed.cut)
            .filter(|(o, cut)| **cut && matches!(o, Outcome::Stored(_)))
            .count(),
    }
    .emit(store.metrics());
    Ok(match parsed.lines {
        Lines::Ndjson(rejected) => IngestReport::Ndjson(IngestResponse {
            accepted,
            duplicates,
            rejected,
        }),
        Lines::Bulk(items) => {
            IngestReport::Bulk(bulk::response(&items, &outcomes, ms(started.elapsed())))
        }
    })
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// NDJSON lines into records; a bad line is rejected by itself, with its reason. Only this
/// route refuses records older than the retention period (the bulk route never has).
fn parse_ndjson(
    body: &[u8],
    now: OffsetDateTime,
    max_message_bytes: usize,
    retention: Option<Duration>,
) -> Parsed {
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    let mut cut = Vec::new();
    for (line, obj) in ndjson_objects(body) {
        let mut was_cut = false;
        let rec = obj
            .and_then(|mut o| {
                was_cut = cut_message(&mut o, max_message_bytes);
                Record::from_object(o, now)
            })
            .and_then(|r| check_age(retention, r.ts, now).map(|_| r));
        match rec {
            Ok(r) => {
                records.push(r);
                cut.push(was_cut);
            }
            Err(error) => rejected.push(RejectedLine { line, error }),
        }
    }
    Parsed {
        records,
        cut,
        lines: Lines::Ndjson(rejected),
    }
}
