//! What flows between the stages: the [`Item`]s sources put in the queue, and the
//! [`Event`] each becomes once parsed, written out as the contract's wire record.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use sawmill_record::time::Stamp;
use sawmill_record::{Key, Record, Severity};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::ack::AckTracker;

/// A line as a source produced it, before it is numbered and sent.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// When it happened, if the source says; otherwise `received` is used.
    pub ts: Option<OffsetDateTime>,
    pub received: Option<OffsetDateTime>,
    pub message: String,
    pub host: Option<String>,
    pub service: Option<String>,
    pub severity: Option<Severity>,
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
    /// The tracker of the line's source and the bytes the line spans, released once every
    /// replica has handled the record.
    pub ack: Option<(Arc<AckTracker>, Range<u64>)>,
}

impl Event {
    /// Bytes this event holds, for the queue's byte bound.
    pub fn weight(&self) -> usize {
        200 + self.message.len() + self.fields.len() * 32
    }

    /// Appends the NDJSON record to `out`, with `key` as its de-duplication key (none when
    /// no number could be made durable). Written straight from borrowed fields: building a
    /// `serde_json::Map` first cost the batcher a third of its time.
    pub fn write_record(&self, out: &mut Vec<u8>, key: Option<Key<'_>>, default_host: &str) {
        let received = self.received.unwrap_or_else(OffsetDateTime::now_utc);
        let rec = Record {
            ts: Some(Stamp(self.ts.unwrap_or(received))),
            received: Some(Stamp(received)),
            message: Cow::Borrowed(&self.message),
            host: Some(Cow::Borrowed(self.host.as_deref().unwrap_or(default_host))),
            service: borrow(&self.service),
            severity: self.severity,
            facility: self.facility.map(Cow::Borrowed),
            container: borrow(&self.container),
            image: borrow(&self.image),
            stream: self.stream.map(Cow::Borrowed),
            trace_id: borrow(&self.trace_id),
            request_id: borrow(&self.request_id),
            pid: self.pid,
            truncated: self.truncated,
            fields: Cow::Borrowed(&self.fields),
            key,
            doc_key: None,
        };
        // Serialised here rather than by `Record::write_ndjson`: instantiated in this crate,
        // a record cost 3-5 % more CPU than the private struct it replaced, against 10-15 %
        // through the other crate's function (thread CPU, median of 8 runs of a million).
        let _ = serde_json::to_writer(&mut *out, &rec);
        out.push(b'\n');
    }

    /// The record as a JSON value, for tests that compare fields.
    #[cfg(test)]
    pub fn to_record(&self, src: &str, seq: u64, default_host: &str) -> Value {
        let mut out = Vec::new();
        let key = Key {
            src: Cow::Borrowed(src),
            seq,
        };
        self.write_record(&mut out, Some(key), default_host);
        serde_json::from_slice(&out).expect("a record is JSON")
    }
}

fn borrow(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

/// Kernel-attested credentials of a datagram's sender (SO_PASSCRED).
#[derive(Clone, Copy, Debug)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// What sources put in the queue: as little work as possible before it.
pub enum Item {
    /// A raw syslog datagram, stamped on receipt; parsed after the queue.
    Syslog {
        data: Vec<u8>,
        received: OffsetDateTime,
        creds: Option<Creds>,
        source: Source,
    },
    /// A line a source already framed (a file's, a container's); enriched after the queue.
    Event(Box<Event>, Source),
}

impl Item {
    /// Bytes it holds, for the queue's byte bound.
    pub fn weight(&self) -> usize {
        match self {
            Item::Syslog { data, .. } => 64 + data.len(),
            Item::Event(e, _) => e.weight(),
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Item::Syslog { source, .. } | Item::Event(_, source) => *source,
        }
    }
}

/// Where an item came from, for the per-source counters (`source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    SyslogUnix,
    SyslogUdp,
    SyslogTcp,
    SyslogTls,
    Docker,
    File,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::SyslogUnix,
        Source::SyslogUdp,
        Source::SyslogTcp,
        Source::SyslogTls,
        Source::Docker,
        Source::File,
    ];

    /// The value of the `source` label.
    pub fn name(self) -> &'static str {
        match self {
            Source::SyslogUnix => "syslog_unix",
            Source::SyslogUdp => "syslog_udp",
            Source::SyslogTcp => "syslog_tcp",
            Source::SyslogTls => "syslog_tls",
            Source::Docker => "docker",
            Source::File => "file",
        }
    }

    /// Its place in [`Source::ALL`], for arrays of counters.
    pub fn index(self) -> usize {
        self as usize
    }
}
