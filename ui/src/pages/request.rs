//! The request view: every record of one request across services, oldest first, as a
//! swimlane timeline above the list, with each record's offset from the first.

use askama::Template;
use sawmill_record::api::TraceParams;

use crate::client::Client;
use crate::error::Result;
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::row::{offset_text, rows, Row, LIST_MESSAGE_BYTES};
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
    let p = TraceParams {
        limit: LIMIT,
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
    };
    let t = client.trace(id, &p).await?;
    let mut rows: Vec<Row> = rows(&t.value.hits, t.replica, &Terms::default(), tz);
    let first = rows.iter().filter_map(|r| r.time.micros).min().unwrap_or(0);
    for r in rows.iter_mut().filter(|r| !r.unreadable) {
        r.offset = offset_text(r.time.micros.unwrap_or(first) - first);
    }
    let quoted = crate::url::quote(id);
    let q = format!("trace_id:{quoted} OR request_id:{quoted}");
    chrome.answered(&t.url, t.value.partial.as_ref());
    chrome.count_unreadable(&rows);
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
