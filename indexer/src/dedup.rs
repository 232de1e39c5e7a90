//! The set of records already stored, by idempotency key, so that a resent batch is stored once.
//!
//! Shippers number their records, so per sender the seen sequence numbers are kept as
//! ranges: a sender that never loses a batch costs one range however much it sends.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What makes a record unique to its sender, so a resent batch is stored once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// A shipper's stable id and per-sender sequence number (`_src`, `_seq`).
    Seq { src: String, seq: u64 },
    /// An explicit document id (Elasticsearch `_id`), scoped by index (stored as `_key`).
    Id(String),
}

/// One sender's sequence numbers held, as sorted inclusive `[first, last]` ranges.
pub type SeqRanges = (String, Vec<[u64; 2]>);

#[derive(Default)]
pub struct Dedup {
    seqs: HashMap<String, RangeSet>,
    ids: HashSet<String>,
}

impl Dedup {
    /// Records `key`; false if it was already there.
    pub fn insert(&mut self, key: &DedupKey) -> bool {
        match key {
            DedupKey::Seq { src, seq } => self.insert_seq(src, *seq),
            DedupKey::Id(id) => {
                if self.ids.contains(id.as_str()) {
                    false
                } else {
                    self.ids.insert(id.clone());
                    true
                }
            }
        }
    }

    /// [`Dedup::insert`] for a sender's sequence number, without building a key.
    pub fn insert_seq(&mut self, src: &str, seq: u64) -> bool {
        match self.seqs.get_mut(src) {
            Some(set) => set.insert(seq),
            None => {
                let mut set = RangeSet::default();
                set.insert(seq);
                self.seqs.insert(src.to_string(), set);
                true
            }
        }
    }

    /// Forgets `key` again: a write that failed must not count as stored.
    pub fn remove(&mut self, key: &DedupKey) {
        match key {
            DedupKey::Seq { src, seq } => {
                if let Some(set) = self.seqs.get_mut(src.as_str()) {
                    set.remove(*seq);
                    // A sender none of whose records is held any more is not listed.
                    if set.ranges.is_empty() {
                        self.seqs.remove(src.as_str());
                    }
                }
            }
            DedupKey::Id(id) => {
                self.ids.remove(id.as_str());
            }
        }
    }

    /// Whether `id` (a `_key`) is held.
    pub fn has_id(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Every sender's sequence numbers as sorted inclusive ranges, senders in name order,
    /// at most `max` ranges in all; true when some were left out. Repair copies this under
    /// the log thread's lock, so it costs ingest about a microsecond per range.
    pub fn seq_ranges(&self, max: usize) -> (Vec<SeqRanges>, bool) {
        let mut srcs: Vec<&String> = self.seqs.keys().collect();
        srcs.sort();
        let mut out = Vec::with_capacity(srcs.len());
        let mut left = max;
        for src in srcs {
            let set = &self.seqs[src];
            if left == 0 {
                return (out, true);
            }
            let ranges: Vec<[u64; 2]> = set
                .ranges
                .iter()
                .take(left)
                .map(|(&s, &e)| [s, e])
                .collect();
            left -= ranges.len();
            let cut = ranges.len() < set.ranges.len();
            out.push((src.clone(), ranges));
            if cut {
                return (out, true);
            }
        }
        (out, false)
    }

    #[cfg(test)]
    pub fn len_ranges(&self) -> usize {
        self.seqs.values().map(|s| s.ranges.len()).sum::<usize>() + self.ids.len()
    }
}

/// Disjoint, non-adjacent inclusive ranges `start -> end`.
#[derive(Default, Debug)]
struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    fn insert(&mut self, x: u64) -> bool {
        let below = self.ranges.range(..=x).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, e)) = below {
            if e >= x {
                return false;
            }
        }
        let mut start = x;
        let mut end = x;
        if let Some((s, e)) = below {
            if e.checked_add(1) == Some(x) {
                start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(next) = x.checked_add(1) {
            if let Some(e) = self.ranges.remove(&next) {
                end = e;
            }
        }
        self.ranges.insert(start, end);
        true
    }

    fn remove(&mut self, x: u64) {
        let Some((&s, &e)) = self.ranges.range(..=x).next_back() else {
            return;
        };
        if e < x {
            return;
        }
        self.ranges.remove(&s);
        if s < x {
            self.ranges.insert(s, x - 1);
        }
        if x < e {
            self.ranges.insert(x + 1, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> DedupKey {
        DedupKey::Seq {
            src: "a".into(),
            seq: n,
        }
    }

    #[test]
    fn sequences_merge_into_ranges_and_repeat_is_refused() {
        let mut d = Dedup::default();
        for n in [1, 3, 2, 5, 4] {
            assert!(d.insert(&seq(n)), "{n} is new");
        }
        assert_eq!(d.len_ranges(), 1);
        assert!(!d.insert(&seq(3)));
        d.remove(&seq(3));
        assert_eq!(d.len_ranges(), 2);
        assert!(d.insert(&seq(3)));
        assert_eq!(d.len_ranges(), 1);
        assert!(d.insert(&DedupKey::Id("x".into())));
        assert!(!d.insert(&DedupKey::Id("x".into())));
    }
}
