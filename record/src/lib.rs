//! Sawmill's contract: what a record is on the wire, and what the search API takes and
//! answers. Every part speaks it, and only over HTTP (DESIGN.md): the shipper writes
//! [`Record`]s, the indexer stores them and serialises the [`api`] answers, the UI reads
//! those answers back into the same types. Nothing here does I/O.
//!
//! - [`severity`]: the eight syslog severities, their ranks and the spellings accepted for
//!   them.
//! - [`fields`]: the table of a record's top-level fields (name, kind, columnar or not),
//!   from which the indexer builds its schema and the UI its export columns.
//! - [`time`]: the one RFC 3339 form records carry (UTC, nanoseconds) and its parser.
//! - [`record`]: the wire record, with its optional de-duplication key.
//! - [`api`]: routes, request parameters, answers and the error body of the search and
//!   ingest API.

pub mod api;
pub mod fields;
pub mod record;
pub mod severity;
pub mod time;

pub use fields::{Field, FieldKind, FIELDS};
pub use record::{Key, Record};
pub use severity::{Severity, UnknownSeverity};
