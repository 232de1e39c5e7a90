//! Context: the records just before and after one record, from the same service and host,
//! the same host, or the same request, with the anchor marked and kept in view.

use askama::Template;
use serde::Deserialize;

use crate::client::{Client, ContextAnswer, Served};
use crate::error::Result;
use crate::highlight::Terms;
use crate::pages::record::{on_record_replica, RecordRef};
use crate::pages::Chrome;
use crate::record::{record_query, Row, LIST_MESSAGE_BYTES};
use crate::url::{enc, Tz};

/// How many more records "earlier" and "later" add.
pub const STEP: usize = 20;
pub const MAX_NEIGHBOURS: usize = 2000;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Same host and service (the indexer's default).
    #[default]
    Service,
    Host,
    Request,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Service => "service",
            Scope::Host => "host",
            Scope::Request => "request",
        }
    }
}

fn default_n() -> usize {
    10
}

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
    let c: Served<ContextAnswer> = on_record_replica(client, id, &rref, |id| {
        format!(
            "/api/v1/context/{}?before={before}&after={after}&scope={}&max_message_bytes={LIST_MESSAGE_BYTES}",
            enc(id),
            p.scope.as_str()
        )
    })
    .await?;
    let terms = Terms::default();
    let anchor = &c.value.anchor;
    let aid = anchor
        .get("_id")
        .and_then(|v| v.as_str())
        .unwrap_or(id)
        .to_string();
    // Links go to the replica that answered, under its id for the anchor.
    let base = format!(
        "/context/{}?{}",
        enc(&aid),
        record_query(anchor, c.replica, p.tz)
    );
    let link = |scope: Scope, b: usize, a: usize| {
        format!(
            "{base}&scope={}&before={b}&after={a}#anchor",
            scope.as_str()
        )
    };
    let mut rows: Vec<Row> = Vec::new();
    for h in &c.value.before {
        rows.push(Row::new(h, c.replica, &terms, p.tz));
    }
    let mut a = Row::new(anchor, c.replica, &terms, p.tz);
    a.anchor = true;
    rows.push(a);
    for h in &c.value.after {
        rows.push(Row::new(h, c.replica, &terms, p.tz));
    }
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
    chrome.api_url = Some(c.url.clone());
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
        rows,
        scope: p.scope,
    })
}
