//! Repair: replicas of one group compare what they hold and each copies what it lacks from
//! its peers, so they converge after any outage and a replica on an empty disk fills itself.
//!
//! - `held`: what this replica holds and hands out (the `/api/v1/repair/...` routes):
//!   `_seq` ranges per sender, a `_key` digest per partition, stored records by range or key.
//! - `pull`: the background loop. Every `--discovery-interval` it asks each peer (the
//!   members of this replica's group found from `--peer`, minus itself) for its holdings,
//!   works out what is missing here (`ranges`), and copies it through the normal ingest path
//!   at `--repair-rate` at most. De-duplication makes a copy idempotent and crash-safe;
//!   copied records keep their stored form (`ts`, `received`, keys) byte for byte.
//!
//! Pull-only: both replicas run the loop, so records flow both ways. Records with neither
//! `_src`/`_seq` nor `_id` cannot be compared, so they are never repaired
//! (`records_unkeyed_total` counts them as they are stored).
//!
//! Retention: a partition removed for its age takes its keys out of the de-duplication set
//! (so it is no longer listed as held), and a copied record older than this replica's
//! `--retention` is skipped and remembered (`gone`), never stored: what retention removed
//! is not copied back. Partitions removed for `--max-disk` keep their keys until a restart;
//! replicas of one group should have the same `--retention` and `--max-disk`.

mod held;
mod pull;
pub(crate) mod ranges;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sawmill_cluster::Target;

pub use held::{by_key, holdings, keys, records, DigestCache};
pub use pull::start;

/// How repair runs; every field is a flag of `sawmill indexer`.
#[derive(Clone, Debug)]
pub struct RepairConfig {
    /// The peers: fixed URLs or DNS names; members of other groups, and this replica
    /// itself, are left out.
    pub peers: Vec<Target>,
    /// How often the peers are looked up and compared.
    pub interval: Duration,
    /// Most records copied per second, all peers together.
    pub rate: u64,
    /// How peers are reached: the CA and client certificate for `https://`, the read token.
    pub connect: sawmill_http::Connect,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            peers: Vec::new(),
            interval: Duration::from_secs(10),
            rate: DEFAULT_RATE,
            connect: sawmill_http::Connect::default(),
        }
    }
}

/// The default `--repair-rate`. A copy costs the serving peer a doc-store read per record
/// and this replica one ingest; at this rate the peer's own ingest slowed by less than the
/// 25 % the benchmark allows (`benches/repair.rs`), and a million records take under a
/// minute.
pub const DEFAULT_RATE: u64 = 20_000;

/// How far behind its peers this replica is, for `/healthz`.
#[derive(Debug, Default)]
pub struct RepairStatus {
    /// Records the peers hold that this replica does not, as last counted; read only once
    /// `compared`.
    lag: AtomicU64,
    compared: AtomicBool,
    catching_up: AtomicBool,
}

impl RepairStatus {
    /// `None` until a comparison with a peer was made.
    pub fn lag_records(&self) -> Option<u64> {
        self.compared.load(Relaxed).then(|| self.lag.load(Relaxed))
    }

    pub fn catching_up(&self) -> bool {
        self.catching_up.load(Relaxed)
    }

    /// Repair is on but has not compared yet: catching up, lag unknown.
    fn begin(&self) {
        self.catching_up.store(true, Relaxed);
    }

    fn set(&self, lag: u64, catching_up: bool) {
        self.lag.store(lag, Relaxed);
        self.compared.store(true, Relaxed);
        self.catching_up.store(catching_up, Relaxed);
    }
}
