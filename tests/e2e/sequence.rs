//! The shipper's de-duplication key (`_src`, `_seq`) across restarts, when its state
//! directory can and cannot be written.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::durability::Tmpfs;
use crate::util::*;

/// Remounts the tmpfs at `at` read-only or read-write. A bind-free way to make a directory
/// unwritable for root too (tests run as root, so `chmod` would not stop the shipper).
fn remount(at: &Path, mode: &str) {
    let out = std::process::Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(at)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "remount {mode} {}: {}",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends datagrams `n=range` of service `service`.
fn send(sh: &Shipper, service: &str, range: std::ops::Range<u64>) {
    for i in range {
        sh.send(format!("<13>Nov 27 07:57:02 {service}: n={i}").as_bytes());
    }
}

/// How many records of `service` the indexer holds once `want` is reached, or after 60 s
/// (the batcher runs at idle priority and CI once stalled it for over 20 s: a count that
/// stood still for a few seconds said nothing).
fn stored(ix: &Indexer, service: &str, want: u64) -> u64 {
    let url = ix.api(&format!("/api/v1/search?q=service:{service}&limit=0"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = get_ok(&url)["total"].as_u64().unwrap();
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 10, B2. With a read-only state directory the shipper numbered records from
/// memory, and after a restart from the last saved block again: the indexer dropped the
/// new records as duplicates (400 lines sent across a restart, 200 stored). Then it dropped
/// every record it could not number instead (none stored). A record whose number cannot be
/// made durable must go without a key, and no number that was sent may come again.
#[test]
fn records_sent_while_the_state_is_read_only_go_without_a_key_and_are_all_stored() {
    let dir = TempDir::new("seq-ro");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "1m");
    // A first run with a writable state: the sender id and a block of numbers are saved.
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    send(&sh, "before", 0..100);
    assert_eq!(stored(&ix, "before", 100), 100);
    sh.terminate();

    remount(&state, "ro");
    let mut logs = String::new();
    for round in 0..2u64 {
        let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
        send(&sh, "readonly", round * 200..(round + 1) * 200);
        stored(&ix, "readonly", (round + 1) * 200);
        logs.push_str(&sh.log_text());
        sh.terminate();
    }
    let n = stored(&ix, "readonly", 400);
    assert_eq!(
        n, 400,
        "stored {n} of 400 records sent across a restart with a read-only state directory; shipper logs:\n{logs}"
    );
    assert_eq!(
        line_numbers(&ix, "service:readonly"),
        (0..400).collect::<Vec<_>>()
    );
    for h in all_hits(&ix, "service:readonly") {
        assert!(
            h.get("_src").is_none() && h.get("_seq").is_none(),
            "a record numbered without a saved number: {h}"
        );
    }

    // Writable again: numbering resumes, past every number sent before.
    remount(&state, "rw");
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    send(&sh, "after", 0..100);
    assert_eq!(stored(&ix, "after", 100), 100);
    sh.terminate();
    let seqs = |service: &str| -> Vec<u64> {
        all_hits(&ix, &format!("service:{service}"))
            .iter()
            .map(|h| h["_seq"].as_u64().expect("a keyed record"))
            .collect()
    };
    let (before, after) = (seqs("before"), seqs("after"));
    let last_before = before.iter().max().unwrap();
    let first_after = after.iter().min().unwrap();
    assert!(
        first_after > last_before,
        "a number was sent again: {first_after} after {last_before}"
    );
    let duplicates = ix.metric("sawmill_indexer_records_duplicate_total");
    assert_eq!(duplicates, 0.0, "records refused as duplicates");
    assert_eq!(
        (stored(&ix, "before", 100), stored(&ix, "readonly", 400)),
        (100, 400),
        "every record stored once"
    );
}
