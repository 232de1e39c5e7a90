//! One search over the whole cluster (issue 11 point 5): `sawmill query` over two groups of
//! two replicas, found by DNS (a private /etc/hosts), each group loaded directly with its own
//! records; every merged answer is checked against the groups' own.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use serde_json::{json, Value};

use crate::util::*;

/// Records of group g0 (sender `a`) and g1 (sender `b`).
const N0: u64 = 250;
const N1: u64 = 180;
/// Records of request `req-x` in each group.
const REQ0: u64 = 3;
const REQ1: u64 = 2;

/// A running `sawmill query` (or `ui`) seeing `hosts` as its /etc/hosts.
pub struct Proc {
    child: Child,
    pub url: String,
}

impl Proc {
    pub fn start(hosts: &Path, command: &str, args: &[&str]) -> Proc {
        Proc::start_cmd(sawmill_with_hosts(hosts), command, args)
    }

    fn start_cmd(mut cmd: std::process::Command, command: &str, args: &[&str]) -> Proc {
        let mut child = cmd
            .args([command, "--listen", "127.0.0.1:0"])
            .args(args)
            .env("SAWMILL_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sawmill");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let prefix = format!("sawmill {command} listening on ");
        let Some(url) = first.strip_prefix(&prefix) else {
            let _ = child.kill();
            panic!("sawmill {command} did not start; stdout: {first:?}");
        };
        let url = url.trim().to_string();
        std::thread::spawn(move || for _ in lines {});
        Proc { child, url }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two groups of two replicas on 127.0.0.2–5, one port, all listed under one DNS name.
pub struct TwoGroups {
    _dir: TempDir,
    pub hosts: std::path::PathBuf,
    /// (group, indexer): g0 on .2 and .3, g1 on .4 and .5.
    pub ixs: Vec<(String, Option<Indexer>)>,
    pub target: String,
}

fn record(src: &str, seq: u64, group: usize) -> Value {
    // Both groups share timestamps (one record a second from the same start), so the
    // merge meets ties across groups on every page.
    let ts = 1_785_000_000_000u64 + seq * 1000;
    let mut r = json!({
        "ts": ts,
        "message": format!("message {seq} of {src}"),
        "host": format!("host-{src}"),
        "service": format!("svc{}", seq % if group == 0 { 40 } else { 25 }),
        "_src": src,
        "_seq": seq,
    });
    let in_request = if group == 0 { seq <= REQ0 } else { seq <= REQ1 };
    if in_request {
        r["request_id"] = json!("req-x");
    }
    r
}

impl TwoGroups {
    pub fn start(name: &str) -> TwoGroups {
        let dir = TempDir::new(name);
        let port = free_port();
        let addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
        let hosts = dir.path().join("hosts");
        let entries: Vec<(&str, &str)> = addrs.iter().map(|a| (*a, "indexers.test")).collect();
        hosts_file(&hosts, &entries);
        let mut ixs = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let g = format!("g{}", i / 2);
            let ix = Indexer::start_at(
                &format!("{a}:{port}"),
                &dir.path().join(format!("ix{i}")),
                &["--group", &g],
            );
            ixs.push((g, Some(ix)));
        }
        let target = format!("dns+http://indexers.test:{port}");
        TwoGroups {
            _dir: dir,
            hosts,
            ixs,
            target,
        }
    }

    /// Loads each group's records into both its replicas and waits until searchable.
    pub fn load(&self) {
        let groups = [("a", N0), ("b", N1)];
        for (i, (g, ix)) in self.ixs.iter().enumerate() {
            let (src, n) = groups[i / 2];
            let recs: Vec<Value> = (1..=n).map(|s| record(src, s, i / 2)).collect();
            let ix = ix.as_ref().unwrap();
            let (status, v) = post(&ix.api("/api/v1/ingest"), ndjson(&recs), None);
            assert_eq!((status, v["accepted"].as_u64()), (200, Some(n)), "{g}: {v}");
            wait_total(ix, "*", n);
        }
    }

    pub fn query(&self) -> Proc {
        Proc::start(
            &self.hosts,
            "query",
            &["--indexer", &self.target, "--discovery-interval", "1s"],
        )
    }

    pub fn kill(&mut self, i: usize) {
        self.ixs[i].1.take().unwrap().kill9();
    }
}

/// Reads every page of a search through `query`: the (src, seq, ts) of each hit in order.
/// Every page says the same `total`: groups read to their end count on later pages too.
fn read_all(q: &Proc, order: &str, limit: usize, total: u64) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut url = format!("{}/api/v1/search?q=*&limit={limit}&order={order}", q.url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get_ok(&url);
        assert!(page.get("partial").is_none(), "{page}");
        assert_eq!(page["total"], total, "after {} hits", out.len());
        assert!(page["hits"].as_array().unwrap().len() <= limit);
        for h in page["hits"].as_array().unwrap() {
            out.push((
                h["_src"].as_str().unwrap().to_string(),
                h["_seq"].as_u64().unwrap(),
                h["ts"].as_str().unwrap().to_string(),
            ));
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("more than 100 pages");
}

#[test]
fn merged_search_pages_histogram_terms_and_trace_add_up_across_groups() {
    let c = TwoGroups::start("fanout-merge");
    c.load();
    let q = c.query();
    let total = N0 + N1;

    let v = get_ok(&format!("{}/api/v1/search?q=*&limit=5", q.url));
    assert_eq!(v["total"], total, "{v}");
    assert!(v.get("partial").is_none(), "{v}");
    // Ids name the group and the record's key, so any replica of the group finds it again.
    let ids: Vec<&str> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids[..2],
        [format!("g0~s~{N0}~a"), format!("g0~s~{}~a", N0 - 1)],
        "{ids:?}"
    );

    // Every page, both orders: every record exactly once, in time order.
    let every: BTreeSet<(String, u64)> = (1..=N0)
        .map(|s| ("a".to_string(), s))
        .chain((1..=N1).map(|s| ("b".to_string(), s)))
        .collect();
    for order in ["desc", "asc"] {
        let got = read_all(&q, order, 37, total);
        assert_eq!(got.len() as u64, total, "{order}: every hit once");
        let keys: BTreeSet<(String, u64)> = got.iter().map(|(s, n, _)| (s.clone(), *n)).collect();
        assert_eq!(keys, every, "{order}: no hit repeated or skipped");
        let ts: Vec<&String> = got.iter().map(|h| &h.2).collect();
        let mut sorted = ts.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(ts, sorted, "{order}: in time order");
    }

    // Histograms: the same buckets as each group's over the same range, added.
    let range = "start=2026-07-25T17:20:00Z&end=2026-07-25T17:25:00Z&buckets=20";
    let merged = get_ok(&format!("{}/api/v1/histogram?q=*&{range}", q.url));
    let g0 = get_ok(
        &c.ixs[0]
            .1
            .as_ref()
            .unwrap()
            .api(&format!("/api/v1/histogram?q=*&{range}")),
    );
    let g1 = get_ok(
        &c.ixs[2]
            .1
            .as_ref()
            .unwrap()
            .api(&format!("/api/v1/histogram?q=*&{range}")),
    );
    let counts = |v: &Value| -> Vec<u64> {
        v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .collect()
    };
    let added: Vec<u64> = counts(&g0)
        .iter()
        .zip(counts(&g1))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(counts(&merged), added);
    assert_eq!(merged["total"], total, "{merged}");
    // Without a range each group would round its own width: the merged one still adds up.
    let open = get_ok(&format!("{}/api/v1/histogram?q=*&buckets=30", q.url));
    assert_eq!(counts(&open).iter().sum::<u64>(), total, "{open}");

    // Terms: a small size is over-fetched from each group and marked approximate; a size
    // larger than the values is exact.
    let t = get_ok(&format!("{}/api/v1/terms?field=service&size=3", q.url));
    assert_eq!(t["approximate"], true, "{t}");
    let shown: u64 = t["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["count"].as_u64().unwrap())
        .sum();
    assert_eq!(t["values"].as_array().unwrap().len(), 3);
    assert_eq!(
        shown + t["other"].as_u64().unwrap() + t["missing"].as_u64().unwrap(),
        total,
        "{t}"
    );
    let t = get_ok(&format!("{}/api/v1/terms?field=service&size=100", q.url));
    assert!(t.get("approximate").is_none(), "{t}");
    let svc0 = t["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "svc0")
        .unwrap()["count"]
        .as_u64();
    // svc0: seq a multiple of 40 in g0, of 25 in g1.
    assert_eq!(svc0, Some(N0 / 40 + N1 / 25), "{t}");

    // A request crosses hosts: its records come from both groups, oldest first.
    let tr = get_ok(&format!("{}/api/v1/trace/req-x", q.url));
    assert_eq!(tr["total"], REQ0 + REQ1, "{tr}");
    let srcs: BTreeSet<&str> = tr["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_src"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, BTreeSet::from(["a", "b"]));
    // So does a record's request context.
    let ctx = get_ok(&format!("{}/api/v1/context/g0~s~2~a?scope=request", q.url));
    let n = ctx["before"].as_array().unwrap().len() + ctx["after"].as_array().unwrap().len() + 1;
    assert_eq!(n as u64, REQ0 + REQ1, "{ctx}");
    // Other scopes stay in the record's group: the same host and service.
    let ctx = get_ok(&format!(
        "{}/api/v1/context/g1~s~30~b?before=2&after=2",
        q.url
    ));
    assert_eq!(ctx["anchor"]["_id"], "g1~s~30~b", "{ctx}");
    let seqs: Vec<u64> = ctx["before"]
        .as_array()
        .unwrap()
        .iter()
        .chain(ctx["after"].as_array().unwrap())
        .map(|h| h["_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 55, 80], "svc5 of host-b around seq 30: {ctx}");

    // Bad input: clear errors, never a panic.
    let (s, v) = get(&format!("{}/api/v1/search?q=*&cursor=zz", q.url));
    assert_eq!(s, 400, "{v}");
    let (s, v) = get(&format!("{}/api/v1/context/nonsense", q.url));
    assert_eq!(s, 400, "{v}");
    let (s, v) = get(&format!("{}/api/v1/context/g9~s~1~a", q.url));
    assert_eq!(s, 404, "{v}");
    let (s, v) = get(&format!("{}/api/v1/search?q=(", q.url));
    assert_eq!(s, 400, "the indexer's refusal passes through: {v}");
    let h = get_ok(&format!("{}/healthz", q.url));
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["groups"]["g0"].as_array().unwrap().len(), 2, "{h}");
}

#[test]
fn a_record_link_survives_failover_and_a_dead_group_makes_answers_partial() {
    let mut c = TwoGroups::start("fanout-failover");
    c.load();
    let q = c.query();
    let ui = Proc::start(
        &c.hosts,
        "ui",
        &["--indexer", &c.target, "--discovery-interval", "1s"],
    );
    let page = get_ok(&format!("{}/api/v1/search?q=*&limit=1&order=asc", q.url));
    let id = page["hits"][0]["_id"].as_str().unwrap().to_string();
    assert_eq!(id, "g0~s~1~a");
    let ctx_url = format!("{}/api/v1/context/{id}?before=0&after=3", q.url);
    let before = get_ok(&ctx_url);
    // The replica asked first (the first up in DNS order) dies: the same link is answered by
    // the other replica of the group, under the same ids.
    c.kill(0);
    let after = get_ok(&ctx_url);
    // The same records under the same ids (`received` is each replica's own).
    let seen = |v: &Value| -> Vec<(Value, Value)> {
        std::iter::once(&v["anchor"])
            .chain(v["after"].as_array().unwrap())
            .map(|h| (h["_id"].clone(), h["message"].clone()))
            .collect()
    };
    assert_eq!(seen(&after), seen(&before));
    assert_eq!(seen(&after).len(), 4, "{after}");
    // Whether the request failed over or a health round saw the replica dead first (and
    // asked the other at once), it is now shown down.
    let h = get_ok(&format!("{}/healthz", q.url));
    let dead = h["groups"]["g0"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"].as_str().unwrap().contains("127.0.0.2"))
        .cloned()
        .unwrap();
    assert_eq!(dead["up"], false, "{h}");

    // A whole group down: still 200, from the other group, saying which is missing.
    c.kill(2);
    c.kill(3);
    let v = get_ok(&format!("{}/api/v1/search?q=*&limit=10", q.url));
    assert_eq!(v["partial"]["missing_groups"], json!(["g1"]), "{v}");
    assert_eq!(v["total"], N0, "{v}");
    for route in ["histogram?q=*", "terms?field=service", "trace/req-x"] {
        let v = get_ok(&format!("{}/api/v1/{route}", q.url));
        assert_eq!(
            v["partial"]["missing_groups"],
            json!(["g1"]),
            "{route}: {v}"
        );
    }
    let tr = get_ok(&format!("{}/api/v1/trace/req-x", q.url));
    assert_eq!(tr["total"], REQ0, "{tr}");

    // The UI, over the same names (started while g1 was up, so it knows the group), says
    // so on its page.
    let body = client()
        .get(format!("{}/?q=*", ui.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        body.contains("group g1 did not answer: results are incomplete"),
        "the banner: {body}"
    );
    // And the record link the UI makes still opens the record.
    let (s, page) = {
        let r = client()
            .get(format!("{}/record/{}", ui.url, urlencode(&id)))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("message 1 of a"), "{page}");

    // On Swarm and Kubernetes dead replicas drop out of DNS: g1 vanishes from the name
    // (the same file rewritten, as the bind mount sees the same inode), and is still
    // reported missing, not silently left out.
    let g0: Vec<(&str, &str)> = vec![
        ("127.0.0.2", "indexers.test"),
        ("127.0.0.3", "indexers.test"),
    ];
    hosts_file(&c.hosts, &g0);
    let listed = |h: &Value| h["groups"]["g1"].as_array().map_or(0, Vec::len);
    let mut h = get_ok(&format!("{}/healthz", q.url));
    // A round a second, each maybe slow on a loaded machine.
    for _ in 0..300 {
        if listed(&h) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        h = get_ok(&format!("{}/healthz", q.url));
    }
    assert_eq!(listed(&h), 0, "g1's replicas left the membership: {h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["problem"].as_str().unwrap().contains("g1"), "{h}");
    let v = get_ok(&format!("{}/api/v1/search?q=*&limit=10", q.url));
    assert_eq!(v["partial"]["missing_groups"], json!(["g1"]), "{v}");

    // Every group down: an error, not an empty answer.
    c.kill(1);
    let (s, v) = get(&format!("{}/api/v1/search?q=*", q.url));
    assert_eq!(s, 503, "{v}");
}

/// A DNS server for SRV records: dnsmasq on 127.0.0.154:53 (an address of its own: other
/// tests may run theirs on another loopback address), killed when dropped.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn srv_records_list_the_replicas_of_every_group() {
    let c = TwoGroups::start("fanout-srv");
    c.load();
    let port = c.target.rsplit(':').next().unwrap().to_string();
    let dir = c.hosts.parent().unwrap().to_path_buf();
    let mut server = std::process::Command::new("dnsmasq");
    server
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.154",
            "--port=53",
            "--user=root",
        ])
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    for i in 0..4 {
        server.arg(format!("--host-record=ix{i}.fanout.test,127.0.0.{}", i + 2));
        server.arg(format!(
            "--srv-host=_fanout._tcp.fanout.test,ix{i}.fanout.test,{port}"
        ));
    }
    let mut dns = Dnsmasq(
        server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian's `dnsmasq` package) runs the SRV test"),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    if let Ok(Some(status)) = dns.0.try_wait() {
        panic!("dnsmasq could not serve on 127.0.0.154:53: {status}");
    }
    // The query process resolves through it: a private /etc/resolv.conf in its namespace.
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.154\n").unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
        .arg(&resolv)
        .arg(env!("CARGO_BIN_EXE_sawmill"));
    let q = Proc::start_cmd(
        cmd,
        "query",
        &[
            "--indexer",
            "dnssrv+http://_fanout._tcp.fanout.test",
            "--discovery-interval",
            "1s",
        ],
    );
    // dnsmasq may answer a moment after the query's first round: the next rounds find it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let url = format!("{}/api/v1/search?q=*&limit=1", q.url);
    // Every replica listed, too: one whose first health check timed out has no group yet.
    let listed = |h: &Value| {
        ["g0", "g1"]
            .iter()
            .all(|g| h["groups"][g].as_array().map(Vec::len) == Some(2))
    };
    loop {
        let (status, v) = get(&url);
        let h = get_ok(&format!("{}/healthz", q.url));
        if status == 200 && v["total"] == N0 + N1 && v.get("partial").is_none() && listed(&h) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw both groups through SRV: {status} {v} {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_live_tail_through_query_merges_the_new_records_of_every_group() {
    let c = TwoGroups::start("fanout-tail");
    c.load();
    let q = c.query();
    let resp = client()
        .get(format!("{}/api/v1/tail?q=*", q.url))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = BufReader::new(resp).lines();
    // New records in each group, on both of its replicas, after the tail opened.
    for (i, (g, ix)) in c.ixs.iter().enumerate() {
        let (src, seq) = if i < 2 { ("a", N0 + 1) } else { ("b", N1 + 1) };
        let recs = [record(src, seq, i / 2)];
        let (status, v) = post(
            &ix.as_ref().unwrap().api("/api/v1/ingest"),
            ndjson(&recs),
            None,
        );
        assert_eq!(status, 200, "{g}: {v}");
    }
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let line = lines.next().expect("the stream goes on").unwrap();
        if let Some(data) = line.strip_prefix("data:") {
            let hit: Value = serde_json::from_str(data.trim()).unwrap();
            ids.push(hit["_id"].as_str().unwrap().to_string());
        }
    }
    ids.sort();
    let want = [format!("g0~s~{}~a", N0 + 1), format!("g1~s~{}~b", N1 + 1)];
    assert_eq!(ids, want, "one new record from each group, once");
}
