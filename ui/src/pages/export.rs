//! Export: the current result set as NDJSON or CSV, streamed page by page from the search
//! API, newest first, up to a stated limit.

use axum::body::Body;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Client, Hit, SearchAnswer, Served};
use crate::error::{Error, Result};
use crate::url::{default_end, default_start, enc};

pub const DEFAULT_LIMIT: usize = 10_000;
pub const MAX_LIMIT: usize = 100_000;
/// Records asked per search request while streaming.
const CHUNK: usize = 1000;
const CSV_COLUMNS: [&str; 9] = [
    "ts",
    "severity",
    "service",
    "host",
    "container",
    "stream",
    "trace_id",
    "request_id",
    "message",
];

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    #[serde(default)]
    pub q: String,
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_end")]
    pub end: String,
    /// Accepted so an export link can carry the page's state; times are exported as stored.
    #[serde(default, rename = "tz")]
    pub _tz: crate::url::Tz,
    pub format: Format,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

/// A streamed download: its content type, file name and body.
pub struct Export {
    pub content_type: &'static str,
    pub filename: &'static str,
    pub body: Body,
}

/// One CSV field, quoted when needed. A leading `=`, `+`, `-`, `@`, tab or CR is prefixed
/// with `'` so a spreadsheet shows the log text instead of evaluating it as a formula.
fn csv_field(out: &mut String, s: &str) {
    let guard = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if guard || s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if guard {
            out.push('\'');
        }
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_row(h: &Hit) -> String {
    let mut line = String::new();
    for c in CSV_COLUMNS {
        let v = match h.get(c) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        csv_field(&mut line, &v);
        line.push(',');
    }
    let fields = h.get("fields").map(Value::to_string).unwrap_or_default();
    csv_field(&mut line, &fields);
    line.push_str("\r\n");
    line
}

fn encode(format: Format, hits: &[Hit]) -> Bytes {
    let mut out = String::new();
    for h in hits {
        match format {
            Format::Ndjson => {
                out.push_str(&serde_json::to_string(h).unwrap_or_default());
                out.push('\n');
            }
            Format::Csv => out.push_str(&csv_row(h)),
        }
    }
    Bytes::from(out)
}

/// Starts the export: the first page is fetched before answering, so a bad query or no
/// indexer is an error page, not a broken download. Later pages stay on the replica that
/// served the first, whose cursors they continue.
pub async fn export(client: &Client, p: ExportParams) -> Result<Export> {
    if p.limit > MAX_LIMIT {
        return Err(Error::BadRequest(format!(
            "`limit` is {}; an export holds at most {MAX_LIMIT} records: narrow the time range or the query",
            p.limit
        )));
    }
    let base = format!(
        "/api/v1/search?q={}&start={}&end={}",
        enc(&p.q),
        enc(&p.start),
        enc(&p.end)
    );
    let first_n = CHUNK.min(p.limit);
    let first: Served<SearchAnswer> = client.get(&format!("{base}&limit={first_n}"), None).await?;
    let mut head = String::new();
    if p.format == Format::Csv {
        head.push_str(&CSV_COLUMNS.join(","));
        head.push_str(",fields\r\n");
    }
    let mut first_chunk = head.into_bytes();
    first_chunk.extend_from_slice(&encode(p.format, &first.value.hits));
    let sent = first.value.hits.len();
    let cursor = if sent < p.limit {
        first.value.cursor.clone()
    } else {
        None
    };
    struct State {
        client: Client,
        base: String,
        replica: usize,
        cursor: Option<String>,
        left: usize,
        format: Format,
        first: Option<Bytes>,
    }
    let state = State {
        client: client.clone(),
        base,
        replica: first.replica,
        cursor,
        left: p.limit - sent,
        format: p.format,
        first: Some(Bytes::from(first_chunk)),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(b) = st.first.take() {
            return Some((Ok::<Bytes, Error>(b), st));
        }
        let c = st.cursor.take()?;
        if st.left == 0 {
            return None;
        }
        let n = CHUNK.min(st.left);
        let pq = format!("{}&limit={n}&cursor={}", st.base, enc(&c));
        match st.client.get::<SearchAnswer>(&pq, Some(st.replica)).await {
            Ok(page) => {
                st.left -= page.value.hits.len().min(st.left);
                st.cursor = page.value.cursor.clone().filter(|_| st.left > 0);
                Some((Ok(encode(st.format, &page.value.hits)), st))
            }
            // Ends the body with an error: the client sees a broken download, never a
            // silently short file.
            Err(e) => {
                tracing::warn!(error = %e, "Export stopped.");
                Some((Err(e), st))
            }
        }
    });
    let (content_type, filename) = match p.format {
        Format::Ndjson => ("application/x-ndjson", "sawmill-export.ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "sawmill-export.csv"),
    };
    Ok(Export {
        content_type,
        filename,
        body: Body::from_stream(stream),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let h = json!({"ts": "t", "message": "=HYPERLINK(\"x\"), then\nmore", "service": "a,b", "fields": {"k": 1}});
        assert_eq!(
            csv_row(h.as_object().unwrap()),
            "t,,\"a,b\",,,,,,\"'=HYPERLINK(\"\"x\"\"), then\nmore\",\"{\"\"k\"\":1}\"\r\n"
        );
    }
}
