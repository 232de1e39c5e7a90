//! Which group a record goes to: rendezvous (highest-random-weight) hashing over the group
//! names, of a key fixed for each record.
//!
//! The key is the record's sender (`_src`) with a block of [`PLACEMENT_BLOCK`] of its
//! sequence numbers, not the sender alone: hashing whole senders onto groups would put all
//! of one busy host on one group (Loki had to add stream sharding for that), while hashing
//! single records would scatter every batch. Blocks keep a batch's records together and
//! still spread one sender over every group.
//!
//! Rendezvous hashing moves only the blocks that the new group wins when a group is added
//! (about 1/N of them), and every party computes the same answer from the group names
//! alone. The hash is spelled out here (FNV-1a, then a 64-bit finaliser) rather than taken
//! from `std`, whose hashers may change between Rust releases: a shipper upgraded in the
//! middle of a resend must still send a batch where it went before.

/// Sequence numbers per placement block.
pub const PLACEMENT_BLOCK: u64 = 256;

/// Bytes per placement block of a file source, whose records are keyed by their byte
/// offset rather than by one number each: 256 bytes would be two or three lines, so a
/// batch of a file would be cut into many blocks and its checkpoint list fragmented;
/// 64 KiB is a few hundred lines, about a sequence block's worth.
pub const FILE_PLACEMENT_BLOCK: u64 = 65_536;

/// What a record's group is chosen by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlacementKey<'a> {
    /// The sender (`_src`).
    pub src: &'a str,
    /// Its sequence number divided by [`PLACEMENT_BLOCK`].
    pub block: u64,
}

impl<'a> PlacementKey<'a> {
    /// The key of the record `(src, seq)`.
    pub fn of(src: &'a str, seq: u64) -> PlacementKey<'a> {
        PlacementKey {
            src,
            block: seq / PLACEMENT_BLOCK,
        }
    }

    /// The key of a file line at byte `offset` of the file `src` (see
    /// [`FILE_PLACEMENT_BLOCK`]).
    pub fn of_offset(src: &'a str, offset: u64) -> PlacementKey<'a> {
        PlacementKey {
            src,
            block: offset / FILE_PLACEMENT_BLOCK,
        }
    }
}

/// The weight of `group` for `key`: the group with the highest weight gets the record.
pub fn weight(group: &str, key: &PlacementKey<'_>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(group.as_bytes());
    // A byte no name contains keeps ("ab", "c") and ("a", "bc") apart.
    eat(&[0xff]);
    eat(key.src.as_bytes());
    eat(&[0xff]);
    eat(&key.block.to_le_bytes());
    mix(h)
}

/// The finaliser of SplitMix64: FNV alone spreads keys that differ in their last bytes
/// poorly, and consecutive blocks do.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The group `key` is placed on, among `groups`; `None` when there are none. Ties (as good
/// as impossible) go to the smaller name, so the answer never depends on the order given.
pub fn group_for<'g, I>(groups: I, key: &PlacementKey<'_>) -> Option<&'g str>
where
    I: IntoIterator<Item = &'g str>,
{
    groups
        .into_iter()
        .map(|g| (weight(g, key), g))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, g)| g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g{i}")).collect()
    }

    /// Records per group when `senders` senders send `per_sender` records each.
    fn spread(groups: &[String], senders: usize, per_sender: u64) -> HashMap<&str, u64> {
        let mut counts: HashMap<&str, u64> = groups.iter().map(|g| (g.as_str(), 0)).collect();
        for s in 0..senders {
            let src = format!("host-{s:02}-{:016x}", (s as u64).wrapping_mul(0x9e37_79b9));
            let mut seq = 0;
            while seq < per_sender {
                let n = PLACEMENT_BLOCK.min(per_sender - seq);
                let key = PlacementKey::of(&src, seq);
                let g = group_for(groups.iter().map(String::as_str), &key).unwrap();
                *counts.get_mut(g).unwrap() += n;
                seq += n;
            }
        }
        counts
    }

    #[test]
    fn the_hash_is_fixed_across_releases() {
        // A changed hash would send a resent batch to another group: stored twice.
        assert_eq!(
            weight("g0", &PlacementKey { src: "s", block: 0 }),
            0x12f5_63d8_a526_51c3
        );
    }

    #[test]
    fn a_file_block_is_64k_of_offsets() {
        assert_eq!(PlacementKey::of_offset("f", 65_535).block, 0);
        assert_eq!(PlacementKey::of_offset("f", 65_536).block, 1);
    }

    #[test]
    fn sixteen_equal_senders_fill_two_groups_evenly() {
        let groups = names(2);
        let counts = spread(&groups, 16, 100_000);
        let total: u64 = counts.values().sum();
        for (g, n) in &counts {
            let share = *n as f64 / total as f64;
            assert!((0.4..=0.6).contains(&share), "{g}: {share:.3} of {total}");
        }
    }

    #[test]
    fn one_busy_sender_spreads_over_both_groups() {
        let groups = names(2);
        let counts = spread(&groups, 1, 60_000);
        for (g, n) in &counts {
            assert!(*n >= 12_000, "{g} got {n} of 60000");
        }
    }

    #[test]
    fn adding_a_group_moves_only_what_the_new_group_wins() {
        let (three, four) = (names(3), names(4));
        let (mut moved, mut to_new, total) = (0, 0, 10_000);
        for block in 0..total {
            let key = PlacementKey { src: "host", block };
            let before = group_for(three.iter().map(String::as_str), &key).unwrap();
            let after = group_for(four.iter().map(String::as_str), &key).unwrap();
            if before != after {
                moved += 1;
                to_new += u32::from(after == "g3");
            }
        }
        assert_eq!(moved, to_new, "a block moved between two old groups");
        let share = f64::from(moved) / total as f64;
        assert!(
            (0.2..0.3).contains(&share),
            "moved {share:.3}, about 1/4 expected"
        );
    }

    #[test]
    fn the_order_groups_are_given_in_does_not_matter() {
        let key = PlacementKey { src: "h", block: 7 };
        let a = group_for(["a", "b", "c"], &key);
        let b = group_for(["c", "a", "b"], &key);
        assert_eq!(a, b);
        assert_eq!(group_for(std::iter::empty(), &key), None);
    }
}
