//! Sawmill's shipper: gets log lines from where applications write them to every indexer
//! replica.
//!
//! Sources turn what they read into [`Event`]s: the syslog socket parses datagrams with
//! [`Parser`] (RFC 5424, RFC 3164, glibc's `/dev/log` form), and every event is enriched
//! with the correlation ids and fields its message carries. Sources put items in one
//! bounded [`queue`](Queue): the sockets' are dropped (and counted) when it is full rather
//! than block, files and Docker logs wait for room; the batcher numbers
//! records with a persisted sender id and sequence, compresses batches and hands each to
//! every replica's backlog, whose sender retries until that replica acknowledges it. The
//! demo source generates realistic traffic for `sawmill up --demo`.

mod demo;
mod enrich;
mod error;
mod event;
mod forwarder;
mod metrics;
mod priority;
mod queue;
mod shipper;
mod sources;
mod state;
mod syslog;

pub use demo::{Demo, DemoConfig};
pub use error::{Error, Result};
pub use event::Event;
pub use metrics::Metrics;
pub use queue::Queue;
pub use shipper::{hostname, Shipper, ShipperConfig};
pub use sources::run::{run, RunConfig};
pub use sources::syslog::{read_loop, SyslogSocket};
pub use syslog::{Parser, Zone};
