//! `--tail`: Docker json-file, CRI and plain files, rotation, and a crash while tailing.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn docker_json_cri_and_plain_files_are_read_in_their_formats() {
    let dir = TempDir::new("files");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let _sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &[
            "--tail",
            &format!("{}/*.log", logs.display()),
            "--tail",
            &format!("{}/stdout", logs.display()),
        ],
    );
    // Docker cuts lines at 16 KiB: the pieces carry no newline but the last.
    let long = "x".repeat(20_000);
    append(&logs.join("c1-json.log"), &format!(
        "{{\"log\":\"json line one\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-27T10:00:00.123456789Z\"}}\n{{\"log\":\"{}\",\"stream\":\"stderr\",\"time\":\"2026-11-27T10:00:01Z\"}}\n{{\"log\":\"{}\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-27T10:00:01.1Z\"}}\n",
        &long[..16_384], &long[16_384..]
    ));
    append(&logs.join("pod.log"), "2026-11-27T10:00:02.5Z stdout P cri part one, \n2026-11-27T10:00:02.6Z stdout F part two\n2026-11-27T10:00:03Z stderr F cri error level=warning\n");
    append(&logs.join("stdout"), "plain sandbox line request_id=sb-1\n");
    wait_total(&ix, "*", 5);
    let hits = all_hits(&ix, "*");
    let find = |needle: &str| {
        hits.iter()
            .find(|h| h["message"].as_str().unwrap().starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} not found"))
            .clone()
    };
    let one = find("json line one");
    assert_eq!(
        (one["ts"].as_str(), one["stream"].as_str()),
        (Some("2026-11-27T10:00:00.123456789Z"), Some("stdout"))
    );
    let joined = find("xxxx");
    assert_eq!(
        joined["message"].as_str().unwrap().len(),
        20_000,
        "Docker's 16 KiB pieces are joined"
    );
    assert_eq!(joined["severity"], "err");
    let cri = find("cri part one");
    assert_eq!(
        cri["message"], "cri part one, part two",
        "CRI partials are joined"
    );
    assert_eq!(find("cri error")["severity"], "warning");
    let plain = find("plain sandbox line");
    assert_eq!(
        (plain["stream"].as_str(), plain["request_id"].as_str()),
        (Some("file"), Some("sb-1"))
    );
    assert!(plain["fields"]["path"]
        .as_str()
        .unwrap()
        .ends_with("/logs/stdout"));
}

#[test]
fn kubelet_log_files_name_their_pod_container_and_service() {
    // The node's /var/log as a DaemonSet mounts it, somewhere else than /var/log.
    let dir = TempDir::new("files-k8s");
    let pods = dir.path().join("var/log/pods");
    let in_pod = pods.join("shop_checkout-7d9f8.x2_0e4c3b1a-5f2d-4c1e-9b8a-7d6c5b4a3f2e/app");
    let links = dir.path().join("var/log/containers");
    std::fs::create_dir_all(&in_pod).unwrap();
    std::fs::create_dir_all(&links).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let _sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &[
            "--tail",
            &format!("{}/*/*/*.log", pods.display()),
            "--tail",
            &format!("{}/*.log", links.display()),
            "--tail",
            &format!("{}/plain.log", dir.path().display()),
        ],
    );
    append(
        &in_pod.join("0.log"),
        "2026-11-27T10:00:02.5Z stdout F from the pod dir\n",
    );
    // dockershim's links point at Docker json-file logs: the path says the same.
    let id = "4f1a".repeat(16);
    append(
        &links.join(format!("web-0_prod_side-car-{id}.log")),
        "{\"log\":\"from the link\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-27T10:00:03Z\"}\n",
    );
    append(&dir.path().join("plain.log"), "from no pod\n");
    wait_total(&ix, "*", 3);
    let hits = all_hits(&ix, "*");
    let find = |message: &str| {
        hits.iter()
            .find(|h| h["message"] == message)
            .unwrap_or_else(|| panic!("{message} not found: {hits:?}"))
            .clone()
    };
    let pod = |h: &Value| {
        let f = &h["fields"];
        (
            h["service"].as_str().map(str::to_string),
            f["k8s_namespace"].as_str().map(str::to_string),
            f["k8s_pod"].as_str().map(str::to_string),
            f["k8s_container"].as_str().map(str::to_string),
        )
    };
    let some = |s: [&str; 4]| s.map(|v| Some(v.to_string())).into();
    assert_eq!(
        pod(&find("from the pod dir")),
        some(["app", "shop", "checkout-7d9f8.x2", "app"])
    );
    assert_eq!(
        pod(&find("from the link")),
        some(["side-car", "prod", "web-0", "side-car"])
    );
    assert_eq!(pod(&find("from no pod")), (None, None, None, None));
    wait_total(&ix, "fields.k8s_namespace:prod AND service:side-car", 1);
}

