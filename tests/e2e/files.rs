//! `--tail`: Docker json-file, CRI and plain files, rotation, and a crash while tailing.

use std::io::Write;
use std::time::Duration;

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
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
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
