//! Page handlers through the router (`oneshot`, no UI socket) against real indexers started
//! in this process on loopback ports.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sawmill_record::api;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{router, Client};

/// A real indexer in this process, on a kernel-chosen loopback port.
struct Indexer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    dir: std::path::PathBuf,
}

impl Indexer {
    async fn start(name: &str) -> Indexer {
        let dir = std::env::temp_dir().join(format!(
            "sawmill-ui-{name}-{}-{}",
            std::process::id(),
            fastrand_u32()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = sawmill_indexer::StoreConfig::new(&dir);
        cfg.commit_interval = Duration::from_millis(20);
        cfg.writer_threads = 1;
        cfg.writer_memory = 16 << 20;
        let store = tokio::task::spawn_blocking(move || sawmill_indexer::Store::open(cfg))
            .await
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sawmill_indexer::serve(
            listener,
            store,
            sawmill_indexer::ApiConfig::default(),
            async {
                let _ = rx.await;
            },
        ));
        Indexer {
            url,
            stop: Some(tx),
            task: Some(task),
            dir,
        }
    }

    /// Ingests records and waits until the search API finds `q` `n` times.
    async fn ingest(&self, records: &[Value]) {
        let mut body = String::new();
        for r in records {
            body.push_str(&r.to_string());
            body.push('\n');
        }
        let resp = reqwest::Client::new()
            .post(format!("{}{}", self.url, api::INGEST))
            .body(body)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["rejected"], json!([]), "{v}");
    }

