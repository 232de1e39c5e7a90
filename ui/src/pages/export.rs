//! Export: the current result set as NDJSON or CSV, streamed page by page from the search
//! API, newest first, up to a stated limit.

use axum::body::Body;
use bytes::Bytes;
use sawmill_record::api::SearchParams;
use sawmill_record::{fields, Field};
use serde::Deserialize;

use crate::client::{Client, ReadHit, Search, Served};
use crate::error::{Error, Result};
use crate::row::{field_text, json_of};
use crate::url::{default_end, default_start, View};

pub const DEFAULT_LIMIT: usize = 10_000;
pub const MAX_LIMIT: usize = 100_000;
/// Records asked per search request while streaming.
const CHUNK: usize = 1000;

/// The CSV's columns, fields of the contract's table in the order a spreadsheet reader
/// wants them: when, how bad, where from, then the message and every other field as JSON.
/// The key, flags and second timestamp stay out (the NDJSON export has everything).
const CSV_COLUMNS: [&str; 10] = [
    "ts",
    "severity",
    "service",
    "host",
    "container",
    "stream",
    "trace_id",
    "request_id",
    "message",
    "fields",
];

/// The table's entry of each of [`CSV_COLUMNS`]; a name the table lacks is a bug that the
/// tests catch, and meanwhile an empty column.
fn csv_fields() -> impl Iterator<Item = Option<&'static Field>> {
    CSV_COLUMNS.iter().map(|name| fields::field(name))
}

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

fn csv_row(h: &ReadHit) -> String {
    let mut line = String::new();
    match h {
        ReadHit::Hit(h) => {
            for (i, f) in csv_fields().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let v = f.and_then(|f| field_text(&h.record, f));
                csv_field(&mut line, v.as_deref().unwrap_or(""));
            }
        }
        // Every column empty but the message, which says why, and the last, which holds
        // the hit as the indexer gave it: an export never drops a record silently.
        ReadHit::Unreadable(u) => {
            for (i, name) in CSV_COLUMNS.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                match *name {
                    "message" => {
                        csv_field(&mut line, &format!("record could not be read: {}", u.error))
                    }
                    "fields" => csv_field(&mut line, u.raw.get()),
                    _ => {}
                }
            }
        }
    }
    line.push_str("\r\n");
    line
}

/// A page of hits in the export's format. An NDJSON line is the hit as read (the record
/// as stored, with its `_id`), or as the indexer gave it when it could not be read.
fn encode(format: Format, hits: &[ReadHit]) -> Bytes {
    let mut out = String::new();
    for h in hits {
        match (format, h) {
            (Format::Ndjson, ReadHit::Hit(h)) => {
                out.push_str(&serde_json::to_string(&json_of(h)).unwrap_or_default());
                out.push('\n');
            }
            (Format::Ndjson, ReadHit::Unreadable(u)) => {
                out.push_str(u.raw.get());
                out.push('\n');
            }
            (Format::Csv, h) => out.push_str(&csv_row(h)),
        }
    }
    Bytes::from(out)
}

/// The body of an export, page by page: the first, already fetched, then the rest on the
/// replica that served it, whose cursors they continue.
struct Pages {
    client: Client,
    base: SearchParams,
    replica: usize,
    cursor: Option<String>,
    /// Records still to send, of the export's limit.
    left: usize,
    format: Format,
    first: Option<Bytes>,
}

impl Pages {
    async fn next(mut self) -> Option<(Result<Bytes>, Pages)> {
        if let Some(b) = self.first.take() {
            return Some((Ok(b), self));
        }
        let c = self.cursor.take()?;
        if self.left == 0 {
            return None;
        }
        let next = SearchParams {
            limit: CHUNK.min(self.left),
            cursor: Some(c),
            ..self.base.clone()
        };
        let page = self.client.search(&next, Some(self.replica)).await;
        match page.and_then(|p| self.take(p.value)) {
            Ok(b) => Some((Ok(b), self)),
            // Ends the body with an error: the client sees a broken download, never a
            // silently short file.
            Err(e) => {
                tracing::warn!(error = %e, "Export stopped.");
                Some((Err(e), self))
            }
        }
    }

    /// A page's records, encoded, counted against the limit; its cursor kept while records
    /// are left. An empty page ends the export (its cursor would only be asked again).
    fn take(&mut self, page: Search) -> Result<Bytes> {
        complete(&page)?;
        self.left -= page.hits.len().min(self.left);
        self.cursor = page
            .cursor
            .filter(|_| self.left > 0 && !page.hits.is_empty());
        Ok(encode(self.format, &page.hits))
    }
}

