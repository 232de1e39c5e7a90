//! Searches under load and huge records: the bound on concurrent searches, the search
//! timeout on every search route, ingest beside heavy searches, messages cut on ingest, huge
//! answers streamed in bounded memory, and list pages asking only for what they show.

use std::io::{BufRead, BufReader, Read};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::util::*;

const WORDS: [&str; 12] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu",
];
/// A query that must read the positions of most records: slow enough to overlap and to
/// pass a 1 ms deadline, yet legal.
const HEAVY: &str = "\"alpha beta\" OR \"gamma delta\" OR \"epsilon zeta\" OR \"eta theta\"";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` records of one host, service and trace, with 40-word messages, over the last hour.
fn corpus(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let t0 = now_ms() - 3_600_000;
    let recs: Vec<Value> = (0..n)
        .map(|i| {
            let msg: Vec<&str> = (0..40).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
            json!({"message": msg.join(" "), "host": "h1", "service": "api", "trace_id": TRACE,
                   "ts": t0 + (i as i64 * 3_600_000 / n as i64), "fields": {"n": i}})
        })
        .collect();
    recs.chunks(10_000).map(ndjson).collect()
}

fn load(ix: &Indexer, batches: &[Vec<u8>]) {
    for b in batches {
        let (s, v) = post(&ix.api("/api/v1/ingest"), b.clone(), None);
        assert_eq!(s, 200, "{v}");
    }
}

fn small_ingest(ix: &Indexer, i: usize) {
    let body = ndjson(&[json!({"message": format!("small {i}"), "service": "small"})]);
    let (s, v) = post(&ix.api("/api/v1/ingest"), body, None);
    assert_eq!(
        (s, v["accepted"].as_u64()),
        (200, Some(1)),
        "a small ingest beside heavy searches answered {s}: {v}"
    );
}

/// One GET: status, `Retry-After`, body.
fn get_full(url: &str) -> (u16, Option<String>, Value) {
    let resp = client().get(url).send().expect("request sent");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().unwrap_or_default();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// Regression (issue 9, point 9): nothing bounded concurrent searches, so 50 clients of
// heavy queries starved ingest and `/healthz` and grew the indexer to 634 MiB.
#[test]
fn searches_beyond_the_limit_wait_or_get_429_or_503_with_retry_after_and_are_counted() {
    let dir = TempDir::new("search-limit");
    let ix = Indexer::start_env(
        dir.path(),
        &["--commit-interval", "100ms"],
        &[
            ("SAWMILL_MAX_CONCURRENT_SEARCHES", "1"),
            ("SAWMILL_SEARCH_QUEUE", "1"),
        ],
    );
    load(&ix, &corpus(100_000, 1));
    wait_total(&ix, "service:api", 100_000);
    let url = ix.api(&format!("/api/v1/search?q={}&limit=100", urlencode(HEAVY)));
    let t = Instant::now();
    let one = get_ok(&url);
    let one_ms = t.elapsed().as_millis();
    assert!(one["total"].as_u64().unwrap() > 0, "{}", one["total"]);

    let clients = 40;
    let barrier = Barrier::new(clients);
    let answers: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    get_full(&url)
                })
            })
            .collect();
        // Ingest goes on meanwhile: its requests never wait behind searches.
        for i in 0..5 {
            small_ingest(&ix, i);
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    let other: Vec<_> = answers
        .iter()
        .filter(|a| a.0 != 200 && a.0 != 429)
        .collect();
    assert!(
        other.is_empty(),
        "answers other than 200 and 429: {other:?}"
    );
    assert!(
        !busy.is_empty(),
        "{clients} heavy searches at once (one alone took {one_ms} ms) with one slot and a queue of one: \
         expected some 429s, got {ok} × 200 and none refused"
    );
    for (_, retry, v) in &busy {
        let secs: u64 = retry
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {retry:?} {v}"));
        assert!(secs >= 1, "Retry-After {secs}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("--max-concurrent-searches") && v["status"] == 429,
            "{v}"
        );
    }
    // Every refusal is counted, and only refusals.
    assert_eq!(
        ix.metric("sawmill_indexer_searches_rejected_total{reason=\"queue_full\"}"),
        busy.len() as f64
    );
    assert_eq!(
        ix.metric("sawmill_indexer_searches_rejected_total{reason=\"queue_timeout\"}"),
        0.0
    );
    assert_eq!(ix.metric("sawmill_indexer_searches_running"), 0.0);
    assert_eq!(ix.metric("sawmill_indexer_searches_queued"), 0.0);
    // The answers that got through are whole.
    for (s, _, v) in &answers {
        if *s == 200 {
            assert_eq!(v["total"], one["total"]);
            assert_eq!(v["hits"].as_array().map(Vec::len), Some(100));
        }
    }
    wait_total(&ix, "service:small", 5);

    // A queue that waits long enough lets them all through, one at a time.
    assert!(ix.terminate().success());
    let all_wait = [
        ("SAWMILL_MAX_CONCURRENT_SEARCHES", "1"),
        ("SAWMILL_SEARCH_QUEUE", "100"),
        ("SAWMILL_SEARCH_QUEUE_TIMEOUT", "60s"),
    ];
    let ix = Indexer::start_env(dir.path(), &[], &all_wait);
    let statuses = burst(&url_of(&ix, HEAVY), 12);
    assert_eq!(
        statuses.iter().filter(|a| a.0 == 200).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(
        ix.metric("sawmill_indexer_searches_rejected_total{reason=\"queue_full\"}")
            + ix.metric("sawmill_indexer_searches_rejected_total{reason=\"queue_timeout\"}"),
        0.0
    );
    // A wait longer than --search-queue-timeout is refused with 503, and counted.
    assert!(ix.terminate().success());
    let short_wait = [
        ("SAWMILL_MAX_CONCURRENT_SEARCHES", "1"),
        ("SAWMILL_SEARCH_QUEUE", "100"),
        ("SAWMILL_SEARCH_QUEUE_TIMEOUT", "1ms"),
    ];
    let ix = Indexer::start_env(dir.path(), &[], &short_wait);
    let answers = burst(&url_of(&ix, HEAVY), clients);
    let waited: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(
        answers.iter().filter(|a| a.0 != 200 && a.0 != 503).count(),
        0,
        "{answers:?}"
    );
    assert!(
        !waited.is_empty(),
        "{clients} heavy searches at once with one slot and a 1 ms wait: none refused"
    );
    for (_, retry, v) in &waited {
        assert_eq!(retry.as_deref(), Some("1"), "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--search-queue-timeout"),
            "{v}"
        );
    }
    assert_eq!(
        ix.metric("sawmill_indexer_searches_rejected_total{reason=\"queue_timeout\"}"),
        waited.len() as f64
    );
}

fn url_of(ix: &Indexer, q: &str) -> String {
    ix.api(&format!("/api/v1/search?q={}&limit=100", urlencode(q)))
}

/// `n` GETs of `url` at once.
fn burst(url: &str, n: usize) -> Vec<(u16, Option<String>, Value)> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    get_full(url)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The first SSE `event: error` of a tail, within `within`.
fn tail_error(ix: &Indexer, q: &str, within: Duration, after_open: impl FnOnce()) -> String {
    let resp = reqwest::blocking::Client::builder()
        .timeout(within)
        .build()
        .unwrap()
        .get(ix.api(&format!("/api/v1/tail?q={}", urlencode(q))))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = BufReader::new(resp).lines();
    // The stream opens with a comment: the tail is subscribed from here on.
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with(':'), "{first}");
    after_open();
    let mut is_error = false;
    for line in lines {
        let line = line.unwrap_or_else(|e| panic!("no error event within {within:?}: {e}"));
        if line == "event: error" {
            is_error = true;
        } else if is_error {
            if let Some(data) = line.strip_prefix("data: ") {
                return data.to_string();
            }
        }
    }
    panic!("the tail ended without an error event");
}

// Regression (issue 9, point 9): searches had no timeout; a heavy one ran as long as it
// took, on every route.
#[test]
fn a_search_over_the_timeout_is_stopped_with_504_on_every_search_route() {
    let dir = TempDir::new("search-timeout");
    let data = dir.path().join("data");
    let id = {
        let ix = Indexer::start(&data, &["--commit-interval", "100ms"]);
        load(&ix, &corpus(100_000, 2));
        wait_total(&ix, "service:api", 100_000);
        let v = get_ok(&ix.api("/api/v1/search?q=fields.n:50000&limit=1"));
        let id = v["hits"][0]["_id"].as_str().unwrap().to_string();
        assert!(ix.terminate().success());
        id
    };
    let ix = Indexer::start_env(
        &data,
        &["--commit-interval", "2s"],
        &[("SAWMILL_SEARCH_TIMEOUT", "1ms")],
    );
    let heavy = urlencode(HEAVY);
    let routes = [
        format!("/api/v1/search?q={heavy}&limit=100"),
        format!("/api/v1/histogram?q={heavy}&buckets=100"),
        format!("/api/v1/terms?field=host&q={heavy}"),
        format!("/api/v1/trace/{TRACE}?limit=100000"),
        format!("/api/v1/context/{id}?before=10000&after=10000"),
    ];
    for r in &routes {
        let (status, _, v) = get_full(&ix.api(r));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            status == 504 && msg.contains("--search-timeout") && msg.contains("1ms"),
            "GET {r} with --search-timeout 1ms answered {status}: {}",
            &v.to_string()[..v.to_string().len().min(300)]
        );
    }
    assert_eq!(
        ix.metric("sawmill_indexer_searches_timed_out_total"),
        routes.len() as f64
    );
    // The live tail's search of each round is bounded too; it says so and carries on.
    let batch = corpus(30_000, 3);
    let err = tail_error(&ix, HEAVY, Duration::from_secs(50), || load(&ix, &batch));
    assert!(err.contains("--search-timeout"), "{err}");
    assert!(ix.metric("sawmill_indexer_searches_timed_out_total") > routes.len() as f64);
    // Ingest was never refused, and light searches still answer.
    small_ingest(&ix, 0);
    assert_eq!(ix.metric("sawmill_indexer_searches_running"), 0.0);
}

/// A message's length, without keeping it.
struct Len(usize);

impl<'de> Deserialize<'de> for Len {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Len, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Len;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<Len, E> {
                Ok(Len(s.len()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
struct BigHit {
    message: Len,
}

#[derive(Deserialize)]
struct BigAnswer {
    total: u64,
    hits: Vec<BigHit>,
}

// Regression (issue 9, point 10): answers were built whole in memory; 200 records of 1 MiB
// took the indexer from 10 to 810 MiB for one `q=*&limit=10000`, and to 2 GiB for four.
#[test]
fn four_huge_answers_at_once_stay_within_128_mib_of_indexer_memory() {
    let dir = TempDir::new("huge-answers");
    let ix = Indexer::start_env(
        dir.path(),
        &["--commit-interval", "100ms"],
        &[("SAWMILL_MAX_MESSAGE_BYTES", "2MiB")],
    );
    const MIB: usize = 1 << 20;
    let t0 = now_ms() - 600_000;
    for batch in 0..10 {
        let recs: Vec<Value> = (0..20)
            .map(|i| {
                let n = batch * 20 + i;
                let mut m = format!("record {n} ");
                while m.len() < MIB {
                    m.push_str(WORDS[m.len() % WORDS.len()]);
                    m.push(' ');
                }
                m.truncate(MIB);
                json!({"message": m, "service": "huge", "ts": t0 + n as i64 * 1000})
            })
            .collect();
        let (s, v) = post(&ix.api("/api/v1/ingest"), ndjson(&recs), None);
        assert_eq!((s, v["accepted"].as_u64()), (200, Some(20)), "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_ok(&ix.api("/api/v1/search?q=service:huge&limit=0"))["total"] != 200 {
        assert!(
            Instant::now() < deadline,
            "200 huge records never searchable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = ix.rss_kib();
    ix.reset_peak_rss();
    let url = ix.api("/api/v1/search?q=*&limit=10000");
    let answers: Vec<(u64, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let resp = client().get(&url).send().unwrap();
                    assert_eq!(resp.status().as_u16(), 200);
                    let a: BigAnswer = serde_json::from_reader(resp).expect("a JSON answer");
                    let min = a.hits.iter().map(|h| h.message.0).min().unwrap_or(0);
                    (a.total, a.hits.len(), min)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for a in &answers {
        assert_eq!(*a, (200, 200, MIB), "(total, hits, shortest message)");
    }
    let grew_mib = (ix.peak_rss_kib().saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "four huge answers: indexer peak RSS {grew_mib:.1} MiB above {:.0} MiB",
        before as f64 / 1024.0
    );
    assert!(
        grew_mib <= 128.0,
        "four concurrent q=*&limit=10000 answers over 200 records of 1 MiB raised the indexer's \
         peak RSS by {grew_mib:.0} MiB above {:.0} MiB (limit 128 MiB)",
        before as f64 / 1024.0
    );
}

// Regression (issue 9, point 10): the API stored 1 MiB messages whole; only the shipper cut.
#[test]
fn a_1_mib_message_is_cut_to_256_kib_on_a_utf8_boundary_and_flagged() {
    let dir = TempDir::new("cut-on-ingest");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    // One byte, then two-byte characters: 262144 falls inside one, so the cut is one byte
    // shorter.
    let big = format!("a{}", "é".repeat(1 << 19));
    let exact = "x".repeat(256 << 10);
    let recs = [
        json!({"message": big, "service": "ndjson"}),
        json!({"message": exact, "service": "exact"}),
    ];
    let (s, v) = post(&ix.api("/api/v1/ingest"), ndjson(&recs), None);
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(2)), "{v}");
    let mut bulk = Vec::new();
    for r in [
        json!({"message": big, "service": "bulk"}),
        json!({"message": {"nested": big}, "service": "bulk-object"}),
    ] {
        bulk.extend_from_slice(b"{\"index\":{}}\n");
        serde_json::to_writer(&mut bulk, &r).unwrap();
        bulk.push(b'\n');
    }
    let (s, v) = post(&ix.api("/_bulk"), bulk, None);
    assert_eq!((s, v["errors"].as_bool()), (200, Some(false)), "{v}");
    for (service, want_len) in [
        ("ndjson", 262_143),
        ("bulk", 262_143),
        ("bulk-object", 262_144),
        ("exact", 262_144),
    ] {
        let v = wait_total(&ix, &format!("service:{service}"), 1);
        let h = &v["hits"][0];
        let m = h["message"].as_str().unwrap();
        assert_eq!(m.len(), want_len, "{service}: message of {} bytes", m.len());
        if service == "exact" {
            assert_eq!(h.get("truncated"), None, "a message at the limit is whole");
        } else {
            assert_eq!(h["truncated"], true, "{service}");
            assert!(m.ends_with('é') || service == "bulk-object", "{service}");
        }
    }
    assert_eq!(ix.metric("sawmill_indexer_records_truncated_total"), 3.0);
}

// Regression (issue 9, point 10): each Discover page view fetched about 100 MB of messages
// that the page then cut at 4 KiB.
#[test]
fn list_pages_ask_for_cut_messages_and_the_record_page_shows_all() {
    let dir = TempDir::new("ui-cut");
    let ix = Indexer::start_env(
        dir.path(),
        &["--commit-interval", "100ms"],
        &[("SAWMILL_MAX_MESSAGE_BYTES", "2MiB")],
    );
    let big = |i: usize| format!("huge{i} {}", "ω".repeat(300_000));
    let recs: Vec<Value> = (0..3)
        .map(|i| json!({"message": big(i), "service": "huge"}))
        .collect();
    let (s, v) = post(&ix.api("/api/v1/ingest"), ndjson(&recs), None);
    assert_eq!(s, 200, "{v}");
    wait_total(&ix, "service:huge", 3);
    // The API cuts on request, on a character boundary, and says so.
    let resp = client()
        .get(ix.api("/api/v1/search?q=service:huge&max_message_bytes=4097"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = Vec::new();
    resp.take(1 << 20).read_to_end(&mut body).unwrap();
    assert!(body.len() < 20_000, "answer of {} bytes", body.len());
    let v: Value = serde_json::from_slice(&body).unwrap();
    for h in v["hits"].as_array().unwrap() {
        let m = h["message"].as_str().unwrap();
        assert!(m.len() <= 4097 && m.len() > 4090, "{}", m.len());
        assert_eq!(h["_message_cut"], true);
    }
    let ui = Ui::start(&[&ix.url]);
    let page = client()
        .get(format!("{}/?q=service:huge", ui.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains("max_message_bytes="),
        "Discover's search through the API does not ask for cut messages"
    );
    let href = page
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|h| h.starts_with("/record/"))
        .expect("a link to the whole record")
        .replace("&amp;", "&");
    let record = client()
        .get(format!("{}{href}", ui.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let shown = record.matches('ω').count();
    assert!(
        shown >= 300_000,
        "the record page shows {shown} of the message's 300000 ω"
    );
}

#[test]
fn a_search_stopped_at_its_timeout_is_not_sent_to_the_next_replica() {
    // A query heavy enough to hit --search-timeout on one replica would hit it on the
    // others too: failing over would only double the load of the heaviest queries (the
    // amplification that let one page view kill both replicas before).
    let dirs = [TempDir::new("timeout-ui-a"), TempDir::new("timeout-ui-b")];
    let batches = corpus(20_000, 5);
    let ixs: Vec<Indexer> = dirs
        .iter()
        .map(|d| {
            let ix = Indexer::start_env(
                d.path(),
                &["--commit-interval", "100ms"],
                &[("SAWMILL_SEARCH_TIMEOUT", "1ms")],
            );
            load(&ix, &batches);
            ix
        })
        .collect();
    // Searchable on both (a search itself would time out), so each would time out alike.
    for ix in &ixs {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ix.metric("sawmill_indexer_records_indexed_total") < 20_000.0 {
            assert!(Instant::now() < deadline, "records never became searchable");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300)); // past the next reader reload
    }
    let ui = Ui::start(&[&ixs[0].url, &ixs[1].url]);
    let resp = client()
        .get(format!("{}/?q={}&start=now-2h", ui.url, urlencode(HEAVY)))
        .send()
        .expect("the UI answers");
    let html = resp.text().unwrap();
    let (a, b) = (
        ixs[0].metric("sawmill_indexer_searches_timed_out_total"),
        ixs[1].metric("sawmill_indexer_searches_timed_out_total"),
    );
    assert!(a > 0.0, "the first replica timed nothing out");
    assert!(
        html.contains("--search-timeout"),
        "the page does not say the search took too long"
    );
    assert_eq!(
        b, 0.0,
        "the timed-out search was sent to the second replica too"
    );
}
