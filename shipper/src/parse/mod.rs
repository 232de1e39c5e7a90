//! Parsing, after the queue, on the batcher's thread: a syslog datagram becomes an
//! [`Event`] ([`syslog`]: RFC 5424, RFC 3164, glibc's `/dev/log` form, anything else kept
//! whole), and every event is enriched with what its message says about itself
//! ([`enrich`]: JSON fields, `key=value` pairs, correlation ids, a stated level). Doing it
//! here rather than in the sources keeps the socket readers to receiving and stamping, so
//! an application logging to `/dev/log` never waits on a parser.

mod enrich;
mod syslog;

pub use syslog::{Parser, Zone};

use serde_json::Value;

use crate::event::{Event, Item};
use crate::metrics::Metrics;

/// The event an item from the queue becomes.
pub fn event(item: Item, parser: &Parser, metrics: &Metrics) -> Event {
    match item {
        Item::Syslog {
            data,
            received,
            creds,
            ..
        } => {
            let parsed = parser.parse(&data, received);
            if parsed.fallback {
                metrics.parse_fallback();
            }
            let mut ev = parsed.event;
            if let Some(c) = creds {
                // Trusted: the kernel says who sent it, whatever the header claims. Pid 0
                // is no process: the sender lives in a pid namespace we cannot see.
                if c.pid != 0 {
                    ev.fields.insert("_pid".into(), Value::from(c.pid));
                }
                ev.fields.insert("_uid".into(), Value::from(c.uid));
                ev.fields.insert("_gid".into(), Value::from(c.gid));
            }
            ev
        }
        Item::Event(mut ev, _) => {
            enrich::enrich(&mut ev);
            *ev
        }
    }
}
