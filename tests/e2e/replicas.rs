//! A replica that falls behind: what it misses is logged, counted and reported by name.

use std::time::{Duration, Instant};

use crate::util::*;

fn total(ix: &Indexer, q: &str) -> u64 {
    get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q))))["total"]
        .as_u64()
        .unwrap()
}

/// Regression (issue 9, point 11): when one replica's backlog overflowed, the records it
/// missed were counted in `replica_records_dropped_total` and nowhere else: nothing was
/// logged, no drop report was indexed, and `records_lost_total` stayed 0.
#[test]
fn a_replica_whose_backlog_overflows_is_named_in_the_log_and_in_a_drop_report() {
    let dir = TempDir::new("replicaloss");
    let args = ["--commit-interval", "100ms"];
    let a = Indexer::start(&dir.path().join("a"), &args);
    let b = Indexer::start(&dir.path().join("b"), &args);
    // B hangs, as a stuck host does: connections open, nothing answered.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGSTOP) };
    let sh = Shipper::start(
        dir.path(),
        &[&a.url, &b.url],
        &["--backlog-bytes", "16KiB", "--drop-report-interval", "1s"],
    );
    let n = 5_000u64;
    for i in 0..n {
        sh.send(
            format!(
                "<13>Nov 27 07:57:02 app[1]: n={i} {:x} with padding",
                fastrand::u64(..)
            )
            .as_bytes(),
        );
        if i % 100 == 99 {
            // Well within the queue: this test is about the backlog, not the queue.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_total(&a, "service:app", n);
    let q = |m: &str| sh.metric(m) as u64;
    let dropped = |r: &str| {
        q(&format!(
            "sawmill_shipper_replica_records_dropped_total{{replica=\"{r}\"}}"
        ))
    };
    // The drop reports for B reach A and add up to what B missed (itself growing a little,
    // as each report takes room in B's backlog).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (d, r) = (dropped(&b.url), reported_dropped(&a, Some(&b.url)));
        if d > 0 && r == d {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {} dropped {d} records, the reports on A say {r}; log:\n{}",
            b.url,
            sh.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let missed = dropped(&b.url);
    assert!(
        missed > 1_000,
        "B's 16 KiB backlog overflowed: {missed} dropped"
    );
    assert_eq!(dropped(&a.url), 0, "A missed nothing");
    // The log names the replica's overflow, once for the episode rather than once per
    // batch (discovery's warning that it stopped answering is a line of its own).
    let log = sh.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&b.url) && l.contains("backlog"))
        .collect();
    assert!(
        (1..=3).contains(&lines.len()) && lines[0].contains("ERROR"),
        "the log should name {} at ERROR, once per episode; it has:\n{}",
        b.url,
        lines.join("\n")
    );
    eprintln!("shipper log on {}:\n{}", b.url, lines.join("\n"));
    // B comes back: it gets what is left in its backlog, the reports on itself included.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let idle = q(&format!(
            "sawmill_shipper_backlog_records{{replica=\"{}\"}}",
            b.url
        )) == 0;
        if idle && reported_dropped(&b, Some(&b.url)) == missed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never drained its backlog; log:\n{}",
            sh.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        total(&b, "service:app"),
        n - missed,
        "B holds all but what it was reported to miss"
    );
    for r in [&a.url, &b.url] {
        let get = |name: &str| q(&format!("sawmill_shipper_{name}{{replica=\"{r}\"}}"));
        let (enq, del, drp, backlog) = (
            get("replica_records_enqueued_total"),
            get("replica_records_delivered_total"),
            get("replica_records_dropped_total"),
            get("backlog_records"),
        );
        assert_eq!(
            enq,
            del + drp + backlog,
            "replica {r}: enqueued {enq} = delivered {del} + dropped {drp} + backlog {backlog}"
        );
    }
    assert_eq!(
        q("sawmill_shipper_records_lost_total"),
        0,
        "A has everything: nothing is lost everywhere"
    );
}
