//! The request view: every record of one request across services, oldest first, as a
//! swimlane timeline above the list, with each record's offset from the first.

use askama::Template;

use crate::client::{Client, Served, TraceAnswer};
use crate::error::Result;
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::record::{offset_text, Row, LIST_MESSAGE_BYTES};
use crate::svg::{self, Swimlanes};
use crate::url::{enc, Tz};

/// Records shown of one request; a request with more says so.
pub const LIMIT: usize = 5000;

#[derive(Template)]
#[template(path = "request.html")]
pub struct RequestPage {
    pub chrome: Chrome,
    pub id: String,
    pub total: u64,
    pub errors: usize,
    pub rows: Vec<Row>,
    pub lanes: Swimlanes,
    pub discover_href: String,
}

pub async fn page(client: &Client, id: &str, tz: Tz, mut chrome: Chrome) -> Result<RequestPage> {
    let pq = format!(
        "/api/v1/trace/{}?limit={LIMIT}&max_message_bytes={LIST_MESSAGE_BYTES}",
        enc(id)
    );
    let t: Served<TraceAnswer> = client.get(&pq, None).await?;
    let terms = Terms::default();
    let mut rows: Vec<Row> = t
        .value
        .hits
        .iter()
        .map(|h| Row::new(h, t.replica, &terms, tz))
        .collect();
    let first = rows.iter().filter_map(|r| r.time.micros).min().unwrap_or(0);
    for r in &mut rows {
        r.offset = offset_text(r.time.micros.unwrap_or(first) - first);
    }
    let quoted = crate::url::quote(id);
    let q = format!("trace_id:{quoted} OR request_id:{quoted}");
    chrome.api_url = Some(t.url.clone());
    chrome.banner = crate::pages::banner(client);
    Ok(RequestPage {
        chrome,
        id: id.to_string(),
        total: t.value.total,
        errors: rows.iter().filter(|r| r.error).count(),
        lanes: svg::swimlanes(&rows),
        rows,
        discover_href: format!("/?q={}&start=&end=&tz={}", enc(&q), tz.as_str()),
    })
}
