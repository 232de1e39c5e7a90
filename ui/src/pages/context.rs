//! Context: the records just before and after one record, from the same service and host,
//! the same host, or the same request, with the anchor marked and kept in view.

use askama::Template;
use sawmill_record::api::{self, Scope};
use serde::Deserialize;

use crate::client::{Client, ReadHit};
use crate::error::Result;
use crate::highlight::Terms;
use crate::pages::record::{context_of, RecordRef};
use crate::pages::Chrome;
use crate::row::{record_query, rows, Row, LIST_MESSAGE_BYTES};
use crate::url::{enc, Tz};

/// How many more records "earlier" and "later" add.
pub const STEP: usize = 20;
pub const MAX_NEIGHBOURS: usize = 2000;

fn default_n() -> usize {
    10
}

/// The page's parameters: the record (as in [`RecordRef`]), the scope and how many
/// neighbours on each side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextParams {
    pub r: Option<usize>,
    pub ts: Option<String>,
    pub src: Option<String>,
    pub seq: Option<u64>,
    #[serde(default)]
    pub tz: Tz,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default = "default_n")]
    pub before: usize,
    #[serde(default = "default_n")]
    pub after: usize,
}

#[derive(Clone, Debug)]
pub struct ScopeLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "context.html")]
pub struct ContextPage {
    pub chrome: Chrome,
    pub scopes: Vec<ScopeLink>,
    pub rows: Vec<Row>,
    pub earlier_href: String,
    pub later_href: String,
    pub before: usize,
    pub after: usize,
    /// Fewer neighbours came back than asked: the start or end of that scope's records.
    pub at_start: bool,
    pub at_end: bool,
    pub scope: Scope,
}

pub async fn page(
    client: &Client,
    id: &str,
    p: ContextParams,
    mut chrome: Chrome,
) -> Result<ContextPage> {
    let rref = RecordRef {
        r: p.r,
        ts: p.ts.clone(),
        src: p.src.clone(),
        seq: p.seq,
    };
    let (before, after) = (p.before.min(MAX_NEIGHBOURS), p.after.min(MAX_NEIGHBOURS));
    let ask = api::ContextParams {
        before,
        after,
        scope: p.scope,
        max_message_bytes: Some(LIST_MESSAGE_BYTES),
    };
    let c = context_of(client, id, &rref, &ask).await?;
    let terms = Terms::default();
    // Links go to the replica that answered, under its id for the anchor. An anchor that
    // could not be read keeps the id asked for, and loses only its time and sender key.
    let (aid, rq) = match &c.value.anchor {
        ReadHit::Hit(h) => (h.id.clone(), record_query(h, c.replica, p.tz)),
        ReadHit::Unreadable(_) => (
            id.to_string(),
            format!("r={}&tz={}", c.replica, p.tz.as_str()),
        ),
    };
    let base = format!("/context/{}?{rq}", enc(&aid));
    let link = |scope: Scope, b: usize, a: usize| {
        format!("{base}&scope={}&before={b}&after={a}#anchor", scope.name())
    };
    let mut list = rows(&c.value.before, c.replica, &terms, p.tz);
    let mut a = Row::of(&c.value.anchor, c.replica, &terms, p.tz);
    a.anchor = true;
    list.push(a);
    list.extend(rows(&c.value.after, c.replica, &terms, p.tz));
    let scopes = [
        (Scope::Service, "same service and host"),
        (Scope::Host, "same host"),
        (Scope::Request, "same request"),
    ]
    .into_iter()
    .map(|(s, label)| ScopeLink {
        label,
        href: link(s, before, after),
        active: s == p.scope,
    })
    .collect();
    chrome.answered(&c.url, c.value.partial.as_ref());
    chrome.count_unreadable(&list);
    chrome.banner = crate::pages::banner(client);
    Ok(ContextPage {
        chrome,
        scopes,
        earlier_href: link(p.scope, (before + STEP).min(MAX_NEIGHBOURS), after),
        later_href: link(p.scope, before, (after + STEP).min(MAX_NEIGHBOURS)),
        at_start: c.value.before.len() < before,
        at_end: c.value.after.len() < after,
        before,
        after,
        rows: list,
        scope: p.scope,
    })
}
