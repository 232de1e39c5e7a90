//! Sawmill's shipper: gets log lines from where applications write them to every indexer
//! replica. For now it holds the demo traffic source that `sawmill up --demo` runs; the
//! syslog, `sawmill run`, Docker and file sources, the bounded queue and the forwarder
//! follow (see the shipper issue).

mod demo;
mod error;

pub use demo::{Demo, DemoConfig};
pub use error::{Error, Result};
