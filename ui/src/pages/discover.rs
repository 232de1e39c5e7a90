//! Discover: the query bar and time range, the histogram, the hits and the field sidebar,
//! from one histogram, one search and a terms request per sidebar field, made at the same
//! time.

use std::sync::LazyLock;

use askama::Template;
use sawmill_record::api::{
    HistogramParams, HistogramResponse, SearchParams, TermsParams, TermsResponse,
};
use sawmill_record::Severity;

use crate::client::{Client, Search, Served};
use crate::error::{Error, Result};
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::row::{cut, Row, LIST_MESSAGE_BYTES};
use crate::svg::{self, Histogram};
use crate::url::{self, enc, View, QUICK_RANGES};

/// Hits per page, as Kibana's default.
pub const PAGE: usize = 100;
/// The fields of the sidebar, always shown.
pub const FACETS: [&str; 5] = ["service", "host", "severity", "container", "stream"];
/// The task metadata the shipper records (the README's "Task metadata"), shown in the
/// sidebar below [`FACETS`] when the matches hold any: a Kubernetes user sees namespaces and
/// pods, a Swarm user services, and a scheduled job's runs show their exit codes.
pub const TASK_FACETS: [&str; 7] = [
    "fields.k8s_namespace",
    "fields.k8s_pod",
    "fields.swarm_service",
    "fields.compose_service",
    "fields.marathon_app_id",
    "fields.nomad_job",
    "fields.exit_code",
];
pub const FACET_SIZE: usize = 5;
pub const BUCKETS: usize = 60;

/// Error severities, for the histogram's red part and the "latest failure" link:
/// `(severity:err OR severity:crit OR severity:alert OR severity:emerg)`, least severe
/// first as users write it.
pub static ERRORS: LazyLock<String> = LazyLock::new(|| {
    let terms: Vec<String> = Severity::ALL
        .iter()
        .rev()
        .filter(|s| s.is_error())
        .map(|s| format!("severity:{s}"))
        .collect();
    format!("({})", terms.join(" OR "))
});

#[derive(Clone, Debug)]
pub struct Quick {
    pub label: &'static str,
    pub title: &'static str,
    pub href: String,
    pub active: bool,
}

#[derive(Clone, Debug)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
    /// Share of the hits, in percent, for the bar behind the value.
    pub pct: u64,
    pub for_href: Option<String>,
    pub out_href: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Facet {
    pub field: &'static str,
    pub values: Vec<FacetValue>,
    pub other: u64,
    pub missing: u64,
}

/// The newest error of the current result set, one click from its request view.
#[derive(Clone, Debug)]
pub struct LatestFailure {
    pub total: u64,
    pub href: String,
    pub label: String,
    pub list_href: String,
}

#[derive(Template)]
#[template(path = "discover.html")]
pub struct DiscoverPage {
    pub chrome: Chrome,
    pub view: View,
    pub quick: Vec<Quick>,
    /// The indexer's message when the query or the range does not parse.
    pub error: Option<String>,
    pub total: u64,
    pub took_ms: u64,
    pub histogram: Option<Histogram>,
    pub failure: Option<LatestFailure>,
    pub rows: Vec<Row>,
    pub more: Option<More>,
    pub facets: Vec<Facet>,
    pub export_ndjson: String,
    pub export_csv: String,
    pub export_limit: usize,
    pub tail_href: String,
}

/// "Load more": the next page as a link (without script) and as a rows fragment.
#[derive(Clone, Debug)]
pub struct More {
    pub href: String,
    pub rows_href: String,
}

/// Only the rows and the next "load more", for the script to append.
#[derive(Template)]
#[template(path = "rows.html")]
pub struct RowsFragment {
    pub rows: Vec<Row>,
    pub more: Option<More>,
}

fn more(view: &View, cursor: Option<&str>) -> Option<More> {
    let c = cursor?;
    Some(More {
        href: view.discover(|v| v.cursor = Some(c.to_string())),
        rows_href: format!("/rows?{}&cursor={}", view.query_string(), enc(c)),
    })
}

