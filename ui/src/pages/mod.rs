//! The pages: for each, a plain async function that asks the indexers and builds the
//! page's data, and the askama struct that renders it (templates in `ui/templates/`).

pub mod context;
pub mod discover;
pub mod export;
pub mod record;
pub mod request;
pub mod tail;

use sawmill_record::api::Partial;

use crate::client::Client;
use crate::row::{format_utc, Row};
use crate::url::Tz;

/// What every page's frame shows: the time-zone switch, the replica banner and the
/// equivalent API URL.
#[derive(Clone, Debug, Default)]
pub struct Chrome {
    pub tz: Tz,
    /// This page with `tz=utc` and with `tz=local`.
    pub utc_href: String,
    pub local_href: String,
    /// One line per replica that is down or degraded.
    pub banner: Vec<String>,
    /// The search API request (path and query) that gives this page's data through
    /// `sawmill query`: no indexer's URL, as every group answers it.
    pub api_url: Option<String>,
    /// Which navigation entry is current: `discover`, `tail` or empty.
    pub nav: &'static str,
    /// Hits on this page that could not be read, shown as placeholder rows.
    pub unreadable: usize,
    /// Who is signed in, with `--users-file`: the header shows a sign-out button.
    pub session: Option<crate::signin::Session>,
}

impl Chrome {
    /// With the signed-in user's name and sign-out form in the header.
    pub fn signed_in(mut self, session: Option<crate::signin::Session>) -> Chrome {
        self.session = session;
        self
    }

    pub fn new(client: &Client, tz: Tz, uri: &axum::http::Uri, nav: &'static str) -> Chrome {
        Chrome {
            tz,
            utc_href: with_tz(uri, Tz::Utc),
            local_href: with_tz(uri, Tz::Local),
            banner: banner(client),
            api_url: None,
            nav,
            unreadable: 0,
            session: None,
        }
    }

    /// Notes the placeholders among `rows` for the page, and in the log with the API URL
    /// that gave them.
    pub fn count_unreadable(&mut self, rows: &[Row]) {
        let n = rows.iter().filter(|r| r.unreadable).count();
        if n > 0 {
            let first = rows.iter().find(|r| r.unreadable);
            let why = first
                .and_then(|r| r.message.first())
                .map(|s| s.text.as_str());
            tracing::warn!(
                count = n,
                url = self.api_url.as_deref().unwrap_or(""),
                error = why.unwrap_or(""),
                "Hits could not be read as records."
            );
        }
        self.unreadable += n;
    }
}

impl Chrome {
    /// Notes the answer a page shows: its API request, and a banner line for each group
    /// the answer says did not answer (one discovery may not list any more).
    pub fn answered(&mut self, api: &str, partial: Option<&Partial>) {
        self.api_url = Some(api.to_string());
        for g in partial.map_or(&[][..], |p| &p.missing_groups[..]) {
            let line = missing_line(g);
            if !self.banner.contains(&line) {
                self.banner.insert(0, line);
            }
        }
    }
}

fn missing_line(group: &str) -> String {
    format!("group {group} did not answer: results are incomplete")
}

/// Lines for the banner: groups none of whose replicas answers (their records are missing
/// from every answer), then replicas that failed, and since when.
pub fn banner(client: &Client) -> Vec<String> {
    let st = client.statuses();
    let mut groups: std::collections::BTreeMap<&str, bool> = Default::default();
    for s in &st {
        if let Some(g) = &s.group {
            *groups.entry(g.as_str()).or_default() |= s.up;
        }
    }
    let mut lines: Vec<String> = groups
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(g, _)| missing_line(g))
        .collect();
    lines.extend(st.iter().filter_map(|s| {
        let why = s.error.as_deref()?;
        // Replicas of the same group that still answer; all of them without a group known.
        let up = st
            .iter()
            .filter(|o| o.up && (s.group.is_none() || o.group == s.group))
            .count();
        Some(if s.up {
            format!("Indexer replica {} reports a problem: {why}", s.url)
        } else {
            format!(
                "Indexer replica {} is down since {} ({why}); {}",
                s.url,
                format_utc(s.since),
                if up > 0 {
                    format!("answers come from the other {up} replica(s).")
                } else {
                    "no replica answers.".to_string()
                }
            )
        })
    }));
    lines
}

/// The same path and query with `tz` set, so the switch keeps everything else.
pub fn with_tz(uri: &axum::http::Uri, tz: Tz) -> String {
    let mut parts: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("tz="))
        .collect();
    let t = format!("tz={}", tz.as_str());
    parts.push(&t);
    format!("{}?{}", uri.path(), parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_names_the_groups_an_answer_says_are_missing() {
        let mut c = Chrome {
            tz: Tz::default(),
            utc_href: String::new(),
            local_href: String::new(),
            banner: vec![missing_line("g0")],
            api_url: None,
            nav: "",
            unreadable: 0,
            session: None,
        };
        let p = Partial {
            missing_groups: vec!["g0".into(), "g1".into()],
        };
        c.answered("/api/v1/search?q=a", Some(&p));
        assert_eq!(c.banner, [missing_line("g1"), missing_line("g0")]);
        assert_eq!(c.api_url.as_deref(), Some("/api/v1/search?q=a"));
    }
}
