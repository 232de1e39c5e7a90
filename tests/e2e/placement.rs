//! The shipper across machines (issue 11, points 2–4): replicas found through DNS names (a
//! private `/etc/hosts`), each record placed on exactly one group and sent to every replica
//! of it, replicas coming and going, and `--ack-replicas`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn total(ix: &Indexer, q: &str) -> u64 {
    get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q))))["total"]
        .as_u64()
        .unwrap()
}

/// An indexer of `group` at `ip:port`, seeing the test's hosts file as the shipper does.
fn replica(dir: &Path, ip: &str, port: &str, group: &str) -> Indexer {
    Indexer::start_in(
        &dir.join("hosts"),
        &format!("{ip}:{port}"),
        &dir.join(format!("{group}-{ip}")),
        &["--group", group, "--commit-interval", "100ms"],
    )
}

/// Sends lines `n=from..to` of `service`, slowly enough for the queue to keep up.
fn send_lines(sh: &Shipper, service: &str, from: u64, to: u64) {
    for i in from..to {
        sh.send(format!("<13>Nov 27 07:57:02 {service}[1]: n={i} a line of {service}").as_bytes());
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every record of `k` belongs to `group` of `groups` by placement.
fn all_placed_on(k: &BTreeSet<(String, u64)>, groups: &[&str], group: &str) {
    for (src, seq) in k {
        let key = sawmill_cluster::PlacementKey::of(src, *seq);
        let want = sawmill_cluster::group_for(groups.iter().copied(), &key);
        assert_eq!(want, Some(group), "{src} {seq} is in {group}");
    }
}

fn queue_drops(sh: &Shipper) -> f64 {
    sh.metric("sawmill_shipper_queue_records_dropped_total{source=\"syslog_unix\"}")
}

fn no_queue_drops(sh: &Shipper) {
    assert_eq!(
        queue_drops(sh),
        0.0,
        "this test is about placement, not the queue"
    );
}

#[test]
fn two_groups_of_two_found_by_name_hold_every_line_exactly_once() {
    let dir = TempDir::new("place2x2");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    hosts_file(
        &hosts,
        &[
            ("127.0.0.2", "tasks.g0"),
            ("127.0.0.3", "tasks.g0"),
            ("127.0.0.4", "tasks.g1"),
            ("127.0.0.5", "tasks.g1"),
        ],
    );
    let g0 = [
        replica(dir.path(), "127.0.0.2", &port, "g0"),
        replica(dir.path(), "127.0.0.3", &port, "g0"),
    ];
    let g1 = [
        replica(dir.path(), "127.0.0.4", &port, "g1"),
        replica(dir.path(), "127.0.0.5", &port, "g1"),
    ];
    let sh = Shipper::start_in(
        &hosts,
        dir.path(),
        &[
            &format!("dns+http://tasks.g0:{port}"),
            &format!("dns+http://tasks.g1:{port}"),
        ],
        // Room for every line: the batcher runs at idle priority and got too little CPU on a
        // loaded CI machine to drain a 10,000-record queue as fast as lines came (23,929 of
        // 60,000 dropped, counted); this test is about placement, not the queue.
        &["--discovery-interval", "1s", "--queue-records", "100000"],
    );
    // Lines sent before the shipper heard from both groups would wait in its queue (and
    // overflow it, as CI once saw: 541 of 60,000 missing) or be placed over g0 alone.
    sh.knows_replicas(&["g0", "g1"], 2);
    let n = 60_000;
    send_lines(&sh, "app", 0, n);
    eventually("every line reaches both replicas of its group", 120, || {
        let counts: Vec<u64> = g0
            .iter()
            .chain(&g1)
            .map(|ix| total(ix, "service:app"))
            .collect();
        if counts[0] == counts[1] && counts[2] == counts[3] && counts[0] + counts[2] == n {
            Ok(())
        } else {
            Err(format!(
                "counts g0 {:?}, g1 {:?}, queue drops {}",
                &counts[..2],
                &counts[2..],
                queue_drops(&sh)
            ))
        }
    });
    no_queue_drops(&sh);
    let k0 = seq_keys(&g0[0], "service:app");
    let k1 = seq_keys(&g1[0], "service:app");
    assert_eq!(
        k0,
        seq_keys(&g0[1], "service:app"),
        "both replicas of g0 hold the same records"
    );
    assert_eq!(
        k1,
        seq_keys(&g1[1], "service:app"),
        "both replicas of g1 hold the same records"
    );
    assert_eq!(
        k0.intersection(&k1).count(),
        0,
        "no record is in both groups"
    );
    assert_eq!(k0.len() as u64 + k1.len() as u64, n);
    let srcs: BTreeSet<&String> = k0.iter().chain(&k1).map(|(s, _)| s).collect();
    assert_eq!(srcs.len(), 1, "one shipper, one sender id: {srcs:?}");
    for (name, k) in [("g0", &k0), ("g1", &k1)] {
        assert!(
            k.len() as u64 * 5 >= n,
            "one busy shipper spreads over the groups: {name} holds {} of {n}",
            k.len()
        );
    }
}

#[test]
fn sixteen_shippers_spread_evenly_over_two_groups() {
    let dir = TempDir::new("place16");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    hosts_file(
        &hosts,
        &[("127.0.0.2", "tasks.g0"), ("127.0.0.3", "tasks.g1")],
    );
    let g0 = replica(dir.path(), "127.0.0.2", &port, "g0");
    let g1 = replica(dir.path(), "127.0.0.3", &port, "g1");
    let targets = [
        format!("dns+http://tasks.g0:{port}"),
        format!("dns+http://tasks.g1:{port}"),
    ];
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let shippers: Vec<(TempDir, Shipper)> = (0..16)
        .map(|i| {
            let d = TempDir::new(&format!("place16-{i}"));
            let sh = Shipper::start_in(&hosts, d.path(), &targets, &["--discovery-interval", "1s"]);
            (d, sh)
        })
        .collect();
    for (_, sh) in &shippers {
        sh.knows_replicas(&["g0", "g1"], 1);
    }
    // Blocks of 256 per sender (24 each, 384 in all): a group's share is 50 % give or take
    // 2.6 points (one standard deviation), so 35-65 % fails once in some 10^8 runs (40-60 %
    // did once in 10,000).
    let per = 6_000u64;
    for i in 0..per {
        for (_, sh) in &shippers {
            sh.send(format!("<13>Nov 27 07:57:02 app[1]: n={i} a line").as_bytes());
        }
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let n = per * shippers.len() as u64;
    // Generous: 18 processes on what may be a loaded machine of 2 cores.
    eventually("every line reaches its group", 600, || {
        let (a, b) = (total(&g0, "service:app"), total(&g1, "service:app"));
        if a + b == n {
            Ok(())
        } else {
            let drops: f64 = shippers.iter().map(|(_, sh)| queue_drops(sh)).sum();
            Err(format!("g0 {a} + g1 {b} of {n}, queue drops {drops}"))
        }
    });
    for (_, sh) in &shippers {
        no_queue_drops(sh);
    }
    let (k0, k1) = (seq_keys(&g0, "service:app"), seq_keys(&g1, "service:app"));
    assert_eq!(
        k0.intersection(&k1).count(),
        0,
        "no record is in both groups"
    );
    assert_eq!(k0.len() as u64 + k1.len() as u64, n);
    all_placed_on(&k0, &["g0", "g1"], "g0");
    all_placed_on(&k1, &["g0", "g1"], "g1");
    for (name, k) in [("g0", &k0), ("g1", &k1)] {
        let share = k.len() as f64 / n as f64;
        assert!(
            (0.35..=0.65).contains(&share),
            "{name} holds {} of {n} ({:.1} %)",
            k.len(),
            share * 100.0
        );
    }
}

#[test]
fn a_group_whose_replicas_are_all_down_keeps_its_records_waiting_for_it() {
    let dir = TempDir::new("placedown");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    hosts_file(
        &hosts,
        &[("127.0.0.2", "tasks.g0"), ("127.0.0.3", "tasks.g1")],
    );
    let g0 = replica(dir.path(), "127.0.0.2", &port, "g0");
    let g1 = replica(dir.path(), "127.0.0.3", &port, "g1");
    let sh = Shipper::start_in(
        &hosts,
        dir.path(),
        &[
            &format!("dns+http://tasks.g0:{port}"),
            &format!("dns+http://tasks.g1:{port}"),
        ],
        &["--discovery-interval", "1s"],
    );
    // Both groups known, then g1's only replica goes away (it stays listed, as a task
    // being restarted on the same address may).
    sh.knows_replicas(&["g0", "g1"], 1);
    assert!(g1.terminate().success());
    let n = 10_000;
    send_lines(&sh, "app", 0, n);
    let g1_url = format!("http://127.0.0.3:{port}");
    let waiting = format!("sawmill_shipper_backlog_records{{replica=\"{g1_url}\"}}");
    eventually("g0's share arrives, g1's waits in its backlog", 60, || {
        let (held, waits) = (total(&g0, "service:app"), sh.metric(&waiting) as u64);
        match held + waits == n {
            true => Ok(()),
            false => Err(format!("g0 holds {held}, g1's backlog {waits}, of {n}")),
        }
    });
    let held = total(&g0, "service:app");
    // 40 blocks: each group gets some but once in 10^12 runs (a share of 20-80 % failed
    // once in 14,000); where each record went is checked below.
    assert!(held > 0 && held < n, "g0 holds {held} of {n}");
    // Nothing is re-routed to g0 while g1 is down.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        total(&g0, "service:app"),
        held,
        "g0 took some of g1's records"
    );

    let g1 = replica(dir.path(), "127.0.0.3", &port, "g1");
    wait_total(&g1, "service:app", n - held);
    let (k0, k1) = (seq_keys(&g0, "service:app"), seq_keys(&g1, "service:app"));
    assert_eq!(k0.len() as u64, held, "g0 took some of g1's records");
    assert_eq!(
        k0.intersection(&k1).count(),
        0,
        "no record is in both groups"
    );
    all_placed_on(&k0, &["g0", "g1"], "g0");
    all_placed_on(&k1, &["g0", "g1"], "g1");
    assert_eq!(sh.metric("sawmill_shipper_records_lost_total"), 0.0);
    no_queue_drops(&sh);
}

#[test]
fn a_replica_that_appears_gets_records_at_once_and_one_that_leaves_is_given_up_after_its_grace() {
    let dir = TempDir::new("placechurn");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    hosts_file(&hosts, &[("127.0.0.2", "tasks.idx")]);
    let a = replica(dir.path(), "127.0.0.2", &port, "default");
    let b = replica(dir.path(), "127.0.0.3", &port, "default");
    let sh = Shipper::start_in(
        &hosts,
        dir.path(),
        &[&format!("dns+http://tasks.idx:{port}")],
        &[
            "--discovery-interval",
            "1s",
            "--replica-grace",
            "3s",
            "--drop-report-interval",
            "1s",
        ],
    );
    send_lines(&sh, "app", 0, 1_000);
    wait_total(&a, "service:app", 1_000);

    // B is listed: the same file, rewritten in place (the bind mount keeps its inode).
    hosts_file(
        &hosts,
        &[("127.0.0.2", "tasks.idx"), ("127.0.0.3", "tasks.idx")],
    );
    let b_info = format!(
        "sawmill_shipper_replica_info{{replica=\"{}\",group=\"default\",state=\"live\"}}",
        b.url
    );
    eventually("the shipper finds B", 30, || {
        let text = metrics_text(&sh.metrics_url);
        match text.contains(&b_info) {
            true => Ok(()),
            false => Err(text),
        }
    });
    send_lines(&sh, "app", 1_000, 2_000);
    wait_total(&a, "service:app", 2_000);
    wait_total(&b, "service:app", 1_000);
    let b_lines = line_numbers(&b, "service:app");
    assert_eq!(
        b_lines,
        (1_000..2_000).collect::<Vec<u64>>(),
        "B gets every line sent once it is found"
    );

    // B dies, and lines wait in its backlog; then it is no longer listed: after its grace
    // it is given up, and what it waited for is counted and reported as dropped for it.
    assert!(b.terminate().success());
    send_lines(&sh, "app", 2_000, 2_500);
    wait_total(&a, "service:app", 2_500);
    let backlog = format!("sawmill_shipper_backlog_records{{replica=\"http://127.0.0.3:{port}\"}}");
    eventually("B's backlog holds what it missed", 30, || {
        match sh.metric(&backlog) as u64 {
            500 => Ok(()),
            other => Err(format!("{other}")),
        }
    });
    hosts_file(&hosts, &[("127.0.0.2", "tasks.idx")]);
    let b_url = format!("http://127.0.0.3:{port}");
    let dropped = format!("sawmill_shipper_replica_records_dropped_total{{replica=\"{b_url}\"}}");
    eventually(
        "B is given up after its grace, its backlog counted",
        30,
        || {
            let given_up = sh.metric("sawmill_shipper_replicas_given_up_total");
            let d = sh.metric(&dropped);
            match (given_up, d) {
                (1.0, 500.0) => Ok(()),
                other => Err(format!("(given up, dropped) = {other:?}")),
            }
        },
    );
    assert!(
        sh.log_text().contains("given up, its backlog is dropped"),
        "{}",
        sh.log_text()
    );
    eventually(
        "a drop report on A names B",
        30,
        || match reported_dropped(&a, Some(&b_url)) {
            500 => Ok(()),
            other => Err(format!("reported {other}")),
        },
    );
    assert_eq!(sh.metric(&backlog), 0.0);
    assert_eq!(
        sh.metric("sawmill_shipper_records_lost_total"),
        0.0,
        "A holds them all"
    );
    assert_eq!(total(&a, "service:app"), 2_500);
}

/// The checkpoint of the one file the shipper tails.
fn checkpoint(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("state/files.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_object()?.values().next()?["offset"].as_u64()
}

#[test]
fn with_ack_replicas_2_a_file_checkpoint_waits_for_a_second_replica() {
    let dir = TempDir::new("placeack");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    hosts_file(&hosts, &[("127.0.0.2", "tasks.idx")]);
    let a = replica(dir.path(), "127.0.0.2", &port, "default");
    let log = dir.path().join("app.log");
    let mut f = std::fs::File::create(&log).unwrap();
    for i in 0..100 {
        writeln!(f, "n={i} a line of the file").unwrap();
    }
    drop(f);
    let len = std::fs::metadata(&log).unwrap().len();
    let sh = Shipper::start_in(
        &hosts,
        dir.path(),
        &[&format!("dns+http://tasks.idx:{port}")],
        &[
            "--discovery-interval",
            "1s",
            "--ack-replicas",
            "2",
            "--tail",
            log.to_str().unwrap(),
        ],
    );
    wait_total(&a, "file", 100);
    // A took every line, but it is the group's only replica: the checkpoint stays.
    std::thread::sleep(Duration::from_secs(3));
    // The checkpoint is written (every second) but stays at the start.
    eventually("the checkpoint is written", 10, || {
        match checkpoint(dir.path()) {
            Some(_) => Ok(()),
            None => Err("no checkpoint file".into()),
        }
    });
    assert_eq!(
        checkpoint(dir.path()),
        Some(0),
        "the checkpoint passed lines one replica took"
    );
    assert!(
        sh.log_text().contains("fewer replicas than --ack-replicas"),
        "{}",
        sh.log_text()
    );

    // A second replica joins the group: it is handed those lines, and then the checkpoint
    // passes them.
    let b = replica(dir.path(), "127.0.0.3", &port, "default");
    hosts_file(
        &hosts,
        &[("127.0.0.2", "tasks.idx"), ("127.0.0.3", "tasks.idx")],
    );
    wait_total(&b, "file", 100);
    eventually(
        "the checkpoint passes the lines two replicas took",
        30,
        || match checkpoint(dir.path()) {
            Some(o) if o == len => Ok(()),
            other => Err(format!("checkpoint {other:?}, file {len}")),
        },
    );
    assert_eq!(total(&a, "file"), 100, "nothing stored twice");
}

#[test]
fn a_bad_indexer_target_or_ack_replicas_is_refused_at_start() {
    for (args, says) in [
        (
            vec!["--indexer", "dns+http://tasks.idx"],
            "dns+ needs a port",
        ),
        (
            vec!["--indexer", "http://127.0.0.1:1", "--ack-replicas", "0"],
            "--ack-replicas",
        ),
        (
            vec![
                "--indexer",
                "http://127.0.0.1:1",
                "--discovery-interval",
                "0s",
            ],
            "--discovery-interval",
        ),
    ] {
        let dir = TempDir::new("placebad");
        let out = sawmill()
            .arg("shipper")
            .args(&args)
            .arg("--state")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn records_sent_before_any_replica_said_its_group_wait_and_are_placed_once_one_does() {
    let dir = TempDir::new("placelate");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    // The shipper starts first: its names do not resolve yet.
    hosts_file(&hosts, &[]);
    let sh = Shipper::start_in(
        &hosts,
        dir.path(),
        &[
            &format!("dns+http://tasks.g0:{port}"),
            &format!("dns+http://tasks.g1:{port}"),
        ],
        &["--discovery-interval", "1s"],
    );
    // Enough blocks of 256 that both groups get some: 2,000 lines are 8 blocks, all placed
    // on one group once in 128 runs (CI saw it: "both groups got records"); 6,000 are 24.
    let n = 6_000;
    send_lines(&sh, "app", 0, n);
    eventually("they wait in the queue", 30, || {
        match sh.metric("sawmill_shipper_queue_records") as u64 {
            q if q == n => Ok(()),
            q => Err(format!("{q} of {n} in the queue")),
        }
    });
    let g0 = replica(dir.path(), "127.0.0.2", &port, "g0");
    let g1 = replica(dir.path(), "127.0.0.3", &port, "g1");
    // Both listed at once, so that one round finds both groups.
    hosts_file(
        &hosts,
        &[("127.0.0.2", "tasks.g0"), ("127.0.0.3", "tasks.g1")],
    );
    eventually(
        "every line is placed once both groups are known",
        60,
        || {
            let (a, b) = (total(&g0, "service:app"), total(&g1, "service:app"));
            match a + b == n {
                true => Ok(()),
                false => Err(format!("g0 {a} + g1 {b}")),
            }
        },
    );
    let (k0, k1) = (seq_keys(&g0, "service:app"), seq_keys(&g1, "service:app"));
    assert_eq!(
        k0.intersection(&k1).count(),
        0,
        "no record is in both groups"
    );
    all_placed_on(&k0, &["g0", "g1"], "g0");
    all_placed_on(&k1, &["g0", "g1"], "g1");
    assert!(!k0.is_empty() && !k1.is_empty(), "both groups got records");
    no_queue_drops(&sh);
}

#[test]
fn a_group_whose_only_replica_is_unlisted_for_a_while_keeps_its_records() {
    let dir = TempDir::new("placeunlisted");
    let port = free_port();
    let hosts = dir.path().join("hosts");
    let both = [("127.0.0.2", "tasks.g0"), ("127.0.0.3", "tasks.g1")];
    hosts_file(&hosts, &both);
    let g0 = replica(dir.path(), "127.0.0.2", &port, "g0");
    let g1 = replica(dir.path(), "127.0.0.3", &port, "g1");
    let sh = Shipper::start_in(
        &hosts,
        dir.path(),
        &[
            &format!("dns+http://tasks.g0:{port}"),
            &format!("dns+http://tasks.g1:{port}"),
        ],
        &["--discovery-interval", "1s"],
    );
    sh.knows_replicas(&["g0", "g1"], 1);
    // g1's only task restarts: the orchestrator stops listing it at once (Swarm,
    // Kubernetes), for less than the replica grace. The name lists a task not answering
    // yet (a name that fails to resolve would keep its last answer a while).
    assert!(g1.terminate().success());
    hosts_file(&hosts, &[both[0], ("127.0.0.9", "tasks.g1")]);
    std::thread::sleep(Duration::from_secs(3));
    let n = 4_000;
    send_lines(&sh, "app", 0, n);
    let g1 = replica(dir.path(), "127.0.0.3", &port, "g1");
    hosts_file(&hosts, &both);
    // CI once read g0's count while its share was still arriving: wait for the sum.
    eventually(
        "every line stored in one group or the other",
        120,
        || match total(&g0, "service:app") + total(&g1, "service:app") {
            t if t == n => Ok(()),
            t => Err(format!("{t} of {n} stored")),
        },
    );
    let (k0, k1) = (seq_keys(&g0, "service:app"), seq_keys(&g1, "service:app"));
    assert_eq!(k0.len() as u64 + k1.len() as u64, n);
    all_placed_on(&k0, &["g0", "g1"], "g0");
    all_placed_on(&k1, &["g0", "g1"], "g1");
    assert_eq!(sh.metric("sawmill_shipper_records_lost_total"), 0.0);
    no_queue_drops(&sh);
}