/// The search API's parameters for one of the view's pages of hits.
fn search_params(view: &View) -> SearchParams {
    SearchParams {
        limit: PAGE,
        cursor: view.cursor.clone(),
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
        ..view.search()
    }
}

fn rows(s: &Served<Search>, view: &View) -> Vec<Row> {
    crate::row::rows(
        &s.value.hits,
        s.replica,
        &Terms::from_query(&view.q),
        view.tz,
    )
}

/// One page of hits after the view's cursor.
pub async fn rows_fragment(client: &Client, view: &View) -> Result<RowsFragment> {
    let s = client.search(&search_params(view), None).await?;
    Ok(RowsFragment {
        rows: rows(&s, view),
        more: more(view, s.value.cursor.as_deref()),
    })
}

fn facet(t: TermsResponse, field: &'static str, total: u64, view: &View) -> Facet {
    let values = t
        .values
        .into_iter()
        .map(|v| {
            // A value too long for a URL is shown but offers no filter.
            let linkable = v.value.len() <= 1024;
            FacetValue {
                for_href: linkable
                    .then(|| view.discover(|w| w.q = url::filter_for(&view.q, field, &v.value))),
                out_href: linkable
                    .then(|| view.discover(|w| w.q = url::filter_out(&view.q, field, &v.value))),
                pct: v
                    .count
                    .saturating_mul(100)
                    .checked_div(total)
                    .unwrap_or(0)
                    .min(100),
                count: v.count,
                value: cut(&v.value, 80).0,
            }
        })
        .collect();
    Facet {
        field,
        values,
        other: t.other,
        missing: t.missing,
    }
}

/// The answers of the API calls of one Discover page.
struct Answers {
    search: Result<Served<Search>>,
    hist: Result<Served<HistogramResponse>>,
    err_hist: Result<Served<HistogramResponse>>,
    err_search: Result<Served<Search>>,
    /// One per field of [`FACETS`], then of [`TASK_FACETS`].
    facets: Vec<Result<Served<TermsResponse>>>,
}

/// Every sidebar field, the always-shown first.
fn sidebar_fields() -> impl Iterator<Item = &'static str> {
    FACETS.into_iter().chain(TASK_FACETS)
}

/// Asks for the hits, the histogram, the errors' histogram and latest error (`err_q`), and
/// the sidebar's facets, all at once: the page costs the slowest request, not their sum.
async fn ask(client: &Client, view: &View, err_q: &str) -> Answers {
    let search = search_params(view);
    let (start, end) = view.bounds();
    let hist = HistogramParams {
        q: view.q.clone(),
        start: start.clone(),
        end: end.clone(),
        buckets: BUCKETS,
    };
    let err_hist = HistogramParams {
        q: err_q.to_string(),
        ..hist.clone()
    };
    let err_search = SearchParams {
        q: err_q.to_string(),
        start: start.clone(),
        end: end.clone(),
        limit: 1,
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
        ..SearchParams::default()
    };
    let terms: Vec<TermsParams> = sidebar_fields()
        .map(|field| TermsParams {
            field: field.to_string(),
            q: view.q.clone(),
            start: start.clone(),
            end: end.clone(),
            size: FACET_SIZE,
        })
        .collect();
    let (search, hist, err_hist, err_search, facets) = tokio::join!(
        client.search(&search, None),
        client.histogram(&hist),
        client.histogram(&err_hist),
        client.search(&err_search, None),
        futures_util::future::join_all(terms.iter().map(|t| client.terms(t))),
    );
    Answers {
        search,
        hist,
        err_hist,
        err_search,
        facets,
    }
}

fn quick_ranges(view: &View) -> Vec<Quick> {
    QUICK_RANGES
        .iter()
        .map(|(span, title)| {
            let start = format!("now-{span}");
            Quick {
                label: span,
                title,
                active: view.start == start && view.end == "now",
                href: view.discover(|v| {
                    v.start = start.clone();
                    v.end = "now".into();
                }),
            }
        })
        .collect()
}

