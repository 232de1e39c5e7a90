//! Finding one record again, on the replica that issued its id or, after a failover, on
//! another one by its time and sender key; and the page that shows a record uncut.

use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Client, ContextAnswer, Hit, SearchAnswer, Served};
use crate::error::{Error, Result};
use crate::pages::Chrome;
use crate::record::{severity_class, TimeText, LIST_MESSAGE_BYTES};
use crate::url::{enc, term, Tz};

/// Where a record link came from: the replica whose id it is, and what identifies the
/// record on every replica (its `ts`, and `_src`/`_seq` when a shipper sent it).
#[derive(Clone, Debug, Default)]
pub struct RecordRef {
    pub r: Option<usize>,
    pub ts: Option<String>,
    pub src: Option<String>,
    pub seq: Option<u64>,
}

/// Asks for `path(id)` where that id is valid: the issuing replica while it answers,
/// otherwise whichever replica holds the same record under its own id.
pub async fn on_record_replica<T: serde::de::DeserializeOwned>(
    client: &Client,
    id: &str,
    rref: &RecordRef,
    path: impl Fn(&str) -> String,
) -> Result<Served<T>> {
    let Some(r) = rref.r else {
        // A hand-made link: the id means whatever the first replica to answer says.
        return client.get(&path(id), None).await;
    };
    match client.get_from(r, &path(id)).await {
        Err(Error::Unavailable { mut attempts }) => match locate(client, rref).await? {
            Some((replica, other_id)) => client.get_from(replica, &path(&other_id)).await,
            None => {
                attempts.push("the record could not be found on another replica".into());
                Err(Error::Unavailable { attempts })
            }
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
    let pq = format!(
        "/api/v1/search?q={}&start={}&end={}&limit=100&max_message_bytes={LIST_MESSAGE_BYTES}",
        enc(&q),
        enc(ts),
        enc(ts)
    );
    let s: Served<SearchAnswer> = client.get(&pq, None).await?;
    let hits = &s.value.hits;
    let found = match rref.seq {
        Some(seq) => hits
            .iter()
            .find(|h| h.get("_seq").and_then(Value::as_u64) == Some(seq)),
        // Without a sender key, only an unambiguous time identifies the record.
        None if hits.len() == 1 => hits.first(),
        None => None,
    };
    Ok(found
        .and_then(|h| h.get("_id").and_then(Value::as_str))
        .map(|id| (s.replica, id.to_string())))
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

pub async fn page(
    client: &Client,
    id: &str,
    p: RecordParams,
    mut chrome: Chrome,
) -> Result<RecordPage> {
    let ctx: Served<ContextAnswer> = on_record_replica(client, id, &p.rref(), |id| {
        format!("/api/v1/context/{}?before=0&after=0", enc(id))
    })
    .await?;
    let h: &Hit = &ctx.value.anchor;
    let row = crate::record::Row::new(h, ctx.replica, &Default::default(), p.tz);
    let mut fields = Vec::new();
    for (k, v) in h {
        let mut add = |name: String, v: &Value| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let link = match name.as_str() {
                "trace_id" | "request_id" => Some(crate::record::trace_href(&value, p.tz)),
                _ => crate::record::safe_link(&value),
            };
            fields.push(WholeField { name, value, link });
        };
        match (k.as_str(), v) {
            ("message", _) => {}
            ("fields", Value::Object(m)) => {
                for (fk, fv) in m {
                    add(format!("fields.{fk}"), fv);
                }
            }
            _ => add(k.clone(), v),
        }
    }
    chrome.api_url = Some(ctx.url.clone());
    chrome.banner = crate::pages::banner(client);
    Ok(RecordPage {
        chrome,
        time: row.time.clone(),
        sev_class: severity_class(h.get("severity").and_then(Value::as_str).unwrap_or("")),
        message: h
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        fields,
        raw: serde_json::to_string_pretty(h).unwrap_or_default(),
        context_href: row.context_href,
        trace_href: row.trace_href,
    })
}
