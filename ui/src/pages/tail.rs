//! Live tail: the last records matching a query, then new ones as the indexer makes them
//! searchable, relayed from its event stream as rendered rows.

use std::convert::Infallible;

use askama::Template;
use axum::response::sse::Event;
use futures_util::Stream;
use sawmill_record::api::{self, SearchParams};
use serde::Deserialize;

use crate::client::{Client, ReadHit};
use crate::error::{Error, Result};
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::row::{rows, Row, LIST_MESSAGE_BYTES};
use crate::url::{enc, Tz};
use sawmill_query::TailEvent;

/// Records shown when the page opens.
pub const BACKLOG: usize = 100;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailParams {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub tz: Tz,
}

#[derive(Template)]
#[template(path = "tail.html")]
pub struct TailPage {
    pub chrome: Chrome,
    pub q: String,
    pub tz: Tz,
    pub error: Option<String>,
    pub rows: Vec<Row>,
    pub stream_href: String,
    pub discover_href: String,
}

/// One row, for the stream.
#[derive(Template)]
#[template(path = "row.html")]
pub struct RowFragment<'a> {
    pub row: &'a Row,
}

/// What the indexer's event stream is asked for.
fn upstream_params(q: &str) -> api::TailParams {
    api::TailParams {
        q: q.to_string(),
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
    }
}

pub async fn page(client: &Client, p: TailParams, mut chrome: Chrome) -> Result<TailPage> {
    let backlog = SearchParams {
        q: p.q.clone(),
        limit: BACKLOG,
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
        ..SearchParams::default()
    };
    let mut page = TailPage {
        stream_href: format!("/tail/stream?q={}&tz={}", enc(&p.q), p.tz.as_str()),
        discover_href: format!("/?q={}&tz={}", enc(&p.q), p.tz.as_str()),
        q: p.q.clone(),
        tz: p.tz,
        error: None,
        rows: Vec::new(),
        chrome: Chrome::default(),
    };
    match client.search(&backlog, None).await {
        Ok(s) => {
            let terms = Terms::from_query(&p.q);
            // Oldest first, so new records arrive at the bottom, as with `tail -f`.
            page.rows = rows(s.value.hits.iter().rev(), s.replica, &terms, p.tz);
            // The stream the page opens next, on the replica that gave the backlog.
            chrome.answered(
                &client.tail_url(s.replica, &upstream_params(&p.q)),
                s.value.partial.as_ref(),
            );
            chrome.count_unreadable(&page.rows);
        }
        Err(Error::Indexer { message, .. }) => page.error = Some(message),
        Err(e) => return Err(e),
    }
    chrome.banner = crate::pages::banner(client);
    page.chrome = chrome;
    Ok(page)
}

fn relay(ev: TailEvent, terms: &Terms, tz: Tz) -> Option<Event> {
    match ev {
        TailEvent::Hit(doc) => {
            let row = Row::of(&ReadHit::of_doc(doc), 0, terms, tz);
            let html = RowFragment { row: &row }.render().ok()?;
            Some(Event::default().event("row").data(html))
        }
        TailEvent::Skipped(n) => Some(Event::default().event("skipped").data(n.to_string())),
        TailEvent::Problem(why) => Some(Event::default().event("problem").data(why)),
        TailEvent::Ended(why) => Some(Event::default().event("dropped").data(why)),
    }
}

/// The browser's event stream: `row` events with rendered rows; `dropped` when the indexer's
/// stream ends, after which the browser reconnects and a healthy replica is chosen again.
pub async fn stream(
    client: &Client,
    p: TailParams,
) -> Result<impl Stream<Item = std::result::Result<Event, Infallible>> + use<>> {
    let upstream = client.tail(&upstream_params(&p.q)).await?;
    let url = upstream.url.clone();
    let terms = Terms::from_query(&p.q);
    let tz = p.tz;
    let hello = Event::default().event("hello").data(url.clone());
    struct St {
        tail: sawmill_query::Tail,
        first: Option<Event>,
        done: bool,
        closing: tokio::sync::watch::Receiver<bool>,
    }
    let st = St {
        tail: upstream.value,
        first: Some(hello),
        done: false,
        closing: client.closing(),
    };
    Ok(futures_util::stream::unfold(st, move |mut st| {
        let terms = terms.clone();
        let url = url.clone();
        async move {
            if let Some(ev) = st.first.take() {
                return Some((Ok(ev), st));
            }
            loop {
                if st.done || *st.closing.borrow() {
                    return None;
                }
                let ev = tokio::select! {
                    ev = st.tail.next() => ev,
                    _ = st.closing.changed() => return None,
                };
                let ev = ev.unwrap_or_else(|| TailEvent::Ended("the stream ended".into()));
                if let TailEvent::Ended(why) = &ev {
                    tracing::info!(%url, reason = %why, "Live tail upstream ended.");
                    st.done = true;
                }
                if let Some(e) = relay(ev, &terms, tz) {
                    return Some((Ok(e), st));
                }
            }
        }
    }))
}
