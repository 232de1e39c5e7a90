//! Fan-out tests against fake indexers: small axum servers that answer `/healthz` with a
//! group of their choosing and page `/api/v1/search` as an indexer does (newest first,
//! cursor `TS.RID`), so the cluster's merges, cursors and missing groups are checked
//! without building real indexes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sawmill_cluster::Target;
use sawmill_record::api::{self, SearchParams, SearchResponse};
use sawmill_record::time::format_micros;
use serde_json::{json, Value};

use crate::{Cluster, ClusterConfig, Error};

/// What a fake indexer says: its group (changeable, to make a group vanish) and its
/// records as (`ts` µs, record id).
struct Fake {
    group: String,
    replica: String,
    records: Vec<(i64, u64)>,
    /// Searches answer 500 (a replica failing requests while its health is fine).
    fail: bool,
    /// Searches and tails never answer (a stopped process holding its port).
    hang: bool,
    /// Its `/healthz` says it is still copying its group's records (a replica on a new disk).
    catching_up: bool,
}

type Shared = Arc<Mutex<Fake>>;

async fn health(State(f): State<Shared>) -> Json<Value> {
    let f = f.lock().unwrap();
    Json(
        json!({"status": "ok", "searchable_position": 0, "replica": f.replica, "group": f.group, "catching_up": f.catching_up}),
    )
}

