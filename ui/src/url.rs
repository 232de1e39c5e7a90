//! Page state as it lives in the URL: reading it, and building links that change one part
//! of it, so that every view can be shared by copying the address.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sawmill_record::api::SearchParams;
use serde::Deserialize;

/// Everything but the unreserved characters of RFC 3986 is escaped, in queries and paths
/// alike, so a log's `/`, `?`, `#` or `&` can never change what a link points at.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes one query-string value or path segment.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// How times are shown: in UTC, or in the browser's own zone (converted by the page's
/// script, with the offset of each instant, so daylight saving is right).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tz {
    #[default]
    Utc,
    Local,
}

impl Tz {
    pub fn as_str(self) -> &'static str {
        match self {
            Tz::Utc => "utc",
            Tz::Local => "local",
        }
    }
}

pub fn default_start() -> String {
    "now-15m".into()
}

pub fn default_end() -> String {
    "now".into()
}

/// The quick ranges offered above the histogram, as Kibana's "commonly used".
pub const QUICK_RANGES: [(&str, &str); 6] = [
    ("5m", "Last 5 minutes"),
    ("15m", "Last 15 minutes"),
    ("1h", "Last hour"),
    ("4h", "Last 4 hours"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
];

/// The query and time range shared by Discover, the live tail and export.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// The Lucene-like query; empty or `*` matches everything.
    #[serde(default)]
    pub q: String,
    /// Start of the time range: RFC 3339, epoch ms or `now-15m`; empty is unbounded.
    #[serde(default = "default_start")]
    pub start: String,
    /// End of the time range, as `start`.
    #[serde(default = "default_end")]
    pub end: String,
    #[serde(default)]
    pub tz: Tz,
    /// Where the next page of hits starts (the search API's cursor).
    #[serde(default)]
    pub cursor: Option<String>,
}

impl Default for View {
    fn default() -> Self {
        View {
            q: String::new(),
            start: default_start(),
            end: default_end(),
            tz: Tz::Utc,
            cursor: None,
        }
    }
}

impl View {
    /// `q`, `start`, `end` and `tz` as a query string, without the cursor.
    pub fn query_string(&self) -> String {
        format!(
            "q={}&start={}&end={}&tz={}",
            enc(&self.q),
            enc(&self.start),
            enc(&self.end),
            self.tz.as_str()
        )
    }

    /// This view on Discover, with `f` applied first.
    pub fn discover(&self, f: impl FnOnce(&mut View)) -> String {
        let mut v = self.clone();
        v.cursor = None;
        f(&mut v);
        let mut s = format!("/?{}", v.query_string());
        if let Some(c) = &v.cursor {
            s.push_str(&format!("&cursor={}", enc(c)));
        }
        s
    }

    /// `start` and `end` as the search API takes them: an empty bound is none.
    pub fn bounds(&self) -> (Option<String>, Option<String>) {
        let bound = |s: &str| (!s.is_empty()).then(|| s.to_string());
        (bound(&self.start), bound(&self.end))
    }

    /// This view's query and time range as a search, other parameters at their defaults.
    pub fn search(&self) -> SearchParams {
        let (start, end) = self.bounds();
        SearchParams {
            q: self.q.clone(),
            start,
            end,
            ..SearchParams::default()
        }
    }

    pub fn matches_all(&self) -> bool {
        matches_all(&self.q)
    }
}

pub fn matches_all(q: &str) -> bool {
    let t = q.trim();
    t.is_empty() || t == "*"
}

/// `"value"`, escaped for the query parser.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `field:"value"` with the value quoted for the query parser.
pub fn term(field: &str, value: &str) -> String {
    format!("{field}:{}", quote(value))
}

/// `q` narrowed to records whose `field` is `value` (the sidebar's "filter for").
pub fn filter_for(q: &str, field: &str, value: &str) -> String {
    and(q, &term(field, value))
}

/// `q` without the records whose `field` is `value` (the sidebar's "filter out").
///
/// Written `q -field:"value"`, anchored by `*` when `q` matches everything: the shortest
/// form a user can read and edit in the search box. (The indexer takes `X AND NOT Y` and a
/// lone `NOT Y` too.)
pub fn filter_out(q: &str, field: &str, value: &str) -> String {
    let base = if matches_all(q) {
        "*".to_string()
    } else {
        format!("({})", q.trim())
    };
    format!("{base} -{}", term(field, value))
}

/// `q AND clause`, keeping `q`'s own precedence with parentheses.
pub fn and(q: &str, clause: &str) -> String {
    if matches_all(q) {
        return clause.to_string();
    }
    format!("({}) AND {clause}", q.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_escape_everything_that_could_change_a_link() {
        assert_eq!(enc("a b/c?d#e&f=g\"<"), "a%20b%2Fc%3Fd%23e%26f%3Dg%22%3C");
        assert_eq!(enc("req-1_2.3~"), "req-1_2.3~");
    }

    #[test]
    fn filters_quote_values_and_keep_the_query_grouped() {
        assert_eq!(filter_for("", "service", "api"), "service:\"api\"");
        assert_eq!(
            filter_for("timeout OR slow", "host", "a\"b\\c"),
            "(timeout OR slow) AND host:\"a\\\"b\\\\c\""
        );
        assert_eq!(
            filter_out("*", "severity", "debug"),
            "* -severity:\"debug\""
        );
        assert_eq!(filter_out("a OR b", "host", "h"), "(a OR b) -host:\"h\"");
    }
}
