//! Sawmill's shipper: gets log lines from where applications write them to every indexer
//! replica.
//!
//! Sources turn what they read into [`Event`]s: the syslog socket parses datagrams with
//! [`Parser`] (RFC 5424, RFC 3164, glibc's `/dev/log` form), and every event is enriched
//! with the correlation ids and fields its message carries. The demo source generates
//! realistic traffic for `sawmill up --demo`.

mod demo;
mod enrich;
mod error;
mod event;
mod syslog;

pub use demo::{Demo, DemoConfig};
pub use error::{Error, Result};
pub use event::Event;
pub use syslog::{Parser, Zone};