/// copytruncate with the application writing again before the shipper's next look, as many
/// bytes as had been read: the length is what was read, so only the first bytes, looked at
/// again because the file was modified, say it started over. (It waited for the file to
/// grow before, and lines written last were never read if it did not.)
#[test]
fn a_file_cut_and_written_again_to_the_length_read_is_read_again() {
    let dir = TempDir::new("same-length");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let app = logs.join("app.log");
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", app.to_str().unwrap()]);
    append(&app, "n=0\nn=1\n");
    wait_total(&ix, "*", 2);
    for round in 1..=3 {
        // Cut and written at once: the shipper's look every 100 ms falls in between
        // hardly ever. The same length every round.
        let mut f = std::fs::OpenOptions::new().write(true).open(&app).unwrap();
        f.set_len(0).unwrap();
        f.write_all(format!("n={}\nn={}\n", 2 * round, 2 * round + 1).as_bytes())
            .unwrap();
        drop(f);
        wait_total(&ix, "*", 2 + 2 * round);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(line_numbers(&ix, "*"), (0..8).collect::<Vec<u64>>());
}

#[test]
fn rename_and_copytruncate_rotation_lose_and_repeat_nothing() {
    let dir = TempDir::new("rotate");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let app = logs.join("app.log");
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", app.to_str().unwrap()]);
    for i in 0..10 {
        append(&app, &format!("n={i}\n"));
    }
    wait_total(&ix, "*", 10);
    // logrotate's default: rename, create anew.
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&logs.join("app.log.1"), "n=10\n");
    append(&app, "n=11\nn=12\n");
    wait_total(&ix, "*", 13);
    // copytruncate: copy away, then cut the same file to zero.
    std::fs::copy(&app, logs.join("app.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&app, "n=13\nn=14\n");
    wait_total(&ix, "*", 15);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(line_numbers(&ix, "*"), (0..15).collect::<Vec<u64>>());
}

#[test]
fn a_shipper_killed_while_tailing_resumes_without_loss_or_duplicates() {
    let dir = TempDir::new("tailcrash");
    let app = dir.path().join("app.log");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let glob = app.to_str().unwrap().to_string();
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            for i in 0..2000 {
                append(&app, &format!("n={i} some text to make the line longer\n"));
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    std::thread::sleep(Duration::from_millis(400));
    drop(sh); // kill -9
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    writer.join().unwrap();
    wait_total(&ix, "*", 2000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        line_numbers(&ix, "*"),
        (0..2000).collect::<Vec<u64>>(),
        "every line once"
    );
}

/// Issue 9, point 12: `--tail` values were split at commas, so this path tailed nothing.
#[test]
fn a_tail_path_with_a_comma_is_taken_whole() {
    let dir = TempDir::new("comma");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let app = dir.path().join("web,api.log");
    append(&app, "n=0\nn=1\n");
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", app.to_str().unwrap()]);
    append(&app, "n=2\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while stored < 3 && std::time::Instant::now() < deadline {
        stored = get_ok(&ix.api("/api/v1/search?q=*&limit=0"))["total"]
            .as_u64()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        stored,
        3,
        "lines stored from {}; shipper log:\n{}",
        app.display(),
        sh.log_text()
    );
    assert_eq!(line_numbers(&ix, "*"), vec![0, 1, 2]);
}

/// `SAWMILL_TAIL` holds several globs separated by `:`, as PATH does.
#[test]
fn sawmill_tail_separates_globs_with_colons() {
    let dir = TempDir::new("tailenv");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let (a, b) = (dir.path().join("a,1.log"), dir.path().join("b.log"));
    append(&a, "n=0\n");
    append(&b, "n=1\n");
    let env = format!("{}:{}", a.display(), b.display());
    let _sh = Shipper::start_env(dir.path(), &[&ix.url], &[], &[("SAWMILL_TAIL", &env)]);
    wait_total(&ix, "*", 2);
    assert_eq!(line_numbers(&ix, "*"), vec![0, 1]);
}

/// A pattern that matches nothing is said in the log and in metrics, and still watched: a
/// file that appears later is tailed.
#[test]
fn a_tail_pattern_matching_nothing_is_reported_and_still_watched() {
    let dir = TempDir::new("unmatched");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let now = dir.path().join("now.log");
    append(&now, "n=0\n");
    let later = format!("{}/later-*.log", dir.path().display());
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--tail", now.to_str().unwrap(), "--tail", &later],
    );
    wait_total(&ix, "*", 1);
    let unmatched = "sawmill_shipper_tail_patterns_unmatched";
    assert_eq!(
        sh.metric(unmatched),
        1.0,
        "one of two patterns matches nothing"
    );
    let log = sh.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("No file matches") && l.contains(&later)),
        "no WARN naming {later}; log:\n{log}"
    );
    append(&dir.path().join("later-1.log"), "n=1\n");
    wait_total(&ix, "*", 2);
    assert_eq!(line_numbers(&ix, "*"), vec![0, 1]);
    assert_eq!(sh.metric(unmatched), 0.0);
}

