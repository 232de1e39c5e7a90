//! Indexers as members of a cluster (issue 11): each belongs to a replica group and has a
//! replica id that lives in its data directory.

use crate::util::*;

/// What `/healthz` says of an indexer: (replica, group).
fn identity(ix: &Indexer) -> (String, String) {
    let (status, v) = get(&ix.api("/healthz"));
    assert_eq!(status, 200, "{v}");
    let health: sawmill_record::api::Health = serde_json::from_value(v.clone()).unwrap();
    (health.replica, health.group)
}

#[test]
fn a_replica_keeps_its_id_with_its_data_and_a_new_directory_is_a_new_replica() {
    let dir = TempDir::new("identity");
    let data = dir.path().join("a");
    let ix = Indexer::start(&data, &["--group", "g1"]);
    let (first, group) = identity(&ix);
    assert_eq!(group, "g1");
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    ix.terminate();

    // The same data directory after a restart is the same replica, whatever its group flag.
    let ix = Indexer::start(&data, &[]);
    assert_eq!(identity(&ix), (first.clone(), "default".to_string()));
    ix.terminate();

    // An empty directory (a task moved to another machine) is another replica.
    let ix = Indexer::start(&dir.path().join("b"), &["--group", "g1"]);
    let (other, group) = identity(&ix);
    assert_eq!(group, "g1");
    assert_ne!(other, first);
}

