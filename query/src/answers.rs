//! The other merged answers: histogram counts added bucket by bucket, terms over-fetched
//! from each group and added, a request's records from every group, and a record's context
//! from its own group (and, for a request's context, from every group).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use sawmill_record::api::{
    self, Bucket, ContextParams, ContextResponse, HistogramParams, HistogramResponse, LocalId,
    Order, RecordId, Scope, SearchParams, SearchResponse, TermCount, TermsParams, TermsResponse,
    TraceParams, TraceResponse, MAX_TERMS,
};
use sawmill_record::time::{format_micros, parse_rfc3339};
use serde_json::Value;

use crate::cluster::{partial_of, Answer, Attempt, Cluster, Fanned};
use crate::error::{Error, Result};
use crate::path_and_query;
use crate::search::{check_limit, merge, rank_hit, Doc, Ranked};

fn micros(ts: &str) -> Option<i64> {
    parse_rfc3339(ts).map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
}

/// How many values each group is asked for to answer a terms request of `size`: more than
/// `size`, as Elasticsearch's `shard_size`, so a value that is frequent overall but just
/// below one group's cut is still counted there.
pub fn shard_size(size: usize) -> usize {
    (size + size / 2 + 10).min(MAX_TERMS)
}

/// Adds the groups' buckets of one interval; none when they do not line up (different
/// widths, or far-apart spans that a common range would serve better).
fn add_buckets(answers: &[Answer<HistogramResponse>], want: usize) -> Option<Vec<Bucket>> {
    let interval = answers.first()?.value.interval_ms;
    if interval <= 0 || answers.iter().any(|a| a.value.interval_ms != interval) {
        return None;
    }
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for a in answers {
        for b in &a.value.buckets {
            *counts.entry(micros(&b.ts)?).or_default() += b.count;
        }
    }
    let (Some(lo), Some(hi)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Some(Vec::new());
    };
    let step = interval * 1000;
    let n = (hi - lo) / step + 1;
    let longest = answers.iter().map(|a| a.value.buckets.len()).max()?;
    if n as usize > want.max(longest) + 2 {
        return None;
    }
    Some(
        (0..n)
            .map(|i| {
                let ts = lo + i * step;
                Bucket {
                    ts: format_micros(ts),
                    count: counts.get(&ts).copied().unwrap_or(0),
                }
            })
            .collect(),
    )
}

impl Cluster {
    /// [`api::HISTOGRAM`] over every group. Each group rounds its bucket width from its own
    /// range; when they differ, every group is asked again over the range they span
    /// together, so the bars line up.
    pub async fn histogram(&self, p: &HistogramParams) -> Result<HistogramResponse> {
        let started = Instant::now();
        let _slot = self.admit().await?;
        let groups = self.groups(&HashMap::new());
        let pq = path_and_query(api::HISTOGRAM, p);
        let mut fanned: Fanned<HistogramResponse> =
            self.fan_out(groups.clone(), |_| Some(pq.clone())).await?;
        let buckets = match add_buckets(&fanned.answers, p.buckets) {
            Some(b) => b,
            None => {
                let span = fanned
                    .answers
                    .iter()
                    .flat_map(|a| {
                        let w = a.value.interval_ms * 1000;
                        a.value
                            .buckets
                            .iter()
                            .filter_map(move |b| micros(&b.ts).map(|t| (t, t + w - 1)))
                    })
                    .fold(None, |acc: Option<(i64, i64)>, (a, b)| {
                        Some(acc.map_or((a, b), |(x, y)| (x.min(a), y.max(b))))
                    });
                let (lo, hi) = span.unwrap_or_default();
                let common = HistogramParams {
                    start: Some(format_micros(lo)),
                    end: Some(format_micros(hi)),
                    ..p.clone()
                };
                let pq = path_and_query(api::HISTOGRAM, &common);
                fanned = self.fan_out(groups, |_| Some(pq.clone())).await?;
                add_buckets(&fanned.answers, usize::MAX - 2).unwrap_or_default()
            }
        };
        Ok(HistogramResponse {
            interval_ms: fanned.answers.first().map_or(0, |a| a.value.interval_ms),
            total: buckets.iter().map(|b| b.count).sum(),
            buckets,
            took_ms: started.elapsed().as_millis() as u64,
            partial: fanned.partial(),
        })
    }

