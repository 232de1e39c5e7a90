//! Sawmill's shipper: gets log lines from where applications write them to every indexer
//! replica. The stages, in the order a record flows through them:
//!
//! 1. **Sources** (`sources`): `socket` reads syslog from a unix datagram socket like
//!    `/dev/log` (with the sender's kernel-attested credentials), UDP and TCP; `file` tails
//!    files (Docker json-file, CRI, plain); `docker` follows containers through the Engine
//!    API. Each has a config that spawns it onto the queue. Sources only read, frame and
//!    stamp.
//! 2. **Queue** ([`Queue`]): one bounded queue. Sockets never wait: when it is full their
//!    record is dropped and counted. Files and Docker logs are their own buffer and wait
//!    for room instead.
//! 3. **Parse** (`parse`): after the queue, on the batcher's thread, so an application
//!    never waits on a parser: syslog datagrams are read as RFC 5424, RFC 3164 or glibc's
//!    form ([`Parser`]), and every [`Event`] is enriched with the correlation ids and
//!    fields its message carries.
//! 4. **Batch** (`batch`): numbers each record with the stable sender id and a sequence
//!    number reserved on disk (`state`), or sends it without a key when no number can be
//!    saved; writes the contract's wire record (`sawmill_record::Record`) as NDJSON,
//!    compresses batches with zstd, and adds `sawmill dropped N records` reports (`report`).
//! 5. **Forward** (`forward`, `fleet`): the replicas come from discovery
//!    (`sawmill_cluster::Discovery`: fixed URLs or DNS names, each replica's group from its
//!    `/healthz`); the fleet gives each a bounded backlog and a sender as it appears, and
//!    gives one up once it has been gone longer than its grace. The batcher places every
//!    record on one group (rendezvous hashing) and a batch goes to the backlog of every
//!    replica of its group, whose sender retries until that replica acknowledges it; a
//!    refusal gives it up for that replica.
//!
//! `shipper` wires the stages together and stops them in order; `metrics` lists every
//! counter with the event that moves it. Not stages but clients of the socket:
//! [`run`] (`sawmill run`) wraps a process and writes its output lines to the socket, and
//! [`Demo`] generates realistic traffic for `sawmill up --demo`.

mod ack;
mod batch;
mod demo;
mod error;
mod event;
mod fleet;
mod forward;
mod host;
mod metrics;
mod parse;
mod priority;
mod queue;
mod report;
mod run;
mod shipper;
mod sources;
mod state;

pub use demo::{Demo, DemoConfig};
pub use error::{DeliveryError, Error, Result};
pub use event::Event;
pub use host::hostname;
pub use metrics::Metrics;
pub use parse::{Parser, Zone};
pub use queue::Queue;
pub use run::{run, RunConfig};
pub use shipper::{Shipper, ShipperConfig};
pub use sources::socket::{read_loop, SyslogSocket};
