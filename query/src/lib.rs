//! One search over every indexer group: what `sawmill query` serves and what the UI calls
//! in-process, so the two always agree.
//!
//! - [`Cluster`] (`cluster`): the groups that discovery (`sawmill_cluster`) finds, and the
//!   fan-out: every group asked at once on one healthy replica, the next replica of a group
//!   asked when one fails within the request, a group none of whose replicas answers (or,
//!   for `group_grace`, that discovery no longer lists) left out and named in the answer's
//!   `partial`. Fan-outs in flight and live tails are
//!   bounded; a page holds at most `limit` hits per group.
//! - The merges, one method per route: `search` (newest or oldest first across groups,
//!   with a cluster cursor of one indexer cursor per group), `answers` (histogram buckets
//!   added, terms over-fetched and marked `approximate`, trace and request context from
//!   every group, other context from the record's group) and `tail` (the groups' event
//!   streams merged through a small channel).
//! - Record ids: every hit's `_id` becomes a [`sawmill_record::api::RecordId`],
//!   `{group}~{local}`, key-based when the record has a key, so any replica of its group
//!   finds it again after a failover.
//! - [`router`] (`server`): the indexer's search API over a [`Cluster`], for `sawmill query`.

mod answers;
mod cluster;
mod error;
mod metrics;
mod search;
mod server;
mod tail;
#[cfg(test)]
mod tests;

pub use answers::shard_size;
pub use cluster::{Answer, Cluster, ClusterConfig, ReplicaState};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use search::Doc;
pub use server::{router, serve, ServeConfig};
pub use tail::{Tail, TailEvent};

use serde::Serialize;

/// `path?query` for a route and its parameters, the query in the form the indexer reads.
pub fn path_and_query<P: Serialize>(path: &str, params: &P) -> String {
    // Flat structs of strings, numbers and unit enums always serialise.
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}