    async fn wait_total(&self, n: u64) {
        for _ in 0..500 {
            let b = reqwest::get(format!("{}{}?limit=0&start=", self.url, api::SEARCH))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            if v["total"].as_u64() == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("indexer {} never held {n} records", self.url);
    }

    /// Stops serving, as a killed replica would.
    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn ago(secs: i64) -> String {
    crate::row::format_iso(time::OffsetDateTime::now_utc() - time::Duration::seconds(secs))
}

/// A request through three services; the payments line is an error.
fn request_records(req: &str, at: i64) -> Vec<Value> {
    // One `now` for the request: a clock read per record put the offsets a few tens of
    // microseconds off 12 ms steps on a loaded machine (`+36.1 ms`).
    let first = time::OffsetDateTime::now_utc() - time::Duration::seconds(at);
    let mut out = Vec::new();
    for (i, (svc, sev, msg)) in [
        ("gateway", "info", "GET /api/checkout started"),
        ("auth", "info", "token validated"),
        ("payments", "err", "payment provider timeout after 5000ms"),
        (
            "gateway",
            "warning",
            "GET /api/checkout completed status=502",
        ),
    ]
    .iter()
    .enumerate()
    {
        out.push(json!({
            "ts": crate::row::format_iso(first + time::Duration::milliseconds(12 * i as i64)),
            "message": msg, "service": svc, "severity": sev, "host": format!("node-{}", i % 2),
            "request_id": req, "trace_id": format!("t-{req}"), "container": format!("demo-{svc}-1"),
            "stream": "stdout", "_src": "test", "_seq": at * 10 + i as i64,
        }));
    }
    out
}

async fn call(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Calls `uri` and checks the answer's status and that the page says `text`; returns the page.
async fn call_says(app: &axum::Router, uri: &str, status: u16, text: &str) -> String {
    let (got, _, body) = call(app, uri).await;
    assert_eq!(got, status, "{uri}: {body}");
    assert!(body.contains(text), "{uri} should say {text:?}: {body}");
    body
}

#[tokio::test]
async fn a_ui_without_indexers_is_a_configuration_error() {
    let e = Client::new(Vec::new(), Default::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, crate::Error::Config(_)), "{e:?}");
    assert_eq!(e.to_string(), "give at least one --indexer URL");
}

async fn ui(urls: &[&str]) -> axum::Router {
    router(
        Client::new(
            urls.iter().map(|u| u.to_string()).collect(),
            Default::default(),
        )
        .await
        .unwrap(),
        None,
    )
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_shows_hits_histogram_facets_and_highlights() {
    let ix = Indexer::start("discover").await;
    let mut recs = Vec::new();
    for i in 0..10 {
        recs.extend(request_records(&format!("req-{i}"), 60 + i * 30));
    }
    ix.ingest(&recs).await;
    ix.wait_total(40).await;
    let app = ui(&[&ix.url]).await;
    let (status, headers, body) = call(&app, "/?q=timeout").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(count(&body, "<details class=\"row"), 10, "one row per hit");
    assert!(
        body.contains("<strong id=\"hits-total\">10</strong>"),
        "hit count shown"
    );
    assert_eq!(
        count(&body, "<mark>timeout</mark>"),
        10,
        "matched word marked in each row"
    );
    assert!(body.contains("<svg class=\"histogram\""), "histogram drawn");
    assert!(
        body.contains("class=\"errbar\""),
        "errors drawn over the bars"
    );
    for f in ["service", "host", "severity", "container", "stream"] {
        assert!(
            body.contains(&format!("<section class=\"facet\" data-field=\"{f}\">")),
            "facet {f}"
        );
    }
    // "filter for" composes the query; its link is escaped into the attribute.
    assert!(
        body.contains(
            "href=\"/?q=%28timeout%29%20AND%20service%3A%22payments%22&#38;start=now-15m"
        ),
        "filter for payments"
    );
    assert!(
        body.contains(&format!("{}?q=timeout&#38;start=now-15m", api::SEARCH)),
        "API URL shown"
    );
    assert!(
        body.contains("href=\"/trace/req-0?tz=utc\""),
        "request ids link to the request view"
    );
    assert!(
        body.contains("latest failed request"),
        "a failure is one click away"
    );
    assert!(body.contains("+00:00</time>"), "times carry their offset");
    // "Filter out" really excludes (regression: `* AND NOT x` matched nothing at all).
    let out = crate::url::filter_out("", "service", "payments");
    let (_, _, body) = call(&app, &format!("/?q={}", crate::url::enc(&out))).await;
    assert!(
        body.contains("<strong id=\"hits-total\">30</strong>"),
        "40 minus the 10 payments lines"
    );
    let out = crate::url::filter_out("token OR checkout", "host", "node-0");
    let (_, _, body) = call(&app, &format!("/?q={}", crate::url::enc(&out))).await;
    assert!(
        body.contains("<strong id=\"hits-total\">20</strong>"),
        "30 match, 10 of them on node-0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidebar_facets_task_metadata_where_the_matches_carry_it() {
    let ix = Indexer::start("taskfacets").await;
    let now = time::OffsetDateTime::now_utc();
    let mut recs = Vec::new();
    // Seven lines of three pods in one namespace (`web`'s words are also `web-1`'s), a
    // scheduled job's three closing records, and three lines with no task metadata at all.
    for (i, pod) in ["checkout-7d9f-x2x"; 4]
        .into_iter()
        .chain(["web-1"; 2])
        .chain(["web"])
        .enumerate()
    {
        recs.push(json!({"message": format!("served {i}"), "service": "shop",
            "fields": {"k8s_namespace": "shop", "k8s_pod": pod}}));
    }
    for code in [0, 0, 137] {
        recs.push(
            json!({"message": format!("exited with code {code}"), "service": "backup",
            "fields": {"exit_code": code, "duration_ms": 1200}}),
        );
    }
    for i in 0..3 {
        recs.push(json!({"message": format!("plain {i}"), "service": "other"}));
    }
    for r in &mut recs {
        r["ts"] = json!(crate::row::format_iso(now - time::Duration::seconds(30)));
    }
    ix.ingest(&recs).await;
    ix.wait_total(13).await;
    let app = ui(&[&ix.url]).await;
    let (status, _, body) = call(&app, "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for f in ["fields.k8s_namespace", "fields.k8s_pod", "fields.exit_code"] {
        assert!(
            body.contains(&format!("<section class=\"facet\" data-field=\"{f}\">")),
            "facet {f}: {body}"
        );
    }
    for f in [
        "fields.swarm_service",
        "fields.nomad_job",
        "fields.marathon_app_id",
    ] {
        assert!(
            !body.contains(&format!("data-field=\"{f}\"")),
            "{f}: no record carries it, so no facet"
        );
    }
    assert!(
        body.contains(
            "<span class=\"value\">checkout-7d9f-x2x</span> <span class=\"count\">4</span>"
        ),
        "a pod name counted whole, not by its words"
    );
    assert!(body.contains("<span class=\"value\">137</span> <span class=\"count\">1</span>"));
    assert!(body.contains("<span class=\"value\">0</span> <span class=\"count\">2</span>"));
    assert!(body.contains("6 without"), "the other records have no pod");
    assert!(body.contains("<span class=\"value\">web</span> <span class=\"count\">1</span>"));
    // The core facets stay, values or not.
    assert!(body.contains("<section class=\"facet\" data-field=\"container\">"));
    // Each value's "filter for" finds as many records as the facet counted.
    for (field, value, want) in [
        ("fields.k8s_pod", "checkout-7d9f-x2x", 4),
        ("fields.k8s_pod", "web-1", 2),
        ("fields.k8s_pod", "web", 1),
        ("fields.exit_code", "137", 1),
        ("fields.exit_code", "0", 2),
    ] {
        let q = crate::url::filter_for("", field, value);
        let (_, _, body) = call(&app, &format!("/?q={}", crate::url::enc(&q))).await;
        assert!(
            body.contains(&format!("<strong id=\"hits-total\">{want}</strong>")),
            "{q}: want {want} hits"
        );
        let out = crate::url::filter_out("", field, value);
        let (_, _, body) = call(&app, &format!("/?q={}", crate::url::enc(&out))).await;
        assert!(
            body.contains(&format!("<strong id=\"hits-total\">{}</strong>", 13 - want)),
            "{out}: want {} hits",
            13 - want
        );
    }
    // Narrowed to the job, only its facets are left.
    let (_, _, body) = call(&app, "/?q=service%3Abackup").await;
    assert!(body.contains("data-field=\"fields.exit_code\""));
    assert!(
        !body.contains("data-field=\"fields.k8s_pod\""),
        "no pod among the job's records"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_that_does_not_parse_is_shown_inline_with_the_query_kept() {
    let ix = Indexer::start("badquery").await;
    let app = ui(&[&ix.url]).await;
    let body = call_says(
        &app,
        "/?q=%28service%3A%3Cb%3E",
        400,
        "class=\"query-error\"",
    )
    .await;
    assert!(
        body.contains("does not parse"),
        "the indexer's message: {body}"
    );
    assert!(
        body.contains("value=\"(service:&#60;b&#62;\""),
        "query kept, escaped"
    );
    assert!(!body.contains("<b>"), "reflected query never markup");
    call_says(&app, "/?start=yesterday", 400, "is not a time").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_results_say_what_to_do() {
    let ix = Indexer::start("empty").await;
    let app = ui(&[&ix.url]).await;
    let body = call_says(&app, "/?q=nothing", 200, "No records match").await;
    assert!(body.contains("Try a wider range"));
}

fn xss_payloads() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/xss.txt");
    let alt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus/xss.txt"
    );
    let text = std::fs::read_to_string(path)
        .or_else(|_| std::fs::read_to_string(alt))
        .unwrap_or_else(|e| panic!("the XSS corpus is needed at {path}: {e}"));
    let v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert!(v.len() >= 10, "corpus has {} payloads", v.len());
    v
}

/// No payload appears as markup: every one with a `<` or a quote is only ever escaped,
/// and no link uses a script or data scheme.
fn assert_inert(page: &str, payloads: &[String], what: &str) {
    for p in payloads {
        if p.contains('<') {
            assert!(
                !page.contains(p.as_str()),
                "{what}: payload {p:?} appears unescaped"
            );
        }
    }
    let lower = page.to_ascii_lowercase();
    for bad in [
        "href=\"javascript:",
        "href=\"data:",
        "<iframe",
        "<svg onload",
        "<img",
        "<style>",
        "<mark>not",
        "<a href=\"javascript",
    ] {
        assert!(!lower.contains(bad), "{what}: {bad:?} in page");
    }
    assert_eq!(
        count(page, "<script"),
        1,
        "{what}: only the page's own script tag"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn xss_payloads_in_every_place_stay_text() {
    let ix = Indexer::start("xss").await;
    let payloads = xss_payloads();
    let recs: Vec<Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut fields = serde_json::Map::new();
            fields.insert(p.clone(), json!(p));
            json!({
                "ts": ago(30 + i as i64), "message": format!("xss {p}"), "service": p, "host": p,
                "severity": "err", "request_id": p, "fields": fields, "_src": "xss", "_seq": i,
            })
        })
        .collect();
    ix.ingest(&recs).await;
    ix.wait_total(payloads.len() as u64).await;
    let app = ui(&[&ix.url]).await;
    let (status, _, body) = call(&app, "/?q=xss&start=now-1h").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&body, "<details class=\"row"), payloads.len());
    assert_inert(&body, &payloads, "discover");
    // Shown as text: the escaped form is there.
    assert!(body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    // A payload as the query is reflected escaped too.
    let (_, _, body) = call(
        &app,
        &format!("/?q={}", crate::url::enc("\"><img src=x onerror=alert(1)>")),
    )
    .await;
    assert_inert(&body, &payloads, "reflected query");
    for p in &payloads {
        let (status, _, body) = call(&app, &format!("/trace/{}", crate::url::enc(p))).await;
        assert_eq!(status, StatusCode::OK, "request view of {p:?}");
        assert!(
            body.contains("class=\"rec\""),
            "request view of {p:?} finds its record"
        );
        assert_inert(&body, &payloads, "request view");
    }
    let ids: Vec<String> = body_ids(&call(&app, "/?q=xss&start=now-1h").await.2);
    for id in ids {
        let (status, _, body) = call(&app, &format!("/context/{id}?scope=host")).await;
        assert_eq!(status, StatusCode::OK);
        assert_inert(&body, &payloads, "context");
        let (status, _, body) = call(&app, &format!("/record/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_inert(&body, &payloads, "record");
    }
    let (_, _, body) = call(&app, &format!("/tail?q={}", crate::url::enc("xss"))).await;
    assert_inert(&body, &payloads, "tail");
}

/// The `_id`s in the context links of a page.
/// The attribute value that follows the first `prefix` (which ends at its opening quote),
/// with `&` unescaped: the link as a browser would follow it.
fn link_after(body: &str, prefix: &str) -> String {
    body.split(prefix)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
}

fn body_ids(body: &str) -> Vec<String> {
    body.split("href=\"/context/")
        .skip(1)
        .map(|s| s.split('?').next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_view_has_one_lane_per_service_and_offsets() {
    let ix = Indexer::start("trace").await;
    ix.ingest(&request_records("req-abc", 100)).await;
    ix.ingest(&request_records("req-other", 50)).await;
    ix.wait_total(8).await;
    let app = ui(&[&ix.url]).await;
    let (status, _, body) = call(&app, "/trace/req-abc").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        count(&body, "<g class=\"lane\">"),
        3,
        "gateway, auth, payments"
    );
    assert_eq!(count(&body, "class=\"mark\""), 3);
    assert_eq!(
        count(&body, "class=\"mark error\""),
        1,
        "the error stands out"
    );
    assert!(body.contains("<span class=\"offset\">+0.0 ms</span>"));
    assert!(
        body.contains("<span class=\"offset\">+36.0 ms</span>"),
        "{body}"
    );
    // The API line shows the request the page asked through `sawmill query`, built from
    // the contract's route: no indexer's URL, which would give one group's records only.
    let asked = format!(
        "<code>{}?limit=5000&#38;max_message_bytes=16384</code>",
        api::path_with(api::TRACE, "req-abc")
    );
    assert!(body.contains(&asked), "{asked} in {body}");
    assert!(!body.contains(&format!("{}/api", ix.url)), "{body}");
    // Oldest first.
    let a = body.find("GET /api/checkout started").unwrap();
    let b = body.find("completed status=502").unwrap();
    assert!(a < b);
    call_says(&app, "/trace/no-such-request", 200, "No record carries").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn context_highlights_the_anchor_and_switches_scope() {
    let ix = Indexer::start("context").await;
    let mut recs = Vec::new();
    for i in 0..30 {
        recs.push(json!({"ts": ago(300 - i), "message": format!("line {i}"), "service": "api", "host": "h1", "_src": "c", "_seq": i}));
        recs.push(json!({"ts": ago(300 - i), "message": format!("other {i}"), "service": "db", "host": "h1", "_src": "c", "_seq": 100 + i}));
    }
    ix.ingest(&recs).await;
    ix.wait_total(60).await;
    let app = ui(&[&ix.url]).await;
    let (_, _, d) = call(&app, "/?q=%22line%2015%22&start=now-1h").await;
    let id = body_ids(&d).pop().expect("a hit");
    let (status, _, body) = call(&app, &format!("/context/{id}?r=0")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(count(&body, "id=\"anchor\""), 1);
    assert_eq!(
        count(&body, "<details class=\"row"),
        21,
        "10 before, the anchor, 10 after"
    );
    assert!(!body.contains("other "), "same service only");
    let anchor = body.find("id=\"anchor\"").unwrap();
    assert!(body[anchor..].find("line 15").unwrap() < body[anchor..].find("line 16").unwrap());
    assert!(body.contains(">20 earlier</a>") && body.contains(">20 later</a>"));
    let (_, _, body) = call(
        &app,
        &format!("/context/{id}?r=0&scope=host&before=30&after=40"),
    )
    .await;
    assert!(
        body.contains("other 14"),
        "same host includes other services"
    );
    assert!(body.contains("No later records in this scope"));
    // A link made before ids were cluster-wide: a replica's numeric id, with the time and
    // sender key that find the record again.
    let ts = recs[30]["ts"]
        .as_str()
        .unwrap()
        .replace(':', "%3A")
        .replace('+', "%2B");
    let old = format!("/context/15?r=1&ts={ts}&src=c&seq=15");
    let (status, _, body) = call(&app, &old).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let anchor = body.find("id=\"anchor\"").unwrap();
    assert!(body[anchor..].find("line 15").unwrap() < body[anchor..].find("line 16").unwrap());
    let (status, _, body) = call(&app, &format!("/context/{id}?scope=request")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no request id to follow");
    assert!(body.contains("has no `trace_id` or `request_id`"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replica_is_reported_and_pages_come_from_the_other() {
    let mut a = Indexer::start("replica-a").await;
    let b = Indexer::start("replica-b").await;
    let recs = request_records("req-r", 40);
    a.ingest(&recs).await;
    b.ingest(&recs).await;
    a.wait_total(4).await;
    b.wait_total(4).await;
    let app = ui(&[&a.url, &b.url]).await;
    let (status, _, body) = call(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("class=\"banner\""), "both up: no banner");
    // A link to a record on replica a, made while it was up.
    let ctx = link_after(&body, "href=\"/context/");
    assert!(ctx.contains("r=0"), "{ctx}");
    a.stop().await;
    let (status, _, body) = call(&app, "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(count(&body, "<details class=\"row"), 4);
    assert!(
        body.contains("class=\"banner\""),
        "banner says a replica is down"
    );
    assert!(
        body.contains(&format!("Indexer replica {} is down", a.url)),
        "{body}"
    );
    // The record is found again on replica b: by its id when it has a sender key, else by
    // its time (an `r~` id names the replica that gave it).
    let (status, _, body) = call(&app, &format!("/context/{ctx}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(count(&body, "id=\"anchor\""), 1);
    drop(b);
    let app2 = ui(&[&a.url]).await;
    let body = call_says(&app2, "/", 503, "no indexer answered").await;
    assert!(body.contains("Start an indexer"), "says what to do");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_message_is_cut_with_show_all() {
    let ix = Indexer::start("huge").await;
    // Under the indexer's own cut on ingest (256 KiB), so the record keeps its end.
    let big = format!("begin {} end", "y".repeat(200 << 10));
    ix.ingest(&[json!({"ts": ago(10), "message": big, "service": "big", "_src": "h", "_seq": 1})])
        .await;
    ix.wait_total(1).await;
    let app = ui(&[&ix.url]).await;
    let (status, _, body) = call(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() < 64 * 1024, "page is {} bytes", body.len());
    assert!(body.contains(">show all</a>"));
    let href = link_after(&body, "class=\"whole\" href=\"");
    let (status, _, whole) = call(&app, &href).await;
    assert_eq!(status, StatusCode::OK);
    assert!(whole.contains(" end</pre>"), "the record page shows it all");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_streams_every_hit_as_ndjson_and_csv() {
    let ix = Indexer::start("export").await;
    let recs: Vec<Value> = (0..2500).map(|i| json!({"ts": ago(600 - i / 10), "message": format!("m {i}, \"q\""), "service": "x", "_src": "e", "_seq": i})).collect();
    ix.ingest(&recs).await;
    ix.wait_total(2500).await;
    let app = ui(&[&ix.url]).await;
    let (status, headers, body) = call(&app, "/export?format=ndjson&start=now-1h").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2500, "every record, across pages");
    let mut seqs: Vec<u64> = lines.iter().map(|l| l["_seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 2500, "none twice");
    let (_, _, body) = call(&app, "/export?format=csv&start=now-1h&limit=3").await;
    let rows: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 4, "header and the limit: {body}");
    assert!(rows[0].starts_with("ts,severity,service,host"));
    assert!(rows[1].contains("\"m 2499, \"\"q\"\"\""), "{}", rows[1]);
    call_says(
        &app,
        "/export?format=csv&limit=1000000",
        400,
        "at most 100000",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn load_more_pages_with_the_cursor() {
    let ix = Indexer::start("more").await;
    let recs: Vec<Value> = (0..150)
        .map(|i| json!({"ts": ago(600 - i), "message": format!("n{i}"), "_src": "m", "_seq": i}))
        .collect();
    ix.ingest(&recs).await;
    ix.wait_total(150).await;
    let app = ui(&[&ix.url]).await;
    let (_, _, body) = call(&app, "/?start=now-1h").await;
    assert_eq!(count(&body, "<details class=\"row"), 100);
    let rows_href = link_after(&body, "data-rows=\"");
    let (status, _, frag) = call(&app, &rows_href).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&frag, "<details class=\"row"), 50);
    assert!(
        frag.contains(">n0<") || frag.contains(">n0</span>"),
        "the oldest is on the last page"
    );
    assert!(!frag.contains("more-link"), "no page after the last");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_tail_relays_new_records_as_rows() {
    let ix = Indexer::start("tail").await;
    ix.ingest(&[json!({"ts": ago(5), "message": "before the tail", "service": "t"})])
        .await;
    ix.wait_total(1).await;
    let app = ui(&[&ix.url]).await;
    let body = call_says(&app, "/tail?q=service:t", 200, "before the tail").await;
    assert!(
        body.contains("data-stream=\"/tail/stream?q=service%3At&#38;tz=utc\""),
        "{body}"
    );
    let resp = app
        .clone()
        .oneshot(
            Request::get("/tail/stream?q=service:t")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    let read = async {
        let mut sent = false;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
            if seen.contains("event: hello") && !sent {
                sent = true;
                ix.ingest(&[json!({"message": "after <b>the</b> tail", "service": "t"})])
                    .await;
            }
            if seen.contains("event: row") && seen.contains("\n\n") && seen.contains("after") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a row within 20 s");
    assert!(
        seen.contains("after &#60;b&#62;the&#60;/b&#62; tail"),
        "{seen}"
    );
    call_says(&app, "/tail?q=(", 400, "does not parse").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_and_unknown_pages_say_so() {
    let ix = Indexer::start("params").await;
    let app = ui(&[&ix.url]).await;
    call_says(&app, "/?qq=typo", 400, "unknown field `qq`").await;
    let (status, _, _) = call(&app, "/nope/%3Cscript%3E").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A parameter name is decoded and reflected in the error: it must come back escaped.
    let (status, _, body) = call(&app, "/?%3Cscript%3Ealert(1)%3C%2Fscript%3E=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.contains("<script>alert(1)"), "{body}");
    assert!(body.contains("&#60;script&#62;alert(1)"), "{body}");
    call_says(&app, "/context/abc", 400, "is not a record id").await;
    let (status, h, _) = call(&app, "/static/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
}

/// `/healthz` answers an orchestrator's health check without a session, where every page
/// sends the browser to the sign-in first.
#[tokio::test]
async fn healthz_needs_no_sign_in_where_pages_do() {
    let dir = std::env::temp_dir().join(format!("sawmill-healthz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users");
    let hash = crate::signin::hash_password("pw").unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let signin = crate::signin::SignIn::new(crate::signin::Users::load(&users).unwrap(), false);
    let client = Client::new(vec!["http://127.0.0.1:9".into()], Default::default())
        .await
        .unwrap();
    let app = router(client, Some(signin));
    let (status, _, body) = call(&app, "/healthz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"ok"}"#)
    );
    let (status, headers, _) = call(&app, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[axum::http::header::LOCATION], "/signin?next=%2F");
    let _ = std::fs::remove_dir_all(&dir);
}