/// An error when some group did not answer: the file would be silently short.
fn complete(page: &Search) -> Result<()> {
    match &page.partial {
        Some(p) => Err(Error::Unavailable {
            attempts: vec![format!(
                "the export stopped: group(s) {} did not answer, so the file would miss their records; try again when they are back",
                p.missing_groups.join(", ")
            )],
        }),
        None => Ok(()),
    }
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
    let view = View {
        q: p.q.clone(),
        start: p.start.clone(),
        end: p.end.clone(),
        ..View::default()
    };
    let base = view.search();
    let first_page = SearchParams {
        limit: CHUNK.min(p.limit),
        ..base.clone()
    };
    let first: Served<Search> = client.search(&first_page, None).await?;
    complete(&first.value)?;
    let mut head = String::new();
    if p.format == Format::Csv {
        head.push_str(&CSV_COLUMNS.join(","));
        head.push_str("\r\n");
    }
    let mut first_chunk = head.into_bytes();
    first_chunk.extend_from_slice(&encode(p.format, &first.value.hits));
    let sent = first.value.hits.len();
    let cursor = if sent < p.limit && sent > 0 {
        first.value.cursor.clone()
    } else {
        None
    };
    let pages = Pages {
        client: client.clone(),
        base,
        replica: first.replica,
        cursor,
        left: p.limit - sent,
        format: p.format,
        first: Some(Bytes::from(first_chunk)),
    };
    let stream = futures_util::stream::unfold(pages, Pages::next);
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

    /// Pages of an export whose client is never asked (nothing listens on port 1).
    async fn pages(left: usize) -> Pages {
        Pages {
            client: Client::new(vec!["http://127.0.0.1:1".into()], Default::default())
                .await
                .unwrap(),
            base: SearchParams::default(),
            replica: 0,
            cursor: None,
            left,
            format: Format::Ndjson,
            first: None,
        }
    }

    fn search_page(hits: usize, cursor: Option<&str>, partial: bool) -> Search {
        let hit = r#"{"_id":"g~1","ts":"2026-11-27T10:00:00Z","message":"m"}"#;
        Search {
            total: 9,
            hits: (0..hits)
                .map(|_| serde_json::from_str(hit).unwrap())
                .collect(),
            took_ms: 0,
            cursor: cursor.map(String::from),
            partial: partial.then(|| sawmill_record::api::Partial {
                missing_groups: vec!["g1".into()],
            }),
        }
    }

    #[tokio::test]
    async fn an_empty_page_ends_the_export_and_a_partial_one_fails_it() {
        let mut p = pages(10).await;
        p.take(search_page(2, Some("c"), false)).unwrap();
        assert_eq!((p.left, p.cursor.as_deref()), (8, Some("c")));
        // A page with no records but a cursor would be asked again for ever.
        p.take(search_page(0, Some("c"), false)).unwrap();
        assert_eq!(p.cursor, None);
        let e = pages(10)
            .await
            .take(search_page(2, Some("c"), true))
            .unwrap_err();
        assert!(e.to_string().contains("g1"), "{e}");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let h = json!({"_id": "1", "ts": "2026-11-27T10:00:00Z", "message": "=HYPERLINK(\"x\"), then\nmore", "service": "a,b", "fields": {"k": 1}});
        let h: ReadHit = serde_json::from_str(&h.to_string()).unwrap();
        assert_eq!(
            csv_row(&h),
            "2026-11-27T10:00:00.000000000Z,,\"a,b\",,,,,,\"'=HYPERLINK(\"\"x\"\"), then\nmore\",\"{\"\"k\"\":1}\"\r\n"
        );
    }

    #[test]
    fn csv_columns_are_fields_of_the_contract() {
        for (name, f) in CSV_COLUMNS.iter().zip(csv_fields()) {
            assert!(f.is_some(), "`{name}` is not in sawmill_record::FIELDS");
        }
    }

    #[test]
    fn an_unreadable_hit_is_exported_as_given() {
        let h: ReadHit = serde_json::from_str(r#"{"_id":"1","message":5}"#).unwrap();
        assert!(matches!(h, ReadHit::Unreadable(_)));
        assert_eq!(
            &encode(Format::Ndjson, std::slice::from_ref(&h))[..],
            b"{\"_id\":\"1\",\"message\":5}\n"
        );
        let csv = csv_row(&h);
        assert!(
            csv.starts_with(",,,,,,,,\"record could not be read: "),
            "{csv}"
        );
        assert!(
            csv.ends_with(",\"{\"\"_id\"\":\"\"1\"\",\"\"message\"\":5}\"\r\n"),
            "{csv}"
        );
    }
}