async fn search(
    State(f): State<Shared>,
    Query(p): Query<SearchParams>,
) -> Result<Json<Value>, StatusCode> {
    if f.lock().unwrap().hang {
        std::future::pending::<()>().await;
    }
    let f = f.lock().unwrap();
    if f.fail {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let mut recs = f.records.clone();
    recs.sort_by(|a, b| b.cmp(a));
    // `start` and `end` are inclusive, as the indexer's.
    let micros = |t: &Option<String>| {
        t.as_deref()
            .and_then(sawmill_record::time::parse_rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
    };
    let (lo, hi) = (micros(&p.start), micros(&p.end));
    recs.retain(|r| lo.is_none_or(|l| r.0 >= l) && hi.is_none_or(|h| r.0 <= h));
    if p.order == sawmill_record::api::Order::Asc {
        recs.reverse();
    }
    let below = p.cursor.as_deref().and_then(|c| {
        let (ts, rid) = c.split_once('.')?;
        Some((ts.parse::<i64>().ok()?, rid.parse::<u64>().ok()?))
    });
    let rest: Vec<_> = recs
        .iter()
        .filter(|r| below.is_none_or(|b| **r < b))
        .collect();
    let page: Vec<_> = rest.iter().take(p.limit).collect();
    let cursor = (rest.len() > page.len())
        .then(|| page.last().map(|(ts, rid)| format!("{ts}.{rid}")))
        .flatten();
    let hits: Vec<Value> = page
        .iter()
        .map(|(ts, rid)| json!({"_id": rid.to_string(), "ts": format_micros(*ts), "message": "m"}))
        .collect();
    Ok(Json(
        json!({"total": recs.len(), "hits": hits, "took_ms": 0, "cursor": cursor}),
    ))
}

/// A record's context by key: 404 when this replica holds no record (a replica catching up
/// on a new disk), else its first record as the anchor.
async fn context(State(f): State<Shared>) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let f = f.lock().unwrap();
    let Some((ts, rid)) = f.records.first() else {
        let e = json!({"error": "record not found", "status": 404});
        return Err((StatusCode::NOT_FOUND, Json(e)));
    };
    let anchor = json!({"_id": rid.to_string(), "ts": format_micros(*ts), "_src": "a", "_seq": 1, "request_id": "req"});
    Ok(Json(
        json!({"anchor": anchor, "before": [], "after": [], "took_ms": 0}),
    ))
}

/// Starts a fake indexer of `group` holding `records`: its state and its URL.
async fn fake(group: &str, records: &[(i64, u64)]) -> (Shared, String) {
    let state = Arc::new(Mutex::new(Fake {
        group: group.into(),
        replica: format!("{group}-r{}", fastrand_id()),
        records: records.to_vec(),
        fail: false,
        hang: false,
        catching_up: false,
    }));
    let app = Router::new()
        .route(api::HEALTHZ, get(health))
        .route(api::SEARCH, get(search))
        .route(api::CONTEXT, get(context))
        .route(api::TAIL, get(std::future::pending::<()>))
        .with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (state, url)
}

/// A replica id unique within a test.
fn fastrand_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn cluster(urls: &[&str], group_grace: Duration) -> Cluster {
    cluster_with(
        urls,
        ClusterConfig {
            group_grace,
            ..ClusterConfig::default()
        },
    )
    .await
}

async fn cluster_with(urls: &[&str], config: ClusterConfig) -> Cluster {
    Cluster::start(ClusterConfig {
        targets: urls.iter().map(|u| Target::Fixed(u.to_string())).collect(),
        discovery_interval: Duration::from_millis(50),
        ..config
    })
    .await
    .unwrap()
}

fn page(limit: usize, cursor: Option<String>) -> SearchParams {
    SearchParams {
        limit,
        cursor,
        ..SearchParams::default()
    }
}

fn missing(r: &SearchResponse<crate::Doc>) -> Vec<String> {
    r.partial
        .as_ref()
        .map(|p| p.missing_groups.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_group_gone_from_discovery_is_reported_missing_for_the_grace() {
    let (_a, ua) = fake("g0", &[(3_000_000, 1)]).await;
    let (b, ub) = fake("g1", &[(2_000_000, 1)]).await;
    let c = cluster(&[&ua, &ub], Duration::from_secs(900)).await;
    let r = c.search(&page(10, None)).await.unwrap();
    assert_eq!((r.total, missing(&r)), (2, vec![]));
    // Its every replica gone from DNS, g1 is no longer listed: here its one replica says
    // another group, so discovery lists g0 and g2 only.
    b.lock().unwrap().group = "g2".into();
    for _ in 0..100 {
        if c.membership().group_names() == ["g0", "g2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.membership().group_names(), ["g0", "g2"]);
    let r = c.search(&page(10, None)).await.unwrap();
    assert_eq!(missing(&r), ["g1"]);
    assert_eq!(c.lost_groups(), ["g1"]);
}

#[tokio::test]
async fn total_stays_the_same_on_every_page() {
    let (_a, ua) = fake("g0", &[(9_000_000, 1)]).await;
    let (_b, ub) = fake("g1", &[(3_000_000, 1), (2_000_000, 2), (1_000_000, 3)]).await;
    let c = cluster(&[&ua, &ub], Duration::from_secs(900)).await;
    let (mut cursor, mut seen) = (None, 0);
    loop {
        let r = c.search(&page(2, cursor)).await.unwrap();
        assert_eq!(r.total, 4, "after {seen} hits");
        seen += r.hits.len();
        cursor = r.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, 4);
}

#[tokio::test]
async fn a_cursor_whose_unread_groups_are_all_gone_is_refused_not_an_empty_page() {
    let (_a, ua) = fake("g0", &[(9_000_000, 1)]).await;
    let (b, ub) = fake("g1", &[(3_000_000, 1), (2_000_000, 2), (1_000_000, 3)]).await;
    // No grace: a group not listed is forgotten at once, as after the grace.
    let c = cluster(&[&ua, &ub], Duration::ZERO).await;
    let r = c.search(&page(2, None)).await.unwrap();
    assert_eq!(r.hits.len(), 2);
    b.lock().unwrap().records.clear();
    b.lock().unwrap().group = "g2".into();
    for _ in 0..100 {
        if c.membership().group_names() == ["g0", "g2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // g0 is done; g1, whose hits are unread, is gone: nothing to ask.
    match c.search(&page(2, r.cursor)).await {
        Err(Error::Unavailable { attempts }) => {
            assert!(attempts.join(" ").contains("g1"), "{attempts:?}")
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

#[tokio::test]
async fn a_replica_that_failed_once_is_asked_again_once_discovery_had_its_round() {
    let (a, ua) = fake("g0", &[(1_000_000, 1)]).await;
    let (_b, ub) = fake("g0", &[(1_000_000, 1)]).await;
    let c = cluster(&[&ua, &ub], Duration::from_secs(900)).await;
    let up = |c: &Cluster| c.replicas().iter().find(|r| r.url == ua).unwrap().up;
    a.lock().unwrap().fail = true;
    assert_eq!(c.search(&page(10, None)).await.unwrap().total, 1);
    assert!(!up(&c), "asked last after it failed");
    a.lock().unwrap().fail = false;
    // Its health answers all along: once discovery had its round, it is first again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(up(&c), "{:?}", c.replicas());
    let before = c
        .metrics()
        .failovers
        .load(std::sync::atomic::Ordering::Relaxed);
    c.search(&page(10, None)).await.unwrap();
    let after = c
        .metrics()
        .failovers
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(before, after, "answered by the first replica");
}

#[tokio::test]
async fn a_replica_without_the_record_passes_a_context_lookup_to_the_next() {
    let (_a, ua) = fake("g0", &[]).await;
    let (b, ub) = fake("g0", &[(1_000_000, 7)]).await;
    let c = cluster(&[&ua, &ub], Duration::from_secs(900)).await;
    let p: sawmill_record::api::ContextParams = serde_urlencoded::from_str("").unwrap();
    let r = c.context("g0~s~1~a", &p).await.unwrap();
    assert_eq!(r.anchor["_id"], "g0~s~1~a");
    // A bare numeric id is one replica's own: refused, saying which forms to use.
    match c.context("g0~7", &p).await {
        Err(Error::BadRequest(m)) => assert!(m.contains("replica-qualified"), "{m}"),
        other => panic!("expected 400, got {other:?}"),
    }
    // Limits are checked as everywhere, naming the parameter.
    let wide: sawmill_record::api::ContextParams =
        serde_urlencoded::from_str("before=10001").unwrap();
    match c.context("g0~s~1~a", &wide).await {
        Err(Error::BadRequest(m)) => assert_eq!(m, "`before` is 10001; at most 10000"),
        other => panic!("expected 400, got {other:?}"),
    }
    // No replica has it: 404, not 503.
    b.lock().unwrap().records.clear();
    match c.context("g0~s~1~a", &p).await {
        Err(Error::Indexer { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hung_group_is_missing_after_the_group_deadline() {
    let (_a, ua) = fake("g0", &[(1_000_000, 1)]).await;
    let (b, ub) = fake("g1", &[(1_000_000, 1)]).await;
    b.lock().unwrap().hang = true;
    let c = cluster_with(
        &[&ua, &ub],
        ClusterConfig {
            group_deadline: Duration::from_millis(300),
            ..ClusterConfig::default()
        },
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(5), c.search(&page(10, None)))
        .await
        .expect("answered within the deadline")
        .unwrap();
    assert_eq!(missing(&r), ["g1"]);
}

#[tokio::test]
async fn tails_open_every_group_at_once_within_the_header_timeout() {
    let (_a, ua) = fake("g0", &[]).await;
    let (_b, ub) = fake("g1", &[]).await;
    let timeout = Duration::from_millis(400);
    let c = cluster_with(
        &[&ua, &ub],
        ClusterConfig {
            request_timeout: timeout,
            ..ClusterConfig::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let p: sawmill_record::api::TailParams = serde_urlencoded::from_str("").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), c.tail(&p))
        .await
        .expect("given up within the header timeout");
    assert!(matches!(r, Err(Error::Unavailable { .. })));
    // Both groups hang: opened one after the other, this would take twice as long.
    assert!(started.elapsed() < timeout * 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_answer_past_the_byte_cap_is_refused_with_what_to_do() {
    let records: Vec<(i64, u64)> = (1..=100).map(|i| (i * 1_000_000, i as u64)).collect();
    let (_a, ua) = fake("g0", &records).await;
    let c = cluster_with(
        &[&ua],
        ClusterConfig {
            max_answer_bytes: 2000,
            ..ClusterConfig::default()
        },
    )
    .await;
    assert_eq!(c.search(&page(2, None)).await.unwrap().hits.len(), 2);
    match c.search(&page(100, None)).await {
        Err(e @ Error::Indexer { status: 502, .. }) => {
            assert!(e.to_string().contains("`limit`"), "{e}")
        }
        other => panic!("expected 502, got {other:?}"),
    }
}

#[tokio::test]
async fn ties_at_the_anchors_microsecond_do_not_take_the_request_contexts_places() {
    const T: i64 = 5_000_000;
    let (_a, ua) = fake("g1", &[(T, 1)]).await;
    // In a group named after the anchor's, records at its microsecond come after it.
    let (_b, ub) = fake("g2", &[(T, 1), (T, 2), (T, 3), (T - 1_000_000, 4)]).await;
    let c = cluster(&[&ua, &ub], Duration::from_secs(900)).await;
    let p: sawmill_record::api::ContextParams =
        serde_urlencoded::from_str("before=1&after=3&scope=request").unwrap();
    let r = c.context("g1~s~1~a", &p).await.unwrap();
    let ids = |v: &[crate::Doc]| -> Vec<String> {
        v.iter()
            .map(|h| h["_id"].as_str().unwrap().to_string())
            .collect()
    };
    let before = ids(&r.before);
    let after = ids(&r.after);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0].ends_with("~4"),
        "the record a second earlier: {before:?}"
    );
    assert_eq!(after.len(), 3, "{after:?}");
}

#[tokio::test]
async fn a_replica_still_catching_up_is_asked_after_its_caught_up_peers() {
    // Listed first, up, but on a new disk: it would answer with none of the group's records.
    let (new, new_url) = fake("g0", &[]).await;
    new.lock().unwrap().catching_up = true;
    let (_old, old_url) = fake("g0", &[(1_000, 1), (2_000, 2), (3_000, 3)]).await;
    let c = cluster(&[&new_url, &old_url], Duration::from_secs(60)).await;
    let r = c.search(&page(10, None)).await.unwrap();
    assert_eq!(
        (r.total, r.hits.len()),
        (3, 3),
        "the empty new replica answered"
    );
}
