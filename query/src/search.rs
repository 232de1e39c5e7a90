//! Search over every group: each group's page merged into one, newest first (or oldest
//! first), with a cluster cursor that resumes each group right after the last of its hits
//! that a page took, so reading every page gives every hit exactly once.
//!
//! An indexer's cursor is `TS.RID`: its page continues below that rank (`ts`, then its own
//! record id). The cluster cursor keeps one per group, with the replica that gave it (a
//! record id is that replica's, so the next page prefers the same one; on another replica
//! only records sharing the cursor's exact microsecond could be shifted). A page asks every
//! group for at most `limit` hits, so it holds at most `limit` × groups hits.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use sawmill_record::api::{self, LocalId, Order, RecordId, SearchParams, SearchResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::{Answer, Cluster};
use crate::error::{Error, Result};

/// A hit as the query layer passes it on: the indexer's JSON object, `_id` made
/// cluster-wide. Unknown fields pass through untouched.
pub type Doc = serde_json::Map<String, Value>;

/// A hit with its rank in its group: (`ts` in µs, the replica's record id).
pub(crate) struct Ranked {
    pub ts: i64,
    pub rid: u64,
    pub doc: Doc,
}

/// Reads a group's hit: its rank, and `_id` rewritten to a [`RecordId`].
pub(crate) fn rank_hit(mut doc: Doc, a: &Answer<impl Sized>) -> Result<Ranked> {
    let bad = |detail: String| Error::BadAnswer {
        url: a.url.clone(),
        detail,
    };
    let rid = doc
        .get("_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("a hit without a numeric `_id`".into()))?;
    let ts = doc
        .get("ts")
        .and_then(Value::as_str)
        .and_then(sawmill_record::time::parse_rfc3339)
        .ok_or_else(|| bad("a hit without an RFC 3339 `ts`".into()))?;
    // The index keeps microseconds, cut toward zero as tantivy does.
    let ts = (ts.unix_timestamp_nanos() / 1000) as i64;
    let local = LocalId::of_hit(
        doc.get("_src").and_then(Value::as_str),
        doc.get("_seq").and_then(Value::as_u64),
        doc.get("_key").and_then(Value::as_str),
        &a.replica,
        rid,
    );
    let id = RecordId {
        group: a.group.clone(),
        local,
    };
    doc.insert("_id".into(), Value::String(id.to_string()));
    Ok(Ranked { ts, rid, doc })
}

/// Where one group's reading stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct GroupCursor {
    /// The indexer cursor to continue from; none: from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// The replica whose record ids `c` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    /// Every hit of this group has been given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    d: bool,
    /// The group's `total` when it last answered: a group that is done is not asked again,
    /// and its matches still count in every later page's `total`.
    #[serde(default, skip_serializing_if = "is_zero")]
    t: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

type ClusterCursor = BTreeMap<String, GroupCursor>;

/// Cursors are opaque: hex of their JSON, so they need no escaping in a URL.
fn encode(c: &ClusterCursor) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(s: &str) -> Result<ClusterCursor> {
    let bad = || Error::BadRequest(format!("`cursor` `{s}` is not a cursor this API returned"));
    // Bounded like any parameter: a cursor names at most a few hundred groups.
    if !s.len().is_multiple_of(2) || s.len() > 1 << 20 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Whether `a` comes before `b` in `order`; ties between groups go by group name, so the
/// merged order is the same on every page.
fn before(order: Order, a: (i64, &str), b: (i64, &str)) -> bool {
    match order {
        Order::Desc => a.0 > b.0 || (a.0 == b.0 && a.1 < b.1),
        Order::Asc => a.0 < b.0 || (a.0 == b.0 && a.1 < b.1),
    }
}

/// Merges sorted per-group lists into one, taking at most `limit`: how many each list gave.
pub(crate) fn merge(
    lists: &mut [(String, std::collections::VecDeque<Ranked>)],
    order: Order,
    limit: usize,
    out: &mut Vec<(usize, Ranked)>,
) -> Vec<usize> {
    let mut taken = vec![0; lists.len()];
    while out.len() < limit {
        let mut best: Option<usize> = None;
        for (i, (g, l)) in lists.iter().enumerate() {
            let Some(h) = l.front() else { continue };
            let better = match best {
                None => true,
                Some(b) => {
                    let (bg, bl) = &lists[b];
                    before(order, (h.ts, g), (bl[0].ts, bg))
                }
            };
            if better {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        let h = lists[b].1.pop_front().expect("a head");
        taken[b] += 1;
        out.push((b, h));
    }
    taken
}

impl Cluster {
    /// [`api::SEARCH`] over every group.
    pub async fn search(&self, p: &SearchParams) -> Result<SearchResponse<Doc>> {
        let started = Instant::now();
        check_limit("limit", p.limit, api::MAX_LIMIT)?;
        let mut state = match p.cursor.as_deref() {
            Some(c) => decode(c)?,
            None => ClusterCursor::new(),
        };
        let _slot = self.admit().await?;
        let prefer: HashMap<String, String> = state
            .iter()
            .filter_map(|(g, c)| Some((g.clone(), c.r.clone()?)))
            .collect();
        let groups = self.groups(&prefer);
        let mut fanned = self
            .fan_out::<SearchResponse<Doc>>(groups.clone(), |g| {
                let c = state.get(g).cloned().unwrap_or_default();
                if c.d {
                    return None;
                }
                let q = SearchParams {
                    cursor: c.c,
                    ..p.clone()
                };
                Some(crate::path_and_query(api::SEARCH, &q))
            })
            .await?;
        let mut missing = fanned.missing.clone();
        // Groups a cursor names that discovery no longer lists still hold unread hits.
        for (g, c) in &state {
            if !c.d && !groups.iter().any(|(k, _)| k == g) {
                missing.push(g.clone());
            }
        }
        missing.sort();
        missing.dedup();
        let mut lists = Vec::new();
        let mut more = Vec::new();
        for a in fanned.answers.iter_mut() {
            let hits = crate::answers::ranked(std::mem::take(&mut a.value.hits), a)?;
            lists.push((a.group.clone(), hits));
            more.push(a.value.cursor.is_some());
        }
        let mut page = Vec::new();
        merge(&mut lists, p.order, p.limit, &mut page);
        for (i, a) in fanned.answers.iter().enumerate() {
            let c = state.entry(a.group.clone()).or_default();
            if let Some((_, last)) = page.iter().rev().find(|(gi, _)| *gi == i) {
                c.c = Some(format!("{}.{}", last.ts, last.rid));
                c.r = Some(a.replica.clone());
            }
            c.d = lists[i].1.is_empty() && !more[i];
            c.t = a.value.total;
        }
        let cursor = state.values().any(|c| !c.d).then(|| encode(&state));
        // Every group that answered is done and the rest are missing: an empty page with a
        // cursor would be asked again forever. Refused instead, until they are back.
        if page.is_empty() && cursor.is_some() && !missing.is_empty() {
            return Err(Error::Unavailable {
                attempts: vec![format!(
                    "group(s) {} still hold unread hits, and none of their replicas answers",
                    missing.join(", ")
                )],
            });
        }
        Ok(SearchResponse {
            // A group's last known total, whether asked on this page or not.
            total: state.values().map(|c| c.t).sum(),
            hits: page.into_iter().map(|(_, h)| h.doc).collect(),
            took_ms: started.elapsed().as_millis() as u64,
            cursor,
            partial: crate::cluster::partial_of(missing),
        })
    }
}

/// Refuses a parameter `name` past `max`, as the indexer would, before any group is asked.
pub(crate) fn check_limit(name: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::BadRequest(format!(
            "`{name}` is {value}; at most {max}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn list(g: &str, ts: &[i64]) -> (String, VecDeque<Ranked>) {
        let hits = ts
            .iter()
            .enumerate()
            .map(|(i, t)| Ranked {
                ts: *t,
                rid: i as u64,
                doc: Doc::new(),
            })
            .collect();
        (g.to_string(), hits)
    }

    #[test]
    fn groups_merge_newest_first_ties_by_group() {
        let mut lists = vec![list("b", &[9, 5, 5, 1]), list("a", &[7, 5, 2])];
        let mut out = Vec::new();
        let taken = merge(&mut lists, Order::Desc, 5, &mut out);
        let got: Vec<(usize, i64)> = out.iter().map(|(g, h)| (*g, h.ts)).collect();
        assert_eq!(got, [(0, 9), (1, 7), (1, 5), (0, 5), (0, 5)]);
        assert_eq!(taken, [3, 2]);
    }

    #[test]
    fn cursors_read_back_and_bad_ones_are_refused() {
        let mut c = ClusterCursor::new();
        c.insert(
            "g0".into(),
            GroupCursor {
                c: Some("5.1".into()),
                r: Some("ab".into()),
                d: false,
                t: 7,
            },
        );
        c.insert(
            "g1".into(),
            GroupCursor {
                d: true,
                ..GroupCursor::default()
            },
        );
        assert_eq!(decode(&encode(&c)).unwrap(), c);
        for bad in ["x", "zz", "7b", "123"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
