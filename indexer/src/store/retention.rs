//! Retention: which partitions go (older than `--retention`, or the oldest while the
//! partitions take more than `--max-disk`), how one is removed, and the ingest check that
//! refuses a record retention would remove at once.

use std::time::Duration;

use time::OffsetDateTime;

use sawmill_record::time::format_rfc3339;

use crate::layout;
use crate::partition::{Partition, Partitions};
use crate::store::config::StoreConfig;

/// The starts of the partitions retention removes now (`now` in epoch seconds).
pub fn doomed(partitions: &Partitions, cfg: &StoreConfig, now: i64) -> Vec<i64> {
    let mut doomed = Vec::new();
    let map = partitions.read();
    if let Some(ret) = cfg.retention {
        let cutoff = now.saturating_sub(ret.as_secs().min(i64::MAX as u64) as i64);
        doomed.extend(map.values().filter(|p| p.end <= cutoff).map(|p| p.start));
    }
    if let Some(max) = cfg.max_disk {
        let kept: Vec<_> = map
            .values()
            .filter(|p| !doomed.contains(&p.start))
            .collect();
        let mut total: u64 = kept.iter().map(|p| p.disk_bytes()).sum();
        // Oldest first, and never the partition of the present (nor a future one): that is
        // where acknowledged records are arriving.
        for p in kept.iter().filter(|p| p.end <= now) {
            if total <= max {
                break;
            }
            total = total.saturating_sub(p.disk_bytes());
            doomed.push(p.start);
        }
    }
    doomed
}

/// Whether `p` is past `--retention` (as against removed for `--max-disk`).
pub fn past_age(p: &Partition, cfg: &StoreConfig, now: i64) -> bool {
    cfg.retention
        .is_some_and(|ret| p.end <= now.saturating_sub(ret.as_secs().min(i64::MAX as u64) as i64))
}

/// Removes a partition's files, renamed first (see [`layout::trash_dir`]).
pub fn remove(p: &Partition) {
    let trash = layout::trash_dir(&p.dir);
    let res = std::fs::rename(&p.dir, &trash).and_then(|_| std::fs::remove_dir_all(&trash));
    if let Err(e) = res {
        tracing::error!(error = %e, partition = %p.dir.display(), "Could not remove partition.");
    }
}

/// Retention would remove a record this old at once, so ingest refuses it up front, as
/// Loki does; `Err` is the reason.
pub fn check_age(
    retention: Option<Duration>,
    ts: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), String> {
    if let Some(ret) = retention {
        if now
            .checked_sub(time::Duration::seconds(
                ret.as_secs().min(i64::MAX as u64) as i64
            ))
            .is_some_and(|cutoff| ts < cutoff)
        {
            return Err(format!(
                "`ts` {} is older than the retention period ({} s)",
                format_rfc3339(ts),
                ret.as_secs()
            ));
        }
    }
    Ok(())
}
