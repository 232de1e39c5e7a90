//! A group's manifest: the list of splits in the bucket, with what each holds, so a
//! replica knows the group's history (and what it already has) without downloading it.

use std::collections::{BTreeSet, HashSet};

use sawmill_record::api::SourceRanges;
use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// `manifest.json`; changed only by [`super::Bucket::update_manifest`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub splits: Vec<SplitEntry>,
}

/// One split: an immutable object holding some segments of one partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplitEntry {
    /// Unique among the group's splits (32 hex digits).
    pub id: String,
    /// The partition's start and length, epoch seconds.
    pub start: i64,
    pub span: i64,
    /// The object's name under the group's root: `splits/START-SPAN/ID.split`.
    pub object: String,
    /// The object's size and sha256 (hex), checked on every download.
    pub bytes: u64,
    pub sha256: String,
    /// Format 2 splits: the size and sha256 of the tail (hot bytes, footer, trailer), which
    /// a search reads first to fetch only the parts of the split it needs. Absent for
    /// format 1 splits, which are read whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Tail>,
    pub records: u64,
    /// The tantivy segment ids (`SegmentId::uuid_string`) the split holds.
    pub segments: Vec<String>,
    /// The earliest and latest `ts` of its records, epoch µs.
    pub min_ts: i64,
    pub max_ts: i64,
    /// The `(_src, _seq)` ranges of its records.
    pub sources: Vec<SourceRanges>,
    /// Records identified by `_key` rather than `_src`/`_seq`.
    pub keyed: u64,
    /// The replica that uploaded it, and when (epoch seconds).
    pub sealed_by: String,
    pub sealed_at: i64,
}

/// The tail's object of the split at `object` (`splits/START-SPAN/ID.tail` beside
/// `ID.split`): the split's last bytes again, so one plain GET opens the split.
pub fn tail_object(object: &str) -> String {
    let stem = object.strip_suffix(".split").unwrap_or(object);
    format!("{stem}.tail")
}

/// The last `bytes` of a split, and their sha256 (hex).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tail {
    pub bytes: u64,
    pub sha256: String,
}

/// The object name of split `id` of the partition at `start` (relative to the group's root).
pub fn split_object(start: i64, span: i64, id: &str) -> String {
    format!("splits/{start}-{span}/{id}.split")
}

impl SplitEntry {
    /// Whether this entry can be trusted by an indexer whose partitions span `span`
    /// seconds: the manifest comes from the bucket, where anything may have written.
    pub fn check(&self, span: i64) -> Result<(), String> {
        let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if self.span != span || self.start.checked_rem(span) != Some(0) {
            return Err(format!(
                "split {} covers {} s from {}, not a partition of {span} s (give every replica of the group the same --partition)",
                self.id, self.span, self.start
            ));
        }
        if !hex32(&self.id)
            || self.segments.is_empty()
            || !self.segments.iter().all(|s| hex32(s))
            || self.object != split_object(self.start, self.span, &self.id)
        {
            return Err(format!("split {} is not a well-formed entry", self.id));
        }
        if self
            .sources
            .iter()
            .any(|r| r.ranges.iter().any(|[a, b]| a > b))
        {
            return Err(format!("split {} lists reversed ranges", self.id));
        }
        Ok(())
    }
}

impl Manifest {
    /// The splits of the partition starting at `start`.
    pub fn of_partition(&self, start: i64) -> Vec<&SplitEntry> {
        self.splits.iter().filter(|s| s.start == start).collect()
    }

    /// The ids of the segments of the partition at `start` already in the bucket.
    pub fn sealed_segments(&self, start: i64) -> HashSet<String> {
        self.of_partition(start)
            .into_iter()
            .flat_map(|s| s.segments.iter().cloned())
            .collect()
    }

    /// The starts of every partition with a split.
    pub fn starts(&self) -> BTreeSet<i64> {
        self.splits.iter().map(|s| s.start).collect()
    }

    /// Lists `entry`, a split of a partition whose local segments are `local`, unless it
    /// is listed already or another replica sealed that partition first.
    pub fn place(&mut self, entry: &SplitEntry, local: &HashSet<String>) -> Placement {
        // Listed already: an earlier attempt's write went through though its answer was
        // lost. Checked first, since the object is then the group's copy and must stay.
        if self.splits.iter().any(|s| s.id == entry.id) {
            return Placement::Listed;
        }
        // A split of this partition this replica does not hold: another replica sealed
        // first, and this one adopts its copy instead.
        if !self.sealed_segments(entry.start).is_subset(local) {
            return Placement::Lost;
        }
        self.splits.push(entry.clone());
        Placement::Added
    }
}

/// What [`Manifest::place`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Listed now.
    Added,
    /// Was listed already.
    Listed,
    /// Another replica's copy of the partition is listed; this split is not the group's.
    Lost,
}

