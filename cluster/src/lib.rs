//! How Sawmill's parts find the indexer replicas and place records on them.
//!
//! - [`target`]: what `--indexer` and `--peer` accept: a fixed `http://host:port`, or a DNS
//!   name whose records are the replicas (`dns+http://NAME:PORT`, `dnssrv+http://_SVC._tcp.NAME`).
//! - [`discovery`]: re-resolves those names every interval and asks each replica's
//!   `/healthz` for its group and id, publishing the [`Membership`] as it changes.
//! - [`placement`]: which group a record goes to (rendezvous hashing over the group names
//!   of a key fixed for each record), so the shipper and any reader agree.
//!
//! Membership comes from the orchestrator's DNS and placement from a hash: there is no
//! cluster state of Sawmill's own to keep consistent.

pub mod discovery;
pub mod placement;
pub mod target;

pub use discovery::{Discovery, DiscoveryConfig, Member, Membership};
pub use placement::{group_for, PlacementKey, FILE_PLACEMENT_BLOCK, PLACEMENT_BLOCK};
pub use target::{Target, TargetError};