/// How the numbered lines `n=0` .. `n=N-1` of a test came out on an indexer.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    stored: u64,
    missing: u64,
    duplicated: u64,
    /// Records that are not a whole numbered line: half-lines, drop reports.
    other: u64,
}

impl Tally {
    fn of_query(ix: &Indexer, q: &str, n: u64) -> Tally {
        let mut seen = vec![0u32; n as usize];
        let mut other = 0;
        let hits = all_hits(ix, q);
        for h in &hits {
            let whole = h["message"].as_str().is_some_and(|m| m.starts_with("n="));
            match h["fields"]["n"].as_u64() {
                Some(i) if whole && i < n => seen[i as usize] += 1,
                _ => other += 1,
            }
        }
        Tally {
            stored: hits.len() as u64,
            missing: seen.iter().filter(|c| **c == 0).count() as u64,
            duplicated: seen.iter().map(|c| c.saturating_sub(1) as u64).sum(),
            other,
        }
    }

    fn exact(n: u64) -> Tally {
        Tally {
            stored: n,
            missing: 0,
            duplicated: 0,
            other: 0,
        }
    }
}

/// Waits until `n` records are searchable, or until the count has not moved for 15 s (so a
/// shipper that lost lines fails with its figures rather than a timeout), then tallies.
fn settle(ix: &Indexer, n: u64) -> Tally {
    settle_query(ix, "*", n)
}

fn settle_query(ix: &Indexer, q: &str, n: u64) -> Tally {
    let url = ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let total = get_ok(&url)["total"].as_u64().unwrap();
        if total != last {
            (last, since) = (total, Instant::now());
        }
        if total >= n || since.elapsed() > Duration::from_secs(15) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Whatever else was on its way (duplicates) has had time to arrive too.
    std::thread::sleep(Duration::from_millis(1000));
    Tally::of_query(ix, q, n)
}

