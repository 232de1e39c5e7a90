//! `sawmill up --demo`: a newcomer gets realistic traffic to search at once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

#[test]
fn up_demo_feeds_five_services_with_shared_requests_and_errors() {
    let dir = TempDir::new("up");
    let ix = Indexer::up(&dir.path().join("data"), &["--demo"]);
    // Fifteen minutes of history arrive first, then live traffic.
    let v = wait_for_total_at_least(&ix, "*", 5000);
    assert!(v["total"].as_u64().unwrap() >= 5000);
    let t = get_ok(&ix.api("/api/v1/terms?field=service"));
    let services: BTreeSet<&str> = t["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    for svc in ["auth", "gateway", "inventory", "orders", "payments"] {
        assert!(services.contains(svc), "{svc} missing from {services:?}");
    }
    let sev = get_ok(&ix.api("/api/v1/terms?field=severity"));
    assert!(
        sev["values"].as_array().unwrap().len() >= 4,
        "varied severities: {sev}"
    );
    let errs = get_ok(&ix.api(&format!(
        "/api/v1/search?q={}&limit=1",
        urlencode("severity:err AND Traceback")
    )));
    assert!(
        errs["total"].as_u64().unwrap() > 0,
        "some errors carry a stack trace"
    );
    let req = errs["hits"][0]["request_id"].as_str().unwrap();
    // The newest error's request may still have records in a batch not yet committed.
    eventually("a failed request crosses every service", 30, || {
        let trace = get_ok(&ix.api(&format!("/api/v1/trace/{req}")));
        let lanes: BTreeSet<&str> = trace["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["service"].as_str().unwrap())
            .collect();
        match lanes.len() {
            5 => Ok(()),
            _ => Err(format!("{lanes:?}")),
        }
    });
    // The demo goes through the whole pipeline: the socket, and `sawmill run`.
    let worker = wait_for_total_at_least(&ix, "service:batch-worker AND stream:stdout", 1);
    assert!(worker["total"].as_u64().unwrap() >= 1);
    let socket = dir.path().join("data/dev-log");
    let st = std::process::Command::new("logger")
        .arg("-u")
        .arg(&socket)
        .args(["-t", "newcomer", "hello from logger"])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for_total_at_least(&ix, "service:newcomer", 1);
    // Live traffic keeps coming.
    let before = v["total"].as_u64().unwrap();
    let after = wait_for_total_at_least(&ix, "*", before + 1);
    assert!(after["total"].as_u64().unwrap() > before);
}

fn wait_for_total_at_least(ix: &Indexer, q: &str, n: u64) -> Value {
    let url = ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q)));
    for _ in 0..1200 {
        let v = get_ok(&url);
        if v["total"].as_u64().unwrap_or(0) >= n {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fewer than {n} records after 60 s; log:\n{}", ix.log_text());
}