    /// [`api::TERMS`] over every group: each asked for [`shard_size`] values, counts added.
    /// `approximate` when more than one group cut its list (a value's count may then miss
    /// what a group held below its cut).
    pub async fn terms(&self, p: &TermsParams) -> Result<TermsResponse> {
        let started = Instant::now();
        check_limit("size", p.size, MAX_TERMS)?;
        let _slot = self.admit().await?;
        let ask = TermsParams {
            size: shard_size(p.size),
            ..p.clone()
        };
        let pq = path_and_query(api::TERMS, &ask);
        let fanned: Fanned<TermsResponse> = self
            .fan_out(self.groups(&HashMap::new()), |_| Some(pq.clone()))
            .await?;
        let mut counts: HashMap<String, u64> = HashMap::new();
        let (mut with_value, mut missing) = (0u64, 0u64);
        let mut cut = 0;
        for a in &fanned.answers {
            for t in &a.value.values {
                *counts.entry(t.value.clone()).or_default() += t.count;
                with_value += t.count;
            }
            with_value += a.value.other;
            missing += a.value.missing;
            cut += usize::from(a.value.other > 0);
        }
        let mut values: Vec<TermCount> = counts
            .into_iter()
            .map(|(value, count)| TermCount { value, count })
            .collect();
        values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        values.truncate(p.size);
        let shown: u64 = values.iter().map(|v| v.count).sum();
        Ok(TermsResponse {
            field: p.field.clone(),
            values,
            other: with_value - shown,
            missing,
            took_ms: started.elapsed().as_millis() as u64,
            approximate: fanned.answers.len() > 1 && cut > 0,
            partial: fanned.partial(),
        })
    }

    /// [`api::TRACE`] over every group: a request crosses hosts, whose records may sit in
    /// any group. Oldest first, at most `limit`.
    pub async fn trace(&self, id: &str, p: &TraceParams) -> Result<TraceResponse<Doc>> {
        let started = Instant::now();
        check_limit("limit", p.limit, api::MAX_TRACE_LIMIT)?;
        let _slot = self.admit().await?;
        let pq = path_and_query(&api::path_with(api::TRACE, id), p);
        let mut fanned: Fanned<TraceResponse<Doc>> = self
            .fan_out(self.groups(&HashMap::new()), |_| Some(pq.clone()))
            .await?;
        let mut lists = Vec::new();
        let mut total = 0;
        for a in &mut fanned.answers {
            total += a.value.total;
            let hits = std::mem::take(&mut a.value.hits);
            lists.push((a.group.clone(), ranked(hits, a)?));
        }
        let mut out = Vec::new();
        merge(&mut lists, Order::Asc, p.limit, &mut out);
        Ok(TraceResponse {
            id: id.to_string(),
            total,
            hits: out.into_iter().map(|(_, h)| h.doc).collect(),
            took_ms: started.elapsed().as_millis() as u64,
            partial: fanned.partial(),
        })
    }

