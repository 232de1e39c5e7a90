//! One log line on its way to the indexers, in the record format of DESIGN.md.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{Map, Value};
use time::OffsetDateTime;

/// How far a source's lines have been handled by every replica (delivered or given up):
/// where a restart may resume without losing anything.
#[derive(Debug, Default)]
pub struct AckTracker {
    done: AtomicU64,
}

impl AckTracker {
    pub fn new(start: u64) -> Arc<AckTracker> {
        Arc::new(AckTracker {
            done: AtomicU64::new(start),
        })
    }

    pub fn release(&self, through: u64) {
        self.done.fetch_max(through, Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Relaxed)
    }
}

/// A line as a source produced it, before it is numbered and sent.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// When it happened, if the source says; otherwise `received` is used.
    pub ts: Option<OffsetDateTime>,
    pub received: Option<OffsetDateTime>,
    pub message: String,
    pub host: Option<String>,
    pub service: Option<String>,
    pub severity: Option<&'static str>,
    pub facility: Option<&'static str>,
    pub pid: Option<u64>,
    /// `syslog`, `stdout`, `stderr` or `file`.
    pub stream: Option<&'static str>,
    pub container: Option<String>,
    pub image: Option<String>,
    pub trace_id: Option<String>,
    pub request_id: Option<String>,
    pub fields: Map<String, Value>,
    /// The message was cut to the size limit.
    pub truncated: bool,
    /// A sender id and sequence number fixed by the source (a file and an offset), so a
    /// line read again after a crash is recognized by the indexer; otherwise the batcher
    /// numbers the record.
    pub key: Option<(String, u64)>,
    /// Released once every replica has handled the record.
    pub ack: Option<(Arc<AckTracker>, u64)>,
}

impl Event {
    /// Bytes this event holds, for the queue's byte bound.
    pub fn weight(&self) -> usize {
        200 + self.message.len() + self.fields.len() * 32
    }

    /// The NDJSON record, numbered for exactly-once delivery.
    pub fn to_record(&self, src: &str, seq: u64, default_host: &str) -> Value {
        let received = self.received.unwrap_or_else(OffsetDateTime::now_utc);
        let mut o = Map::new();
        o.insert(
            "ts".into(),
            Value::String(rfc3339(self.ts.unwrap_or(received))),
        );
        o.insert("received".into(), Value::String(rfc3339(received)));
        o.insert("message".into(), Value::String(self.message.clone()));
        o.insert(
            "host".into(),
            Value::String(
                self.host
                    .clone()
                    .unwrap_or_else(|| default_host.to_string()),
            ),
        );
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                o.insert(k.into(), Value::String(v.clone()));
            }
        };
        put("service", &self.service);
        put("container", &self.container);
        put("image", &self.image);
        put("trace_id", &self.trace_id);
        put("request_id", &self.request_id);
        for (k, v) in [
            ("severity", self.severity),
            ("facility", self.facility),
            ("stream", self.stream),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), Value::String(v.into()));
            }
        }
        if let Some(pid) = self.pid {
            o.insert("pid".into(), Value::from(pid));
        }
        if self.truncated {
            o.insert("truncated".into(), Value::Bool(true));
        }
        if !self.fields.is_empty() {
            o.insert("fields".into(), Value::Object(self.fields.clone()));
        }
        o.insert("_src".into(), Value::String(src.into()));
        o.insert("_seq".into(), Value::from(seq));
        Value::Object(o)
    }
}

/// RFC 3339 in UTC, to the nanosecond (the indexer normalizes the form).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