#[cfg(test)]
pub(crate) fn entry(id: &str, start: i64, segments: &[&str]) -> SplitEntry {
    SplitEntry {
        id: id.to_string(),
        start,
        span: 3600,
        object: split_object(start, 3600, id),
        bytes: 0,
        sha256: String::new(),
        tail: None,
        records: 0,
        segments: segments.iter().map(|s| s.to_string()).collect(),
        min_ts: start * 1_000_000,
        max_ts: start * 1_000_000,
        sources: vec![],
        keyed: 0,
        sealed_by: "r1".into(),
        sealed_at: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_reads_back_the_contract_json() {
        let text = r#"{"version":1,"splits":[{"id":"a1","start":1764201600,"span":3600,
            "object":"splits/1764201600-3600/a1.split","bytes":123,"sha256":"ff",
            "records":42,"segments":["s1","s2"],"min_ts":1,"max_ts":2,
            "sources":[{"src":"abc","ranges":[[1,100]]}],"keyed":3,
            "sealed_by":"r1","sealed_at":5}]}"#;
        let m: Manifest = serde_json::from_str(text).unwrap();
        assert_eq!(m.splits[0].sources[0].ranges, vec![[1, 100]]);
        assert_eq!(m.splits[0].object, split_object(1764201600, 3600, "a1"));
        let back: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    /// Regression: a split whose listing went through but whose answer was lost was
    /// judged "lost to another replica" on the retry when another replica had sealed a
    /// different split of the partition, and its object, which the manifest lists, was
    /// deleted.
    #[test]
    fn a_split_listed_by_an_earlier_attempt_is_never_judged_lost() {
        let mine = entry("mine", 3600, &["s1"]);
        let local: HashSet<String> = ["s1".to_string()].into();
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            splits: vec![entry("theirs", 3600, &["s9"]), mine.clone()],
        };
        assert_eq!(m.place(&mine, &local), Placement::Listed);
        assert_eq!(m.splits.len(), 2);
        // Not listed: the other replica's split makes it lost; alone, it is added.
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            splits: vec![entry("theirs", 3600, &["s9"])],
        };
        assert_eq!(m.place(&mine, &local), Placement::Lost);
        let mut m = Manifest {
            version: MANIFEST_VERSION,
            splits: vec![entry("other-hour", 7200, &["s9"])],
        };
        assert_eq!(m.place(&mine, &local), Placement::Added);
        assert_eq!(m.place(&mine, &local), Placement::Listed);
    }

    #[test]
    fn partitions_are_found_by_start() {
        let m = Manifest {
            version: MANIFEST_VERSION,
            splits: vec![
                entry("a", 3600, &["s1", "s2"]),
                entry("b", 7200, &["s3"]),
                entry("c", 3600, &["s4"]),
            ],
        };
        let ids: Vec<&str> = m.of_partition(3600).iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        let mut segs: Vec<String> = m.sealed_segments(3600).into_iter().collect();
        segs.sort();
        assert_eq!(segs, ["s1", "s2", "s4"]);
        assert_eq!(m.starts().into_iter().collect::<Vec<_>>(), [3600, 7200]);
        assert!(m.of_partition(0).is_empty());
    }

    /// Entries from the bucket are checked before they are searched or trusted: a
    /// partition of another length, a name outside the group's `splits/`, a reversed range.
    #[test]
    fn entries_that_do_not_check_out_are_refused() {
        let id = "0123456789abcdef0123456789abcdef";
        let good = SplitEntry {
            id: id.into(),
            start: 7200,
            span: 3600,
            object: split_object(7200, 3600, id),
            bytes: 1,
            sha256: String::new(),
            tail: None,
            records: 1,
            segments: vec![id.into()],
            min_ts: 0,
            max_ts: 0,
            sources: vec![SourceRanges {
                src: "a".into(),
                ranges: vec![[1, 2]],
            }],
            keyed: 0,
            sealed_by: String::new(),
            sealed_at: 0,
        };
        assert_eq!(good.check(3600), Ok(()));
        type Spoil = fn(&mut SplitEntry);
        let bad: [(&str, Spoil); 7] = [
            ("another partition length", |e| e.span = 86_400),
            ("misaligned start", |e| e.start = 7201),
            ("zero span", |e| e.span = 0),
            ("an id that is not hex", |e| e.id = "../../x".into()),
            ("an object elsewhere", |e| {
                e.object = "../other/manifest.json".into()
            }),
            ("no segment", |e| e.segments.clear()),
            ("a reversed range", |e| e.sources[0].ranges = vec![[5, 1]]),
        ];
        for (what, spoil) in bad {
            let mut e = good.clone();
            spoil(&mut e);
            assert!(e.check(3600).is_err(), "{what} passed");
        }
    }
}