    /// [`api::CONTEXT`] of a record id this layer gave (`{group}~{local}`): asked of the
    /// record's group, on any of its replicas for a key-based id (so a link outlives the
    /// replica that served it), on the issuing replica only for an `r~` id. With
    /// `scope=request`, every other group adds the request's records around the anchor.
    pub async fn context(&self, id: &str, p: &ContextParams) -> Result<ContextResponse<Doc>> {
        let started = Instant::now();
        let rid: RecordId = id.parse().map_err(|e: api::BadId| {
            Error::BadRequest(format!(
                "{e}: ids through `sawmill query` are key-based (`GROUP~s~SEQ~SRC`, \
                 `GROUP~d~KEY`) or replica-qualified (`GROUP~r~REPLICA~RID`); a bare \
                 `GROUP~RID` would name a different record on each replica"
            ))
        })?;
        check_limit("before", p.before, api::MAX_LIMIT)?;
        check_limit("after", p.after, api::MAX_LIMIT)?;
        let _slot = self.admit().await?;
        let groups = self.groups(&HashMap::new());
        let Some((_, members)) = groups.iter().find(|(g, _)| *g == rid.group) else {
            return Err(Error::NotFound(format!(
                "group `{}` (of record `{id}`) in the cluster",
                rid.group
            )));
        };
        let mut members = members.clone();
        if let LocalId::Replica { replica, .. } = &rid.local {
            members.retain(|m| m.replica.as_ref() == Some(replica));
        }
        let pq = path_and_query(&api::path_with(api::CONTEXT, &rid.local.to_string()), p);
        let mut a = self.record_context(&rid, &members, &pq).await?;
        let anchor = rank_hit(std::mem::take(&mut a.value.anchor), &a)?;
        let mut before: VecDeque<Ranked> = ranked(std::mem::take(&mut a.value.before), &a)?;
        let mut after: VecDeque<Ranked> = ranked(std::mem::take(&mut a.value.after), &a)?;
        let mut missing = Vec::new();
        if p.scope == Scope::Request {
            let others: Vec<_> = groups.into_iter().filter(|(g, _)| *g != a.group).collect();
            missing = self
                .request_around(&anchor, &a.group, others, p, &mut before, &mut after)
                .await?;
        }
        // `before` is oldest first, ending at the anchor: the last `p.before` of it.
        let skip = before.len().saturating_sub(p.before);
        Ok(ContextResponse {
            anchor: anchor.doc,
            before: before.into_iter().skip(skip).map(|h| h.doc).collect(),
            after: after.into_iter().take(p.after).map(|h| h.doc).collect(),
            took_ms: started.elapsed().as_millis() as u64,
            partial: partial_of(missing),
        })
    }

    /// Asks the record's group for its context. A key-based id is the same record on every
    /// replica, and one that answers 404 may be a replica freshly replaced on an empty disk
    /// that repair has not caught up yet: the next is asked, and 404 stands only when every
    /// replica says it.
    async fn record_context(
        &self,
        rid: &RecordId,
        members: &[sawmill_cluster::Member],
        pq: &str,
    ) -> Result<Answer<ContextResponse<Doc>>> {
        let keyed = !matches!(rid.local, LocalId::Replica { .. });
        let (replica, (url, value)) = self
            .first(&rid.group, members, |base| async move {
                match self.fetch(format!("{base}{pq}")).await {
                    Err(Attempt::Final(e @ Error::Indexer { status: 404, .. })) if keyed => {
                        Err(Attempt::Elsewhere(e))
                    }
                    other => other,
                }
            })
            .await
            .map_err(Attempt::into_error)?;
        Ok(Answer {
            group: rid.group.clone(),
            replica,
            url,
            value,
        })
    }