/// The checkpoint's offset for `path`, if the shipper has one.
fn checkpoint(dir: &Path, path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("state/files.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_object()?
        .values()
        .find(|e| e["path"].as_str() == path.to_str())
        .and_then(|e| e["offset"].as_u64())
}

/// Waits until every one of `paths` is checkpointed at its end: read, and acknowledged.
fn wait_read_to_end(dir: &Path, paths: &[&Path]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let behind: Vec<String> = paths
            .iter()
            .filter_map(|p| {
                let len = std::fs::metadata(p).unwrap().len();
                let at = checkpoint(dir, p);
                (at != Some(len)).then(|| format!("{}: {at:?} of {len}", p.display()))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never checkpointed at the end: {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn numbered(range: std::ops::Range<u64>) -> String {
    range
        .map(|i| format!("n={i} with some text to make the line longer\n"))
        .collect()
}

/// Regression (issue 9, point 5): file lines went through the drop-when-full queue and the
/// checkpoint then moved past the dropped ones: a file holding 100,000 lines at start lost
/// 74,212 of them for good.
#[test]
fn a_big_file_under_a_small_queue_is_stored_whole_and_never_dropped() {
    let dir = TempDir::new("bigfile");
    let app = dir.path().join("app.log");
    let n = 100_000;
    std::fs::write(&app, numbered(0..n)).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--tail", app.to_str().unwrap(), "--queue-records", "100"],
    );
    let tally = settle(&ix, n);
    let dropped = sh.metric("sawmill_shipper_queue_records_dropped_total{source=\"file\"}");
    assert_eq!(
        (tally, dropped),
        (Tally::exact(n), 0.0),
        "every line once, none dropped by the queue"
    );
    wait_read_to_end(dir.path(), &[&app]);
}

/// Regression (issue 9, point 5): at 4,000 lines/s with four kill -9s of the shipper, 2,933
/// lines were lost: the queue dropped them and the checkpoint passed them.
#[test]
fn a_shipper_killed_again_and_again_under_back_pressure_loses_and_repeats_nothing() {
    let dir = TempDir::new("tailkills");
    let app = dir.path().join("app.log");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let n = 20_000;
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            // About 4,000 lines a second, for five seconds.
            for i in (0..n).step_by(40) {
                append(&app, &numbered(i..i + 40));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let glob = app.to_str().unwrap().to_string();
    let args = ["--tail", &glob, "--queue-records", "100"];
    for _ in 0..4 {
        let sh = Shipper::start(dir.path(), &[&ix.url], &args);
        std::thread::sleep(Duration::from_millis(700 + fastrand::u64(..600)));
        drop(sh); // kill -9
    }
    let sh = Shipper::start(dir.path(), &[&ix.url], &args);
    writer.join().unwrap();
    let tally = settle(&ix, n);
    assert_eq!(
        tally,
        Tally::exact(n),
        "every line once across four kill -9s"
    );
    assert_eq!(
        sh.metric("sawmill_shipper_queue_records_dropped_total{source=\"file\"}"),
        0.0
    );
}

/// Regression (issue 9, point 6): with a glob that also catches rotated files, the copy
/// copytruncate leaves was taken for a new file and read from 0: 1,000 of 1,100 lines
/// were stored twice.
#[test]
fn copytruncate_under_a_glob_that_catches_the_copy_repeats_nothing() {
    let dir = TempDir::new("copyglob");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let copy = logs.join("app.log.1");
    std::fs::write(&app, numbered(0..1000)).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let glob = format!("{}/app.log*", logs.display());
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    wait_total(&ix, "*", 1000);
    wait_read_to_end(dir.path(), &[&app]);
    // logrotate's copytruncate: copy, then cut the original to zero; the app writes on.
    std::fs::copy(&app, &copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&app, &numbered(1000..1100));
    wait_read_to_end(dir.path(), &[&app, &copy]);
    assert_eq!(settle(&ix, 1100), Tally::exact(1100), "every line once");
}

/// Regression (issue 9, point 6): copytruncate while the shipper was down, the file then
/// grown past the old offset: the shipper resumed at the old byte offset, losing 1,068
/// lines and storing one half-line, and read the copy from 0.
#[test]
fn copytruncate_while_the_shipper_is_down_loses_repeats_and_cuts_nothing() {
    let dir = TempDir::new("copydown");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let copy = logs.join("app.log.1");
    std::fs::write(&app, numbered(0..500)).unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let glob = format!("{}/app.log*", logs.display());
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    wait_total(&ix, "*", 500);
    wait_read_to_end(dir.path(), &[&app]);
    drop(sh); // kill -9
              // While it is down: more lines (only the copy will hold them), the rotation, and more
              // than before in the new file, so that it is longer than the old checkpoint.
    append(&app, &numbered(500..600));
    std::fs::copy(&app, &copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&app, &numbered(600..1700));
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    wait_read_to_end(dir.path(), &[&app, &copy]);
    assert_eq!(settle(&ix, 1700), Tally::exact(1700), "every line once");
}

/// A file shorter than its fingerprint that grows, and one renamed away while another takes
/// its name, stay what they are: read on, never again from the start.
#[test]
fn short_files_that_grow_and_rename_rotation_under_a_glob_read_each_line_once() {
    let dir = TempDir::new("shortgrow");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let glob = format!("{}/app.log*", logs.display());
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    append(&app, &numbered(0..2));
    wait_total(&ix, "*", 2);
    wait_read_to_end(dir.path(), &[&app]);
    drop(sh); // kill -9: the checkpoint holds a fingerprint shorter than the full length
    append(&app, &numbered(2..100));
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", &glob]);
    wait_total(&ix, "*", 100);
    // Rename rotation: the old file keeps its inode under the new name.
    let old = logs.join("app.log.1");
    std::fs::rename(&app, &old).unwrap();
    append(&old, &numbered(100..110));
    append(&app, &numbered(110..120));
    wait_read_to_end(dir.path(), &[&app, &old]);
    assert_eq!(settle(&ix, 120), Tally::exact(120), "every line once");
}

/// Issue 9, point 5: with every replica away longer than their backlogs hold, a file's lines
/// were given up by all of them and skipped until the next restart. A file waits for a
/// replica to take what it already sent, and reads again what they all gave up when socket
/// traffic pushed it out of the backlogs.
#[test]
fn a_file_read_while_every_replica_is_down_is_stored_whole_once_one_comes_back() {
    let dir = TempDir::new("filedown");
    let app = dir.path().join("app.log");
    let addr = free_addr();
    let sh = Shipper::start(
        dir.path(),
        &[&format!("http://{addr}")],
        &[
            "--tail",
            app.to_str().unwrap(),
            "--queue-records",
            "100",
            "--backlog-bytes",
            "256KiB",
            "--drop-report-interval",
            "1s",
        ],
    );
    // While the replica is away: the file grows, in several batches' worth, and syslog
    // traffic, which cannot wait, overflows the backlog and pushes file batches out of it.
    let n = 5_000;
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            for i in (0..n).step_by(100) {
                append(&app, &numbered(i..i + 100));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let datagrams = 30_000;
    for i in 0..datagrams {
        sh.send(
            format!(
                "<13>Nov 27 07:57:02 other[1]: datagram {i} {:x}",
                fastrand::u64(..)
            )
            .as_bytes(),
        );
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    writer.join().unwrap();
    // The batcher runs at idle priority: on a loaded machine it may not have overflowed the
    // backlog yet, and the replica must not come back before it has.
    sh.wait_counted("sawmill_shipper_records_lost_total");
    let ix = Indexer::start_at(
        &addr,
        &dir.path().join("ix"),
        &["--commit-interval", "100ms"],
    );
    assert_eq!(
        settle_query(&ix, "stream:file", n),
        Tally::exact(n),
        "every line once, no restart"
    );
    assert_eq!(
        sh.metric("sawmill_shipper_queue_records_dropped_total{source=\"file\"}"),
        0.0
    );
    // The path under test was taken: file lines were given up by every replica, then read
    // again.
    assert!(
        sh.log_text().contains("reading them again"),
        "no file lines were given up; log:\n{}",
        sh.log_text()
    );
    // Every datagram is stored, or counted as dropped by the queue or lost in the backlog,
    // and the drop reports say so to the record: the file lines read again are in neither.
    let q = |m: &str| sh.metric(m) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut stored, mut queue_drops, mut lost, mut reported, mut named);
    loop {
        queue_drops = q("sawmill_shipper_queue_records_dropped_total{source=\"syslog_unix\"}");
        lost = q("sawmill_shipper_records_lost_total");
        let hits = all_hits(&ix, "service:sawmill-shipper");
        let sum = |replica: bool| -> u64 {
            hits.iter()
                .filter(|h| h["fields"]["replica"].is_string() == replica)
                .map(|h| h["fields"]["dropped"].as_u64().unwrap())
                .sum()
        };
        (reported, named) = (sum(false), sum(true));
        stored = get_ok(&ix.api("/api/v1/search?q=service:other&limit=0"))["total"]
            .as_u64()
            .unwrap();
        let idle = q("sawmill_shipper_queue_records") == 0
            && q(&format!(
                "sawmill_shipper_backlog_records{{replica=\"http://{addr}\"}}"
            )) == 0;
        if idle && stored + queue_drops + lost == datagrams && reported == queue_drops + lost {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored {stored} + queue drops {queue_drops} + lost {lost} of {datagrams}; reported {reported}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        named, lost,
        "what the one replica missed, named: the datagrams lost"
    );
}

/// A checkpoint written before fingerprints existed (`{"path","offset","generation"}` per
/// `dev-ino`) still loads: the file is read on from its offset, under the same keys.
#[test]
fn a_checkpoint_without_fingerprints_resumes_where_it_was() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("oldcheckpoint");
    let app = dir.path().join("app.log");
    std::fs::write(&app, numbered(0..100)).unwrap();
    let offset = numbered(0..40).len();
    let meta = std::fs::metadata(&app).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/files.json"),
        serde_json::json!({
            format!("{}-{}", meta.dev(), meta.ino()):
                {"path": app, "offset": offset, "generation": 0}
        })
        .to_string(),
    )
    .unwrap();
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--tail", app.to_str().unwrap()]);
    wait_read_to_end(dir.path(), &[&app]);
    wait_total(&ix, "*", 60);
    assert_eq!(line_numbers(&ix, "*"), (40..100).collect::<Vec<u64>>());
}

/// A stand-in indexer that refuses every batch for good (400), on a real socket.
fn refusing_indexer() -> String {
    use std::io::{BufRead, BufReader, Read};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno";
                    if r.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Lines every replica refused for good are not read again (they would be refused again),
/// and must not keep the file waiting for them either: the file is read to its end.
#[test]
fn a_file_whose_every_batch_is_refused_is_still_read_to_its_end() {
    let dir = TempDir::new("refused");
    let app = dir.path().join("app.log");
    let n = 2_000;
    std::fs::write(&app, numbered(0..n)).unwrap();
    let url = refusing_indexer();
    // A 16 KiB backlog lets a 4 KiB window of the file out at a time: the file is 25 of them.
    let sh = Shipper::start(
        dir.path(),
        &[&url],
        &["--tail", app.to_str().unwrap(), "--backlog-bytes", "16KiB"],
    );
    wait_read_to_end(dir.path(), &[&app]);
    assert_eq!(
        sh.metric("sawmill_shipper_records_received_total{source=\"file\"}") as u64,
        n
    );
}
