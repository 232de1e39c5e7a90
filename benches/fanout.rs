//! What a search costs through `sawmill query` as the cluster grows: the four queries of the
//! indexer benchmark (request_id lookup, newest 100 hits of a common word, a 60-bucket
//! histogram, top-10 services) on one indexer holding N records, then through `query` over
//! 1 group of N, 2 groups of N/2 and 4 groups of N/4 (records placed on groups as the
//! shipper places them), median and p95 of each. Target: a request_id lookup over 4 groups
//! at most 2 ms slower at the median than on the one indexer.
//!
//! `cargo bench --bench fanout` (N = 1 000 000; `SAWMILL_BENCH_RECORDS` to change it,
//! `SAWMILL_BENCH_ITERS` for the runs per query).

mod common;

use std::time::Instant;

use common::{env_or, generate, ingest, start_sawmill, start_server, time_it, Server, BATCH};
use sawmill_cluster::{group_for, PlacementKey};

/// A running `sawmill query` over `indexers`, killed when dropped.
struct Query(Server);

fn start_query(indexers: &[&Server]) -> Query {
    let mut args = Vec::new();
    for ix in indexers {
        args.extend(["--indexer", ix.url.as_str()]);
    }
    Query(start_sawmill("query", &args))
}

/// The NDJSON batches split by the group each line's record is placed on.
fn split(batches: &[Vec<u8>], groups: &[String]) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); groups.len()];
    for (b, batch) in batches.iter().enumerate() {
        let mut parts = vec![Vec::new(); groups.len()];
        for (j, line) in batch.split_inclusive(|c| *c == b'\n').enumerate() {
            // The generator numbers records in order: `_seq` is the line's position.
            let seq = (b * BATCH + j) as u64;
            let g = group_for(
                groups.iter().map(String::as_str),
                &PlacementKey::of("bench", seq),
            )
            .expect("a group");
            let i = groups.iter().position(|x| x == g).unwrap();
            parts[i].extend_from_slice(line);
        }
        for (i, p) in parts.into_iter().enumerate() {
            out[i].push(p);
        }
    }
    out
}

/// Waits until `url` reports `n` records in all.
fn wait_total(client: &reqwest::blocking::Client, url: &str, n: usize) {
    for _ in 0..600 {
        let text = client
            .get(format!("{url}/api/v1/search?q=*&limit=0"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["total"].as_u64() == Some(n as u64) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{url} never held {n} records");
}

fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 1_000_000);
    let iters: usize = env_or("SAWMILL_BENCH_ITERS", 40);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-fanout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!("generating {n} records ...");
    let d = generate(n);
    let client = reqwest::blocking::Client::new();

    // One indexer of N, then 1, 2 and 4 groups holding the same records between them.
    let one = start_server(&tmp.join("one"), &["--group", "one"]);
    let t = Instant::now();
    ingest(&d.batches, &one.url);
    wait_total(&client, &one.url, n);
    println!(
        "one indexer of {n}: filled in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let mut layouts: Vec<(usize, Vec<Server>)> = Vec::new();
    for groups in [2usize, 4] {
        let names: Vec<String> = (0..groups).map(|g| format!("g{g}")).collect();
        let parts = split(&d.batches, &names);
        let mut servers = Vec::new();
        for (name, batches) in names.iter().zip(&parts) {
            let s = start_server(&tmp.join(format!("{groups}-{name}")), &["--group", name]);
            ingest(batches, &s.url);
            servers.push(s);
        }
        let t = Instant::now();
        let held: Vec<usize> = parts
            .iter()
            .map(|b| {
                b.iter()
                    .map(|x| x.iter().filter(|c| **c == b'\n').count())
                    .sum()
            })
            .collect();
        for (s, h) in servers.iter().zip(&held) {
            wait_total(&client, &s.url, *h);
        }
        println!(
            "{groups} groups: records per group {held:?} (searchable {:.0} s after the last ingest)",
            t.elapsed().as_secs_f64()
        );
        layouts.push((groups, servers));
    }
    let mut targets: Vec<(String, String)> = vec![("one indexer (direct)".into(), one.url.clone())];
    let mut queries = vec![start_query(&[&one])];
    for (groups, servers) in &layouts {
        queries.push(start_query(&servers.iter().collect::<Vec<_>>()));
        let _ = groups;
    }
    targets.push(("query over 1 group".into(), queries[0].0.url.clone()));
    targets.push(("query over 2 groups".into(), queries[1].0.url.clone()));
    targets.push(("query over 4 groups".into(), queries[2].0.url.clone()));

    let cases = common::http_queries(&d.request_ids);
    println!("\n== queries over {n} records ({iters} runs each, after 3 warm-up runs): median / p95 in ms");
    print!("{:<36}", "query");
    for (name, _) in &targets {
        print!(" {name:>22}");
    }
    println!();
    let mut lookup = (0.0, 0.0);
    for (name, path) in &cases {
        print!("{name:<36}");
        for (t, (_, base)) in targets.iter().enumerate() {
            let (m, p) = time_it(iters, |i| {
                let r = client.get(format!("{base}{}", path(i))).send().unwrap();
                assert!(r.status().is_success(), "{}", r.text().unwrap());
                r.bytes().unwrap();
            });
            if *name == "request_id lookup" && t == 0 {
                lookup.0 = m;
            }
            if *name == "request_id lookup" && t == 3 {
                lookup.1 = m;
            }
            print!(" {:>10.2} / {:>9.2}", m, p);
        }
        println!();
    }
    let slower = lookup.1 - lookup.0;
    println!(
        "\nrequest_id lookup: 4 groups of N/4 through query {:.2} ms vs one indexer of N {:.2} ms at the median: {slower:+.2} ms (target <= +2 ms: {})",
        lookup.1,
        lookup.0,
        if slower <= 2.0 { "met" } else { "NOT met" }
    );
    drop(queries);
    drop(layouts);
    drop(one);
    let _ = std::fs::remove_dir_all(&tmp);
}