/// The newest error of the result set, from the errors' search, when it has one.
fn latest_failure(es: &Served<Search>, err_q: &str, view: &View) -> Option<LatestFailure> {
    let h = es.value.hits.first()?.hit()?;
    let row = Row::new(h, es.replica, &Terms::default(), view.tz);
    let first_line = row
        .message
        .first()
        .map(|s| s.text.lines().next().unwrap_or(""))
        .unwrap_or("");
    let label = cut(first_line, 120).0;
    Some(LatestFailure {
        total: es.value.total,
        href: row.trace_href.clone().unwrap_or(row.context_href.clone()),
        label: format!("{} {}: {label}", row.time.text, row.service),
        list_href: view.discover(|v| v.q = err_q.to_string()),
    })
}

/// Builds Discover. A query the indexer refuses comes back as a page with the message
/// inline (and the query kept); no replica answering is an error.
pub async fn page(client: &Client, view: View, mut chrome: Chrome) -> Result<DiscoverPage> {
    let err_q = url::and(&view.q, &ERRORS);
    let answers = ask(client, &view, &err_q).await;
    let mut page = DiscoverPage {
        export_ndjson: format!("/export?{}&format=ndjson", view.query_string()),
        export_csv: format!("/export?{}&format=csv", view.query_string()),
        export_limit: crate::pages::export::DEFAULT_LIMIT,
        tail_href: format!("/tail?q={}&tz={}", enc(&view.q), view.tz.as_str()),
        quick: quick_ranges(&view),
        error: None,
        total: 0,
        took_ms: 0,
        histogram: None,
        failure: None,
        rows: Vec::new(),
        more: None,
        facets: Vec::new(),
        chrome: Chrome::default(),
        view,
    };
    let search = match answers.search {
        Ok(s) => s,
        Err(Error::Indexer { message, .. }) => {
            page.error = Some(message);
            chrome.banner = crate::pages::banner(client);
            page.chrome = chrome;
            return Ok(page);
        }
        Err(e) => return Err(e),
    };
    let view = &page.view;
    chrome.answered(&search.url, search.value.partial.as_ref());
    page.total = search.value.total;
    page.took_ms = search.value.took_ms;
    page.rows = rows(&search, view);
    chrome.count_unreadable(&page.rows);
    page.more = more(view, search.value.cursor.as_deref());
    if let Ok(h) = &answers.hist {
        let errors = answers.err_hist.as_ref().ok().map(|e| &e.value);
        page.histogram = Some(svg::histogram(&h.value, errors, view));
    }
    if let Ok(es) = &answers.err_search {
        page.failure = latest_failure(es, &err_q, view);
    }
    let total = page.total;
    page.facets = answers
        .facets
        .into_iter()
        .zip(sidebar_fields())
        .filter_map(|(t, f)| t.ok().map(|t| facet(t.value, f, total, view)))
        // Task metadata only where the matches carry it: a Swarm user has no pods.
        .filter(|f| FACETS.contains(&f.field) || !f.values.is_empty())
        .collect();
    chrome.banner = crate::pages::banner(client);
    page.chrome = chrome;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ReadHit;

    #[test]
    fn the_error_query_names_every_error_severity() {
        assert_eq!(
            *ERRORS,
            "(severity:err OR severity:crit OR severity:alert OR severity:emerg)"
        );
    }

    #[test]
    fn a_placeholder_row_offers_no_links_and_shows_its_json_as_text() {
        let h: ReadHit =
            serde_json::from_str(r#"{"_id":"9","message":{"html":"<b>x</b>"}}"#).unwrap();
        let rows = crate::row::rows([&h], 0, &Terms::default(), Default::default());
        let html = RowsFragment { rows, more: None }.render().unwrap();
        assert!(html.contains("record could not be read: "), "{html}");
        assert!(html.contains("&#60;b&#62;x&#60;/b&#62;"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("href="), "{html}");
    }
}
