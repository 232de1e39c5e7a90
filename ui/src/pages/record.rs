//! Finding one record again, on the replica that issued its id or, after a failover, on
//! another one by its time and sender key; and the page that shows a record uncut.

use askama::Template;
use sawmill_record::api::{ContextParams, SearchParams};
use serde::Deserialize;

use crate::client::{Client, Context, ReadHit, Served};
use crate::error::{Error, Result};
use crate::highlight::Terms;
use crate::pages::Chrome;
use crate::row::{
    field_list, json_of, safe_link, severity_class, text_of, trace_href, Row, TimeText,
    LIST_MESSAGE_BYTES,
};
use crate::url::{term, Tz};

/// Where a record link came from: the replica whose id it is, and what identifies the
/// record on every replica (its `ts`, and `_src`/`_seq` when a shipper sent it).
#[derive(Clone, Debug, Default)]
pub struct RecordRef {
    pub r: Option<usize>,
    pub ts: Option<String>,
    pub src: Option<String>,
    pub seq: Option<u64>,
}

/// The context of record `id` where that id is valid: on the issuing replica while it
/// answers, otherwise on whichever replica holds the same record under its own id.
pub async fn context_of(
    client: &Client,
    id: &str,
    rref: &RecordRef,
    p: &ContextParams,
) -> Result<Served<Context>> {
    let Some(r) = rref.r else {
        // A hand-made link: the id means whatever the first replica to answer says.
        return client.context(None, id, p).await;
    };
    match client.context(Some(r), id, p).await {
        Err(Error::Unavailable { mut attempts }) => match locate(client, rref).await? {
            Some((replica, other_id)) => client.context(Some(replica), &other_id, p).await,
            None => {
                attempts.push("the record could not be found on another replica".into());
                Err(Error::Unavailable { attempts })
            }
        },
        // A link made before ids were cluster-wide (`/context/123?r=1&ts=…&src=…&seq=…`):
        // its numeric id is refused now, but the time and sender key it carries still
        // find the record.
        Err(refused @ Error::BadRequest(_)) => match locate(client, rref).await? {
            Some((replica, other_id)) => client.context(Some(replica), &other_id, p).await,
            None => Err(refused),
        },
        other => other,
    }
}

/// Finds the record on any replica by its exact time and sender key: `(replica, _id)`.
async fn locate(client: &Client, rref: &RecordRef) -> Result<Option<(usize, String)>> {
    let Some(ts) = &rref.ts else { return Ok(None) };
    let q = match &rref.src {
        Some(src) => term("_src", src),
        None => "*".to_string(),
    };
    let p = SearchParams {
        q,
        start: Some(ts.clone()),
        end: Some(ts.clone()),
        limit: 100,
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
        ..SearchParams::default()
    };
    let s = client.search(&p, None).await?;
    let hits = &s.value.hits;
    let found = match rref.seq {
        Some(seq) => hits
            .iter()
            .filter_map(ReadHit::hit)
            .find(|h| h.record.key.as_ref().map(|k| k.seq) == Some(seq)),
        // Without a sender key, only an unambiguous time identifies the record.
        None if hits.len() == 1 => hits[0].hit(),
        None => None,
    };
    Ok(found.map(|h| (s.replica, h.id.clone())))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordParams {
    pub r: Option<usize>,
    pub ts: Option<String>,
    pub src: Option<String>,
    pub seq: Option<u64>,
    #[serde(default)]
    pub tz: Tz,
}

impl RecordParams {
    pub fn rref(&self) -> RecordRef {
        RecordRef {
            r: self.r,
            ts: self.ts.clone(),
            src: self.src.clone(),
            seq: self.seq,
        }
    }
}

/// A field shown whole.
#[derive(Clone, Debug)]
pub struct WholeField {
    pub name: String,
    pub value: String,
    pub link: Option<String>,
}

#[derive(Template)]
#[template(path = "record.html")]
pub struct RecordPage {
    pub chrome: Chrome,
    pub time: TimeText,
    pub sev_class: &'static str,
    pub message: String,
    pub fields: Vec<WholeField>,
    pub raw: String,
    pub context_href: String,
    pub trace_href: Option<String>,
}

/// The record's fields, whole, each linked as in a row.
fn whole_fields(json: &serde_json::Map<String, serde_json::Value>, tz: Tz) -> Vec<WholeField> {
    field_list(json)
        .into_iter()
        .map(|(name, v)| {
            let value = text_of(v);
            let link = match name.as_str() {
                "trace_id" | "request_id" => Some(trace_href(&value, tz)),
                _ => safe_link(&value),
            };
            WholeField { name, value, link }
        })
        .collect()
}

pub async fn page(
    client: &Client,
    id: &str,
    p: RecordParams,
    mut chrome: Chrome,
) -> Result<RecordPage> {
    let only = ContextParams {
        before: 0,
        after: 0,
        scope: Default::default(),
        max_message_bytes: None,
    };
    let ctx = context_of(client, id, &p.rref(), &only).await?;
    let row = Row::of(&ctx.value.anchor, ctx.replica, &Terms::default(), p.tz);
    chrome.answered(&ctx.url, ctx.value.partial.as_ref());
    chrome.count_unreadable(std::slice::from_ref(&row));
    chrome.banner = crate::pages::banner(client);
    let (message, fields, raw) = match &ctx.value.anchor {
        ReadHit::Hit(h) => {
            let json = json_of(h);
            let raw = serde_json::to_string_pretty(&json).unwrap_or_default();
            (h.record.message.to_string(), whole_fields(&json, p.tz), raw)
        }
        ReadHit::Unreadable(u) => {
            let why = row.message.iter().map(|s| s.text.as_str()).collect();
            (why, Vec::new(), u.raw.get().to_string())
        }
    };
    Ok(RecordPage {
        chrome,
        time: row.time.clone(),
        sev_class: severity_class(ctx.value.anchor.hit().and_then(|h| h.record.severity)),
        message,
        fields,
        raw,
        context_href: row.context_href,
        trace_href: row.trace_href,
    })
}
