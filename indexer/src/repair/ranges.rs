//! Arithmetic on sorted, disjoint, inclusive `[first, last]` ranges of `_seq` values: what
//! a peer holds minus what this replica holds is what it must copy.

/// Sorted, disjoint inclusive ranges.
pub type Ranges = Vec<[u64; 2]>;

/// Sorts and merges overlapping or adjacent ranges; drops reversed ones (bad input).
pub fn normalize(mut r: Ranges) -> Ranges {
    r.retain(|[a, b]| a <= b);
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for [a, b] in r {
        match out.last_mut() {
            Some(last) if a <= last[1].saturating_add(1) => last[1] = last[1].max(b),
            _ => out.push([a, b]),
        }
    }
    out
}

/// The values of `a` that are not in `b` (both normalized).
pub fn subtract(a: &[[u64; 2]], b: &[[u64; 2]]) -> Ranges {
    let mut out = Vec::new();
    let mut j = 0;
    for &[mut lo, hi] in a {
        while j < b.len() && b[j][1] < lo {
            j += 1;
        }
        let mut k = j;
        let mut done = false;
        while k < b.len() && b[k][0] <= hi {
            if b[k][0] > lo {
                out.push([lo, b[k][0] - 1]);
            }
            if b[k][1] >= hi {
                done = true;
                break;
            }
            lo = b[k][1] + 1;
            k += 1;
        }
        if !done {
            out.push([lo, hi]);
        }
    }
    out
}

/// The values in both `a` and `b` (both normalized).
pub fn intersect(a: &[[u64; 2]], b: &[[u64; 2]]) -> Ranges {
    subtract(a, &subtract(a, b))
}

/// How many values the ranges hold.
pub fn count(r: &[[u64; 2]]) -> u64 {
    r.iter()
        .map(|[a, b]| (b - a).saturating_add(1))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_peer_holds_minus_what_we_hold() {
        let peer = vec![[1, 100], [200, 300]];
        let ours = vec![[1, 10], [20, 30], [95, 210], [300, 400]];
        let missing = subtract(&peer, &ours);
        assert_eq!(missing, vec![[11, 19], [31, 94], [211, 299]]);
        assert_eq!(count(&missing), 9 + 64 + 89);
        assert_eq!(subtract(&peer, &[]), peer);
        assert_eq!(subtract(&peer, &[[0, u64::MAX]]), Vec::<[u64; 2]>::new());
        assert_eq!(
            subtract(&[[5, u64::MAX]], &[[7, 7]]),
            vec![[5, 6], [8, u64::MAX]]
        );
    }

    #[test]
    fn ranges_merge_and_count() {
        assert_eq!(
            normalize(vec![[5, 9], [1, 3], [4, 4], [20, 19]]),
            vec![[1, 9]]
        );
        assert_eq!(count(&[[0, u64::MAX]]), u64::MAX);
        assert_eq!(
            intersect(&[[0, 10], [20, 30]], &[[5, 25]]),
            vec![[5, 10], [20, 25]]
        );
    }
}
