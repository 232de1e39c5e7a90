//! The set of records already stored, by idempotency key, so that a resent batch is stored once.
//!
//! Shippers number their records, so per sender the seen sequence numbers are kept as
//! ranges: a sender that never loses a batch costs one range however much it sends.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

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
    /// In sender order, so the holdings are listed a page at a time without sorting (the
    /// log thread waits on this set's lock meanwhile).
    seqs: BTreeMap<String, RangeSet>,
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

    /// Records every sequence number of `[lo, hi]` for `src` at once: what a split in the
    /// object store holds, listed by the manifest as ranges (millions of records each).
    pub fn insert_range(&mut self, src: &str, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        self.seqs
            .entry(src.to_string())
            .or_default()
            .insert_range(lo, hi);
    }

    /// Forgets every sequence number of `[lo, hi]` for `src`: a split past retention.
    pub fn remove_range(&mut self, src: &str, lo: u64, hi: u64) {
        if let Some(set) = self.seqs.get_mut(src) {
            set.remove_range(lo, hi);
            if set.ranges.is_empty() {
                self.seqs.remove(src);
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

    /// A page of the senders after `after` (all from the start with `None`), in name order,
    /// with their sequence numbers as sorted inclusive ranges: whole senders while they fit
    /// in `max` ranges, and at least one (a sender with more than `max` ranges is cut to its
    /// first `max`). The second value is the last sender listed when more follow: the
    /// `after` of the next page. Runs under the log thread's lock, so its cost is bounded by
    /// `max`, about a microsecond per range.
    pub fn seq_ranges(&self, after: Option<&str>, max: usize) -> (Vec<SeqRanges>, Option<String>) {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out: Vec<SeqRanges> = Vec::new();
        let mut left = max.max(1);
        for (src, set) in self.seqs.range::<str, _>((from, Bound::Unbounded)) {
            if !out.is_empty() && set.ranges.len() > left {
                let last = out.last().map(|(s, _)| s.clone());
                return (out, last);
            }
            let ranges: Vec<[u64; 2]> = set
                .ranges
                .iter()
                .take(left)
                .map(|(&s, &e)| [s, e])
                .collect();
            left -= ranges.len();
            out.push((src.clone(), ranges));
        }
        (out, None)
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

    /// Adds `[lo, hi]`, merging with the ranges it overlaps or touches.
    fn insert_range(&mut self, lo: u64, hi: u64) {
        let (mut start, mut end) = (lo, hi);
        // Ranges starting at or before `hi + 1` and ending at or after `lo - 1` merge.
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=hi.saturating_add(1))
            .rev()
            .take_while(|(_, &e)| e.saturating_add(1) >= lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Removes `[lo, hi]`, cutting the ranges it overlaps.
    fn remove_range(&mut self, lo: u64, hi: u64) {
        let hit: Vec<(u64, u64)> = self
            .ranges
            .range(..=hi)
            .rev()
            .take_while(|(_, &e)| e >= lo)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.ranges.remove(&s);
            if s < lo {
                self.ranges.insert(s, lo - 1);
            }
            if e > hi {
                self.ranges.insert(hi + 1, e);
            }
        }
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

    #[test]
    fn ranges_insert_and_remove_like_their_values_one_by_one() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let (mut d, mut one) = (Dedup::default(), Dedup::default());
            for _ in 0..8 {
                let lo = rng.u64(0..60);
                let hi = lo + rng.u64(0..12);
                let add = rng.bool();
                if add {
                    d.insert_range("a", lo, hi);
                } else {
                    d.remove_range("a", lo, hi);
                }
                for x in lo..=hi {
                    if add {
                        one.insert(&seq(x));
                    } else {
                        one.remove(&seq(x));
                    }
                }
                assert_eq!(d.seq_ranges(None, 1000), one.seq_ranges(None, 1000));
            }
        }
    }

    /// Holdings are listed a page at a time by sender, so every sender is listed however
    /// many ranges there are.
    #[test]
    fn ranges_are_listed_a_page_of_senders_at_a_time() {
        let mut d = Dedup::default();
        for (src, seqs) in [
            ("c", &[1, 3][..]),
            ("a", &[1, 3, 5]),
            ("b", &[1]),
            ("d", &[7]),
        ] {
            for &seq in seqs {
                d.insert_seq(src, seq);
            }
        }
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = d.seq_ranges(after.as_deref(), 2);
            pages.push(
                page.into_iter()
                    .map(|(s, r)| (s, r.len()))
                    .collect::<Vec<_>>(),
            );
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let names = |v: &[(&str, usize)]| v.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        let want: Vec<Vec<(String, usize)>> = vec![
            names(&[("a", 2)]),
            names(&[("b", 1)]),
            names(&[("c", 2)]),
            names(&[("d", 1)]),
        ];
        assert_eq!(pages, want);
    }
}