    /// Adds the other groups' records of the anchor's request to `before` and `after`
    /// (each kept in time order); the groups that did not answer.
    async fn request_around(
        &self,
        anchor: &Ranked,
        anchor_group: &str,
        others: Vec<(String, Vec<sawmill_cluster::Member>)>,
        p: &ContextParams,
        before: &mut VecDeque<Ranked>,
        after: &mut VecDeque<Ranked>,
    ) -> Result<Vec<String>> {
        let ids: Vec<&str> = ["trace_id", "request_id"]
            .iter()
            .filter_map(|f| anchor.doc.get(*f).and_then(Value::as_str))
            .collect();
        if others.is_empty() || ids.is_empty() {
            return Ok(Vec::new());
        }
        let q = ids
            .iter()
            .flat_map(|id| {
                let id = quote(id);
                [format!("trace_id:{id}"), format!("request_id:{id}")]
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        // Records at the anchor's very microsecond come before it in a group named before
        // the anchor's and after it in one named after: each group's side starts at the
        // anchor or a microsecond past it, so those ties do not take a side's places.
        let side = |order: Order, limit: usize, g: &str| {
            let tie_here = match order {
                Order::Desc => g < anchor_group,
                Order::Asc => g > anchor_group,
            };
            let step = if order == Order::Desc { -1 } else { 1 };
            let at = format_micros(anchor.ts + if tie_here { 0 } else { step });
            let q = SearchParams {
                q: q.clone(),
                start: (order == Order::Asc).then(|| at.clone()),
                end: (order == Order::Desc).then_some(at),
                limit,
                order,
                cursor: None,
                max_message_bytes: p.max_message_bytes,
            };
            Some(path_and_query(api::SEARCH, &q))
        };
        let (b, f): (Fanned<SearchResponse<Doc>>, Fanned<SearchResponse<Doc>>) = tokio::try_join!(
            self.fan_out(others.clone(), |g| side(Order::Desc, p.before, g)),
            self.fan_out(others, |g| side(Order::Asc, p.after, g)),
        )?;
        // Records at the anchor's very microsecond rank by group name, as in a search.
        let earlier =
            |h: &Ranked, g: &str| h.ts < anchor.ts || (h.ts == anchor.ts && g < anchor_group);
        let mut bl = vec![(anchor_group.to_string(), std::mem::take(before))];
        for mut a in b.answers {
            let mut l = ranked(std::mem::take(&mut a.value.hits), &a)?;
            l.retain(|h| earlier(h, &a.group));
            // Asked newest first, as the merge below takes them.
            bl.push((a.group.clone(), l));
        }
        let mut al = vec![(anchor_group.to_string(), std::mem::take(after))];
        for mut a in f.answers {
            let mut l = ranked(std::mem::take(&mut a.value.hits), &a)?;
            l.retain(|h| !earlier(h, &a.group));
            al.push((a.group.clone(), l));
        }
        // The anchor group's is oldest first: newest first, the merge takes the records
        // closest to the anchor.
        bl[0].1 = std::mem::take(&mut bl[0].1).into_iter().rev().collect();
        let mut out = Vec::new();
        merge(&mut bl, Order::Desc, p.before, &mut out);
        before.extend(out.drain(..).rev().map(|(_, h)| h));
        merge(&mut al, Order::Asc, p.after, &mut out);
        after.extend(out.into_iter().map(|(_, h)| h));
        let mut missing = b.missing;
        missing.extend(f.missing);
        missing.sort();
        missing.dedup();
        Ok(missing)
    }
}

/// `hits` ranked, moved rather than copied: a page may hold thousands of large hits.
pub(crate) fn ranked<T>(hits: Vec<Doc>, a: &Answer<T>) -> Result<VecDeque<Ranked>> {
    hits.into_iter().map(|d| rank_hit(d, a)).collect()
}

/// `s` as a quoted term of the query language.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(interval_ms: i64, buckets: &[(i64, u64)]) -> Answer<HistogramResponse> {
        Answer {
            group: "g".into(),
            replica: "r".into(),
            url: "u".into(),
            value: HistogramResponse {
                interval_ms,
                buckets: buckets
                    .iter()
                    .map(|(t, c)| Bucket {
                        ts: format_micros(t * 1000),
                        count: *c,
                    })
                    .collect(),
                total: 0,
                took_ms: 0,
                partial: None,
            },
        }
    }

    #[test]
    fn buckets_of_one_width_add_up_and_others_ask_again() {
        let a = answer(10, &[(100, 1), (110, 2)]);
        let b = answer(10, &[(110, 5), (120, 1)]);
        let got: Vec<u64> = add_buckets(&[a.clone(), b], 60)
            .unwrap()
            .iter()
            .map(|b| b.count)
            .collect();
        assert_eq!(got, [1, 7, 1]);
        assert!(add_buckets(&[a.clone(), answer(20, &[(100, 1)])], 60).is_none());
        assert!(add_buckets(&[a, answer(10, &[(100_000, 1)])], 60).is_none());
    }

    #[test]
    fn groups_are_asked_for_more_terms_than_shown() {
        assert_eq!(shard_size(10), 25);
        assert_eq!(shard_size(MAX_TERMS), MAX_TERMS);
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
