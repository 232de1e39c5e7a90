//! Placement benchmark (issue 11, point 6): how evenly rendezvous hashing of (sender, block
//! of sequence numbers) spreads records over groups, for 16 and 64 simulated senders
//! sending equal volumes into 2, 3 and 5 groups, and for one busy sender alone; plus what
//! placing a record costs.
//!
//! Senders are named as real shippers name themselves (`HOST-<16 hex digits>`) and number
//! their records from 0, as a fresh state directory does. Each configuration is run over
//! several seeds of sender names, and the worst run is shown beside the median.
//!
//! Run: `cargo bench --bench placement` (`SAWMILL_BENCH_RECORDS` records per sender,
//! default 100000; `SAWMILL_BENCH_SEEDS` runs per configuration, default 20).

use std::time::Instant;

use sawmill_cluster::{group_for, PlacementKey};

mod common;

use common::env_or;

/// Records per group when `senders` senders send `per` records each into `groups`.
fn spread(names: &[String], per: u64, groups: &[String]) -> Vec<u64> {
    let mut counts = vec![0u64; groups.len()];
    for src in names {
        for seq in 0..per {
            let g = group_for(
                groups.iter().map(String::as_str),
                &PlacementKey::of(src, seq),
            )
            .expect("groups");
            counts[groups.iter().position(|x| x == g).unwrap()] += 1;
        }
    }
    counts
}

/// `n` sender names from one seed.
fn senders(n: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| format!("host{i}-{:016x}", rng.u64(..)))
        .collect()
}

fn ratio(counts: &[u64]) -> (u64, u64, f64) {
    let (max, min) = (*counts.iter().max().unwrap(), *counts.iter().min().unwrap());
    (max, min, max as f64 / min.max(1) as f64)
}

fn main() {
    let per: u64 = env_or("SAWMILL_BENCH_RECORDS", 100_000);
    let seeds: u64 = env_or("SAWMILL_BENCH_SEEDS", 20);
    println!("placement balance: {per} records per sender, {seeds} sets of sender names each");
    println!(
        "{:>8} {:>7} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "senders", "groups", "max (worst)", "min (worst)", "max/min", "median", "max share"
    );
    for n in [1usize, 16, 64] {
        for g in [2usize, 3, 5] {
            let groups: Vec<String> = (0..g).map(|i| format!("g{i}")).collect();
            let mut runs: Vec<(u64, u64, f64)> = (0..seeds)
                .map(|seed| ratio(&spread(&senders(n, seed), per, &groups)))
                .collect();
            runs.sort_by(|a, b| a.2.total_cmp(&b.2));
            let median = runs[runs.len() / 2].2;
            let worst = runs[runs.len() - 1];
            let share = worst.0 as f64 / (per * n as u64) as f64 * 100.0;
            println!(
                "{n:>8} {g:>7} {:>12} {:>12} {:>10.3} {:>10.3} {:>11.1}%",
                worst.0, worst.1, worst.2, median, share
            );
        }
    }
    // The batcher places a record by its block (256 sequence numbers): it hashes once per
    // block and reuses the answer for the block's other records. This is the cost without
    // that reuse, per record.
    let names = senders(1, 7);
    for g in [2usize, 5] {
        let groups: Vec<String> = (0..g).map(|i| format!("g{i}")).collect();
        let n = 2_000_000u64;
        let t = Instant::now();
        let mut sink = 0usize;
        for seq in 0..n {
            let key = PlacementKey::of(&names[0], seq);
            sink += group_for(groups.iter().map(String::as_str), &key)
                .unwrap()
                .len();
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("group_for over {g} groups: {ns:.1} ns per record, uncached ({sink})");
    }
}
