//! Discover: the query bar and time range, the histogram, the hits and the field sidebar,
//! from one histogram, one search and five terms requests made at the same time.

use askama::Template;

use crate::client::{Client, HistogramAnswer, SearchAnswer, Served, TermsAnswer};
use crate::error::{Error, Result};
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::record::{cut, Row, LIST_MESSAGE_BYTES};
use crate::svg::{self, Histogram};
use crate::url::{self, enc, View, QUICK_RANGES};

/// Hits per page, as Kibana's default.
pub const PAGE: usize = 100;
/// The fields of the sidebar.
pub const FACETS: [&str; 5] = ["service", "host", "severity", "container", "stream"];
pub const FACET_SIZE: usize = 5;
pub const BUCKETS: usize = 60;
/// Error severities, for the histogram's red part and the "latest failure" link.
pub const ERRORS: &str = "(severity:err OR severity:crit OR severity:alert OR severity:emerg)";

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

fn search_path(view: &View) -> String {
    let mut pq = format!(
        "/api/v1/search?{}&limit={PAGE}&max_message_bytes={LIST_MESSAGE_BYTES}",
        view.api_range()
    );
    if let Some(c) = &view.cursor {
        pq.push_str(&format!("&cursor={}", enc(c)));
    }
    pq
}

fn rows(s: &Served<SearchAnswer>, view: &View) -> Vec<Row> {
    let terms = Terms::from_query(&view.q);
    s.value
        .hits
        .iter()
        .map(|h| Row::new(h, s.replica, &terms, view.tz))
        .collect()
}

/// One page of hits after the view's cursor.
pub async fn rows_fragment(client: &Client, view: &View) -> Result<RowsFragment> {
    let s: Served<SearchAnswer> = client.get(&search_path(view), None).await?;
    Ok(RowsFragment {
        rows: rows(&s, view),
        more: more(view, s.value.cursor.as_deref()),
    })
}

fn facet(t: TermsAnswer, field: &'static str, total: u64, view: &View) -> Facet {
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

/// Builds Discover. A query the indexer refuses comes back as a page with the message
/// inline (and the query kept); no replica answering is an error.
pub async fn page(client: &Client, view: View, mut chrome: Chrome) -> Result<DiscoverPage> {
    let range = view.api_range();
    let search_pq = search_path(&view);
    let hist_pq = format!("/api/v1/histogram?{range}&buckets={BUCKETS}");
    let err_q = url::and(&view.q, ERRORS);
    let err_range = format!(
        "q={}&start={}&end={}",
        enc(&err_q),
        enc(&view.start),
        enc(&view.end)
    );
    let err_hist_pq = format!("/api/v1/histogram?{err_range}&buckets={BUCKETS}");
    let err_search_pq =
        format!("/api/v1/search?{err_range}&limit=1&max_message_bytes={LIST_MESSAGE_BYTES}");
    let terms_pq: Vec<String> = FACETS
        .iter()
        .map(|f| format!("/api/v1/terms?field={f}&{range}&size={FACET_SIZE}"))
        .collect();
    // All at once: the page costs the slowest request, not their sum.
    let (search, hist, err_hist, err_search, t0, t1, t2, t3, t4) = tokio::join!(
        client.get::<SearchAnswer>(&search_pq, None),
        client.get::<HistogramAnswer>(&hist_pq, None),
        client.get::<HistogramAnswer>(&err_hist_pq, None),
        client.get::<SearchAnswer>(&err_search_pq, None),
        client.get::<TermsAnswer>(&terms_pq[0], None),
        client.get::<TermsAnswer>(&terms_pq[1], None),
        client.get::<TermsAnswer>(&terms_pq[2], None),
        client.get::<TermsAnswer>(&terms_pq[3], None),
        client.get::<TermsAnswer>(&terms_pq[4], None),
    );
    let quick = QUICK_RANGES
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
        .collect();
    let mut page = DiscoverPage {
        export_ndjson: format!("/export?{}&format=ndjson", view.query_string()),
        export_csv: format!("/export?{}&format=csv", view.query_string()),
        export_limit: crate::pages::export::DEFAULT_LIMIT,
        tail_href: format!("/tail?q={}&tz={}", enc(&view.q), view.tz.as_str()),
        quick,
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
    let search = match search {
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
    chrome.api_url = Some(search.url.clone());
    page.total = search.value.total;
    page.took_ms = search.value.took_ms;
    page.rows = rows(&search, view);
    page.more = more(view, search.value.cursor.as_deref());
    if let Ok(h) = &hist {
        page.histogram = Some(svg::histogram(
            &h.value,
            err_hist.as_ref().ok().map(|e| &e.value),
            view,
        ));
    }
    if let Ok(es) = err_search {
        if let Some(h) = es.value.hits.first() {
            let row = Row::new(h, es.replica, &Terms::default(), view.tz);
            let label = cut(
                row.message
                    .first()
                    .map(|s| s.text.lines().next().unwrap_or(""))
                    .unwrap_or(""),
                120,
            )
            .0;
            page.failure = Some(LatestFailure {
                total: es.value.total,
                href: row.trace_href.clone().unwrap_or(row.context_href.clone()),
                label: format!("{} {}: {label}", row.time.text, row.service),
                list_href: view.discover(|v| v.q = err_q.clone()),
            });
        }
    }
    let total = page.total;
    page.facets = [t0, t1, t2, t3, t4]
        .into_iter()
        .zip(FACETS)
        .filter_map(|(t, f)| t.ok().map(|t| facet(t.value, f, total, view)))
        .collect();
    chrome.banner = crate::pages::banner(client);
    page.chrome = chrome;
    Ok(page)
}