#[test]
fn a_group_name_that_cannot_be_a_label_is_refused_at_start() {
    let out = sawmill()
        .args(["indexer", "--listen", "127.0.0.1:0", "--group", "g 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("may only hold letters, digits"),
        "the refusal says why: {err}"
    );
}

/// Whether two replicas hold the same `(_src, _seq)` set; how many each holds if not.
fn same(a: &Indexer, b: &Indexer) -> Result<(), String> {
    let (ka, kb) = (seq_keys(a, "*"), seq_keys(b, "*"));
    if ka == kb {
        Ok(())
    } else {
        Err(format!("{} and {} records", ka.len(), kb.len()))
    }
}

/// Issue 11 as a whole: a shipper finds two groups of two replicas through one DNS name and
/// places every line on one group; one replica is killed with `kill -9` and replaced at its
/// address by one on an empty data directory (an orchestrator moving the task); it copies
/// its group's history from its peer while lines keep coming; `query` counts every line
/// once throughout, and at the end both replicas of each group hold the same records.
#[test]
fn a_cluster_found_by_dns_survives_a_replica_moved_to_an_empty_disk() {
    let dir = TempDir::new("whole-cluster");
    let port = free_port();
    let addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let hosts = dir.path().join("hosts");
    let entries: Vec<(&str, &str)> = addrs.iter().map(|a| (*a, "sawmill-indexer")).collect();
    hosts_file(&hosts, &entries);
    let target = format!("dns+http://sawmill-indexer:{port}");
    let start = |i: usize, data: &std::path::Path| {
        let group = if i < 2 { "g0" } else { "g1" };
        let listen = format!("{}:{port}", addrs[i]);
        let args = [
            "--group",
            group,
            "--peer",
            &target,
            "--discovery-interval",
            "1s",
        ];
        Indexer::start_in(&hosts, &listen, data, &args)
    };
    let data: Vec<_> = (0..4).map(|i| dir.path().join(format!("ix{i}"))).collect();
    let mut ixs: Vec<Indexer> = (0..4).map(|i| start(i, &data[i])).collect();
    let shipper_dir = dir.path().join("shipper");
    std::fs::create_dir_all(&shipper_dir).unwrap();
    let shipper = Shipper::start_in(
        &hosts,
        &shipper_dir,
        &[&target],
        &["--discovery-interval", "1s"],
    );
    let query = crate::fanout::Proc::start(
        &hosts,
        "query",
        &["--indexer", &target, "--discovery-interval", "1s"],
    );
    let total = |q: &crate::fanout::Proc| {
        get_ok(&format!(
            "{}/api/v1/search?q=service:checkout&limit=0",
            q.url
        ))["total"]
            .as_u64()
            .unwrap()
    };
    let counts = |q: &crate::fanout::Proc, n: u64| match total(q) {
        t if t == n => Ok(()),
        t => Err(format!("query counts {t}")),
    };
    // Placed over the groups the shipper knows: both, from the first line.
    shipper.knows_replicas(&["g0", "g1"], 2);
    // 24 blocks of 256 (placement's unit): all on one group once in millions of runs, where
    // 3,000 lines (12 blocks) were once in 2,048.
    for i in 0..6000 {
        shipper.send(format!("<14>checkout[7]: order {i} paid").as_bytes());
    }
    eventually("query counts 6000", 90, || counts(&query, 6000));
    eventually("replicas of a group agree", 60, || {
        same(&ixs[0], &ixs[1])?;
        same(&ixs[2], &ixs[3])
    });
    let (g0, g1) = (seq_keys(&ixs[0], "*"), seq_keys(&ixs[2], "*"));
    assert!(g0.is_disjoint(&g1), "a line is in both groups");
    assert!(
        !g0.is_empty() && !g1.is_empty(),
        "{} / {}",
        g0.len(),
        g1.len()
    );

    // The orchestrator moves replica 1: kill -9, and a new task at its address on an empty disk.
    ixs.remove(1).kill9();
    std::fs::remove_dir_all(&data[1]).unwrap();
    ixs.insert(1, start(1, &data[1]));
    for i in 6000..7000 {
        shipper.send(format!("<14>checkout[7]: order {i} paid").as_bytes());
    }
    eventually("query counts 7000", 90, || counts(&query, 7000));
    eventually("the new replica holds its group's history", 90, || {
        same(&ixs[1], &ixs[0])
    });
    eventually("g1's replicas agree", 60, || same(&ixs[2], &ixs[3]));
    let held = seq_keys(&ixs[0], "*").len() + seq_keys(&ixs[2], "*").len();
    assert_eq!(held, 7000, "every line in exactly one group");
    // `lag_records` is what the last repair round found: a round that ended while the peer
    // listed records it had not committed yet says so until the next round.
    eventually("the new replica reports no lag", 30, || {
        let health = get_ok(&ixs[1].api("/healthz"));
        match health["lag_records"] == 0 && health["catching_up"] == false {
            true => Ok(()),
            false => Err(health.to_string()),
        }
    });
    assert_eq!(total(&query), 7000);
    shipper.terminate();
}

/// Every part that takes indexer URLs takes `https://` and the DNS forms with https, and a
/// CA file it cannot read stops it at start, naming the file, rather than leaving every
/// replica unreachable afterwards.
#[test]
fn a_ca_file_that_cannot_be_read_stops_every_part_at_start() {
    let dir = TempDir::new("https");
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    let missing = dir.path().join("no-such-ca.pem");
    let (state_arg, data_arg, ca) = (
        state.to_str().unwrap(),
        data.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    for args in [
        vec![
            "shipper",
            "--indexer",
            "https://127.0.0.1:1",
            "--state",
            state_arg,
        ],
        vec![
            "ui",
            "--listen",
            "127.0.0.1:0",
            "--indexer",
            "dns+https://tasks.x:443",
        ],
        vec![
            "query",
            "--listen",
            "127.0.0.1:0",
            "--indexer",
            "https://127.0.0.1:1",
        ],
        vec![
            "indexer",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_arg,
            "--peer",
            "dnssrv+https://_x._tcp.y",
        ],
    ] {
        let mut cmd = sawmill();
        cmd.args(&args).args(["--ca-file", ca]);
        let (status, _, err) = run_to_exit(cmd, 30);
        assert_eq!(status.code(), Some(1), "{args:?} started: {err}");
        assert!(err.contains("no-such-ca.pem"), "{args:?}: {err}");
    }
}
