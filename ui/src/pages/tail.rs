//! Live tail: the last records matching a query, then new ones as the indexer makes them
//! searchable, relayed from its event stream as rendered rows.

use std::convert::Infallible;

/// How long the upstream may stay silent before the relay gives up on it.
const UPSTREAM_SILENCE: std::time::Duration = std::time::Duration::from_secs(45);

use askama::Template;
use axum::response::sse::Event;
use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use sawmill_record::api::{self, SearchParams};
use serde::Deserialize;

use crate::client::{Client, ReadHit};
use crate::error::{Error, Result};
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::row::{rows, Row, LIST_MESSAGE_BYTES};
use crate::url::{enc, Tz};

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
            chrome.api_url = Some(client.tail_url(s.replica, &upstream_params(&p.q)));
            chrome.count_unreadable(&page.rows);
        }
        Err(Error::Indexer { message, .. }) => page.error = Some(message),
        Err(e) => return Err(e),
    }
    chrome.banner = crate::pages::banner(client);
    page.chrome = chrome;
    Ok(page)
}

/// One event of the indexer's stream.
#[derive(Debug, PartialEq, Eq)]
struct Upstream {
    event: String,
    data: String,
}

/// Splits off the complete events at the front of `buf` (`\n\n`-terminated blocks).
fn take_events(buf: &mut BytesMut) -> Vec<Upstream> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let block = buf.split_to(end + 2);
        let text = String::from_utf8_lossy(&block);
        let mut ev = Upstream {
            event: "message".into(),
            data: String::new(),
        };
        let mut has_data = false;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if has_data {
                    ev.data.push('\n');
                }
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                has_data = true;
            }
        }
        if has_data {
            out.push(ev);
        }
    }
    out
}

fn relay(ev: Upstream, replica: usize, terms: &Terms, tz: Tz) -> Option<Event> {
    match ev.event.as_str() {
        "message" => {
            let hit = serde_json::from_str::<ReadHit>(&ev.data).ok()?;
            let row = Row::of(&hit, replica, terms, tz);
            let html = RowFragment { row: &row }.render().ok()?;
            Some(Event::default().event("row").data(html))
        }
        "skipped" => Some(Event::default().event("skipped").data(ev.data)),
        _ => Some(Event::default().event("problem").data(ev.data)),
    }
}

/// The browser's event stream: `row` events with rendered rows; `dropped` when the indexer's
/// stream ends, after which the browser reconnects and a healthy replica is chosen again.
pub async fn stream(
    client: &Client,
    p: TailParams,
) -> Result<impl Stream<Item = std::result::Result<Event, Infallible>> + use<>> {
    let upstream = client.tail(&upstream_params(&p.q)).await?;
    let replica = upstream.replica;
    let url = upstream.url.clone();
    let terms = Terms::from_query(&p.q);
    let tz = p.tz;
    let hello = Event::default().event("hello").data(url.clone());
    let body = upstream.value.bytes_stream();
    struct St<S> {
        body: S,
        buf: BytesMut,
        pending: std::collections::VecDeque<Event>,
        done: bool,
        closing: tokio::sync::watch::Receiver<bool>,
    }
    let st = St {
        body: Box::pin(body),
        buf: BytesMut::new(),
        pending: std::collections::VecDeque::from([hello]),
        done: false,
        closing: client.closing(),
    };
    Ok(futures_util::stream::unfold(st, move |mut st| {
        let terms = terms.clone();
        let url = url.clone();
        async move {
            loop {
                if let Some(ev) = st.pending.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.done || *st.closing.borrow() {
                    return None;
                }
                // The indexer sends a keep-alive every 15 s; three missed mean the replica
                // hangs or its host is gone, and the browser must be told to reconnect.
                let next = tokio::select! {
                    n = tokio::time::timeout(UPSTREAM_SILENCE, st.body.next()) => n,
                    _ = st.closing.changed() => return None,
                };
                let why = match next {
                    Ok(Some(Ok(chunk))) => {
                        st.buf.extend_from_slice(&chunk);
                        for ev in take_events(&mut st.buf) {
                            if let Some(e) = relay(ev, replica, &terms, tz) {
                                st.pending.push_back(e);
                            }
                        }
                        continue;
                    }
                    Err(_) => "the indexer stopped answering".to_string(),
                    Ok(Some(Err(e))) => e.to_string(),
                    Ok(None) => "the indexer closed the stream".to_string(),
                };
                tracing::info!(%url, reason = %why, "Live tail upstream ended.");
                st.done = true;
                st.pending
                    .push_back(Event::default().event("dropped").data(why));
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_chunks() {
        let mut buf = BytesMut::from(
            &b": connected\n\ndata: {\"a\":1}\n\nevent: skipped\ndata: 5\n\ndata: {\"b\""[..],
        );
        let evs = take_events(&mut buf);
        assert_eq!(
            evs,
            vec![
                Upstream {
                    event: "message".into(),
                    data: "{\"a\":1}".into()
                },
                Upstream {
                    event: "skipped".into(),
                    data: "5".into()
                },
            ]
        );
        buf.extend_from_slice(b":2}\n\n");
        assert_eq!(
            take_events(&mut buf),
            vec![Upstream {
                event: "message".into(),
                data: "{\"b\":2}".into()
            }]
        );
    }
}
