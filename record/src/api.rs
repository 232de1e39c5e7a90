//! The HTTP API between the parts (DESIGN.md "API"): each route's path, the parameters it
//! takes and the answer it gives. The indexer deserialises the parameters and serialises
//! the answers (or streams text that a test checks against these types); the UI and
//! `sawmill query` build requests from the parameters and read answers back as these types.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// `POST` NDJSON records, one object per line; answers [`IngestResponse`].
pub const INGEST: &str = "/api/v1/ingest";
/// `POST` an Elasticsearch bulk body; answers in Elasticsearch's bulk form.
pub const BULK: &str = "/_bulk";
/// `POST` an Elasticsearch bulk body whose actions default to index `{index}`.
pub const BULK_INDEX: &str = "/{index}/_bulk";
/// `GET` with [`SearchParams`]; answers [`SearchResponse`].
pub const SEARCH: &str = "/api/v1/search";
/// `GET` with [`HistogramParams`]; answers [`HistogramResponse`].
pub const HISTOGRAM: &str = "/api/v1/histogram";
/// `GET` with [`TermsParams`]; answers [`TermsResponse`].
pub const TERMS: &str = "/api/v1/terms";
/// `GET /api/v1/context/{id}` with [`ContextParams`]; answers [`ContextResponse`].
pub const CONTEXT: &str = "/api/v1/context/{id}";
/// `GET /api/v1/trace/{id}` with [`TraceParams`]; answers [`TraceResponse`].
pub const TRACE: &str = "/api/v1/trace/{id}";
/// `GET` with [`TailParams`]: server-sent events, one hit (as JSON) per `data:` event,
/// `event: skipped` with a count, `event: error` with a message.
pub const TAIL: &str = "/api/v1/tail";
/// `GET`: [`Health`], 200 while all is well and 503 once an operator must act.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: Prometheus text.
pub const METRICS: &str = "/metrics";

/// Which token a request to `path` needs, when the server has token files: the ingest
/// routes an ingest token, `/healthz` none (orchestrators' probes carry no credentials),
/// `/` either (Elasticsearch clients such as Vector and Filebeat ask it for the version,
/// with their ingest credentials, before shipping), everything else — searches, metrics,
/// repair reads, and paths that match no route — a read token.
pub fn token_for(path: &str) -> Token {
    if path == HEALTHZ {
        Token::None
    } else if path == "/" {
        Token::Either
    } else if path == INGEST || path == BULK || is_bulk_index(path) {
        Token::Ingest
    } else {
        Token::Read
    }
}

/// `/{index}/_bulk`: one non-empty segment, then `_bulk`.
fn is_bulk_index(path: &str) -> bool {
    path.strip_suffix("/_bulk")
        .and_then(|p| p.strip_prefix('/'))
        .is_some_and(|index| !index.is_empty() && !index.contains('/'))
}

/// What [`token_for`] says a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    None,
    Ingest,
    Read,
    /// An ingest or a read token.
    Either,
}

/// `path` (one of the routes above) with `{id}` or `{index}` filled in, escaped.
pub fn path_with(path: &str, value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    match path.find('{').zip(path.find('}')) {
        Some((a, b)) if a < b => format!("{}{}{}", &path[..a], escaped, &path[b + 1..]),
        _ => path.to_string(),
    }
}

/// The most hits one search, context side or page returns.
pub const MAX_LIMIT: usize = 10_000;
/// The most hits one trace returns.
pub const MAX_TRACE_LIMIT: usize = 100_000;
/// The most histogram buckets.
pub const MAX_BUCKETS: usize = 10_000;
/// The most terms one terms request returns.
pub const MAX_TERMS: usize = 1_000;

/// Sort order of hits by (`ts`, arrival).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// Which neighbours `context` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Same host and service.
    #[default]
    Service,
    /// Same host.
    Host,
    /// Same trace or request id.
    Request,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Service, Scope::Host, Scope::Request];

    /// The name used in query strings.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Service => "service",
            Scope::Host => "host",
            Scope::Request => "request",
        }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn default_limit() -> usize {
    100
}
fn is_default_limit(v: &usize) -> bool {
    *v == default_limit()
}
fn default_buckets() -> usize {
    60
}
fn default_size() -> usize {
    10
}
fn default_neighbours() -> usize {
    10
}
fn default_trace_limit() -> usize {
    10_000
}

/// Parameters of [`SEARCH`]. Times (`start`, `end`) are RFC 3339, epoch numbers or
/// relative (`now-15m`); absent means unbounded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The query (DESIGN.md "Query language"); empty matches everything.
    #[serde(default)]
    pub q: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// At most [`MAX_LIMIT`].
    #[serde(default = "default_limit", skip_serializing_if = "is_default_limit")]
    pub limit: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub order: Order,
    /// From the previous page's answer, to read the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Cut each hit's message to this many bytes (lists show only the start of long ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            q: String::new(),
            start: None,
            end: None,
            limit: default_limit(),
            order: Order::Desc,
            cursor: None,
            max_message_bytes: None,
        }
    }
}

/// Parameters of [`HISTOGRAM`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramParams {
    #[serde(default)]
    pub q: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// About this many buckets, of a round width; at most [`MAX_BUCKETS`].
    #[serde(default = "default_buckets")]
    pub buckets: usize,
}

/// Parameters of [`TERMS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsParams {
    /// A columnar field ([`crate::Field::fast`]), or `fields.NAME` for a key of a
    /// record's `fields`.
    pub field: String,
    #[serde(default)]
    pub q: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// At most [`MAX_TERMS`].
    #[serde(default = "default_size")]
    pub size: usize,
}

/// Parameters of [`CONTEXT`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextParams {
    #[serde(default = "default_neighbours")]
    pub before: usize,
    #[serde(default = "default_neighbours")]
    pub after: usize,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
}

/// Parameters of [`TRACE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceParams {
    /// At most [`MAX_TRACE_LIMIT`].
    #[serde(default = "default_trace_limit")]
    pub limit: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
}

/// Parameters of [`TAIL`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailParams {
    #[serde(default)]
    pub q: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
}

/// A stored record as a search returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The record's id (for [`CONTEXT`]): from an indexer, its own numeric id, which differs
    /// between replicas; from `sawmill query`, a [`RecordId`] that names the group and,
    /// when the record has a key, finds it on any replica of the group.
    #[serde(rename = "_id")]
    pub id: String,
    /// The message was cut to the request's `max_message_bytes`.
    #[serde(
        rename = "_message_cut",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub message_cut: bool,
    #[serde(flatten)]
    pub record: Record<'static>,
}

/// The answer of [`SEARCH`]. `H` is how a reader takes each hit: [`Hit`], or a type that
/// reads hits one by one so that one stored record that does not fit costs that record, not
/// the answer (the UI's, for records written by an older or a foreign indexer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse<H = Hit> {
    /// Every match in the range, not only those returned.
    pub total: u64,
    pub hits: Vec<H>,
    pub took_ms: u64,
    /// Present when more hits may follow: pass it back for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Set by `sawmill query` when a group did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// What a fan-out over the cluster's groups could not ask: the answer is still given (200)
/// from the groups that answered, and says which did not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// Groups none of whose replicas answered, sorted.
    pub missing_groups: Vec<String>,
}

/// One bar of a histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's start, RFC 3339.
    pub ts: String,
    pub count: u64,
}

/// The answer of [`HISTOGRAM`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistogramResponse {
    pub interval_ms: i64,
    pub buckets: Vec<Bucket>,
    pub total: u64,
    pub took_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// One value of a terms answer and how many matches hold it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TermCount {
    pub value: String,
    pub count: u64,
}

/// The answer of [`TERMS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TermsResponse {
    pub field: String,
    /// Most frequent first.
    pub values: Vec<TermCount>,
    /// Matches whose value is not among `values`.
    pub other: u64,
    /// Matches without the field.
    pub missing: u64,
    pub took_ms: u64,
    /// Set by `sawmill query` when the merged counts may be off: each group gave only its
    /// own top values, so a value just below one group's cut is undercounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// The answer of [`CONTEXT`]: the anchor and its neighbours, oldest first. `H` as in
/// [`SearchResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextResponse<H = Hit> {
    pub anchor: H,
    pub before: Vec<H>,
    pub after: Vec<H>,
    pub took_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// The answer of [`TRACE`]: every record of one request, oldest first. `H` as in
/// [`SearchResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceResponse<H = Hit> {
    pub id: String,
    pub total: u64,
    pub hits: Vec<H>,
    pub took_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// A record's id on one indexer, as [`CONTEXT`] takes it (`{id}`). The key-based forms name
/// the same record on every replica of its group, so a link survives a failover.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LocalId {
    /// `s~SEQ~SRC`: a sender's record, by its idempotency key (`_src`, `_seq`).
    Seq { src: String, seq: u64 },
    /// `d~KEY`: a record with an explicit document id (`_key`, from a bulk `_id`).
    Doc(String),
    /// `r~REPLICA~RID`: a record without a key, by the id replica `REPLICA` gave it. Only
    /// that replica can find it.
    Replica { replica: String, rid: u64 },
    /// `RID`: the numeric id the answering replica gave it (a hit's `_id` from an indexer).
    Rid(u64),
}

/// A record's id across the cluster, as `sawmill query` gives hits: `{group}~{local}`.
/// Group names hold no `~` (letters, digits, `.`, `_`, `-`), so the first `~` ends it.
/// `local` is never a bare [`LocalId::Rid`]: that number is one replica's own, and another
/// replica of the group would find a different record under it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordId {
    pub group: String,
    pub local: LocalId,
}

/// Why a string is not a record id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadId(pub String);

impl std::fmt::Display for BadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not a record id (the `_id` of a hit)", self.0)
    }
}

impl std::error::Error for BadId {}

impl std::fmt::Display for LocalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalId::Seq { src, seq } => write!(f, "s~{seq}~{src}"),
            LocalId::Doc(key) => write!(f, "d~{key}"),
            LocalId::Replica { replica, rid } => write!(f, "r~{replica}~{rid}"),
            LocalId::Rid(rid) => write!(f, "{rid}"),
        }
    }
}

impl std::str::FromStr for LocalId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<LocalId, BadId> {
        let bad = || BadId(s.to_string());
        let num = |v: &str| -> Result<u64, BadId> {
            // `+1` and `01` parse as numbers but would be a second spelling of one id.
            if v.is_empty()
                || !v.bytes().all(|b| b.is_ascii_digit())
                || (v.len() > 1 && v.starts_with('0'))
            {
                return Err(bad());
            }
            v.parse().map_err(|_| bad())
        };
        match s.split_once('~') {
            None => num(s).map(LocalId::Rid),
            Some(("s", rest)) => {
                let (seq, src) = rest.split_once('~').ok_or_else(bad)?;
                if src.is_empty() {
                    return Err(bad());
                }
                Ok(LocalId::Seq {
                    src: src.to_string(),
                    seq: num(seq)?,
                })
            }
            Some(("d", key)) if !key.is_empty() => Ok(LocalId::Doc(key.to_string())),
            Some(("r", rest)) => {
                let (replica, rid) = rest.split_once('~').ok_or_else(bad)?;
                if replica.is_empty() {
                    return Err(bad());
                }
                Ok(LocalId::Replica {
                    replica: replica.to_string(),
                    rid: num(rid)?,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl LocalId {
    /// The id of a hit an indexer gave: key-based when the record has a key (`_src` with
    /// `_seq`, else `_key`), else the id `rid` that replica `replica` gave it.
    pub fn of_hit(
        src: Option<&str>,
        seq: Option<u64>,
        doc_key: Option<&str>,
        replica: &str,
        rid: u64,
    ) -> LocalId {
        match (
            src.filter(|s| !s.is_empty()),
            seq,
            doc_key.filter(|k| !k.is_empty()),
        ) {
            (Some(src), Some(seq), _) => LocalId::Seq {
                src: src.to_string(),
                seq,
            },
            (_, _, Some(key)) => LocalId::Doc(key.to_string()),
            _ => LocalId::Replica {
                replica: replica.to_string(),
                rid,
            },
        }
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}~{}", self.group, self.local)
    }
}

impl std::str::FromStr for RecordId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<RecordId, BadId> {
        let bad = || BadId(s.to_string());
        let (group, local) = s.split_once('~').ok_or_else(bad)?;
        if group.is_empty() {
            return Err(bad());
        }
        match local.parse().map_err(|_| bad())? {
            // Each replica numbers its records its own way: `GROUP~RID` would find a
            // different record on each replica of the group.
            LocalId::Rid(_) => Err(bad()),
            local => Ok(RecordId {
                group: group.to_string(),
                local,
            }),
        }
    }
}

/// A line [`INGEST`] refused, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedLine {
    /// 1-based line number in the body.
    pub line: usize,
    pub error: String,
}

/// The answer of [`INGEST`]: every line is accepted, a duplicate of one already stored, or
/// rejected with its reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<RejectedLine>,
}

/// The answer of [`HEALTHZ`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` with a `problem`.
    pub status: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// How far into its log the indexer's searches reach.
    pub searchable_position: u64,
    /// The replica's id: kept in its data directory, new with a new, empty one.
    #[serde(default)]
    pub replica: String,
    /// The replica group it belongs to: replicas of a group hold the same records.
    #[serde(default)]
    pub group: String,
    /// Records its peers hold that it does not, as of the last comparison (see
    /// [`REPAIR_HOLDINGS`]); absent while it has no peer or has not compared yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_records: Option<u64>,
    /// With peers: from its start until a comparison found nothing missing (it answers
    /// searches meanwhile, but they may miss records).
    #[serde(default)]
    pub catching_up: bool,
    /// With `--object-store`: how far uploads to it are behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreHealth>,
}

/// The object store's side of an indexer's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// `s3://BUCKET/PREFIX/GROUP`: where the group's splits and manifest are.
    pub url: String,
    /// Splits the group's manifest lists, as last read.
    pub splits: u64,
    /// Local partitions holding records no split holds yet.
    pub unsealed_partitions: u64,
    /// Of those, the ones due for sealing (older than `--seal-after`) but not uploaded yet:
    /// 0 when uploads keep up.
    pub upload_lag_partitions: u64,
    /// The last failure talking to the store or reading a split from it, until the next
    /// success of the same kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Repair: what replicas of one group ask each other to find and copy what they miss.
// ---------------------------------------------------------------------------------------

/// `GET` with [`RepairHoldingsParams`]: [`Holdings`], what this replica holds, a page of
/// senders at a time (the client asks again with `after` = the answer's `next`).
pub const REPAIR_HOLDINGS: &str = "/api/v1/repair/holdings";
/// `GET` with [`RepairRecordsParams`]: the stored records of one sender in a `_seq` range,
/// the lowest `limit` of them, lowest `_seq` first, as NDJSON in the stored form (with
/// `_src`/`_seq`); only committed records, so a copy never holds what its source could lose.
/// An answer stops early at about [`MAX_REPAIR_ANSWER_BYTES`]: the client asks again from
/// the last `_seq` it got plus one.
pub const REPAIR_RECORDS: &str = "/api/v1/repair/records";
/// `GET` with [`RepairKeysParams`]: [`RepairKeys`], the `_key`s of one partition in order.
pub const REPAIR_KEYS: &str = "/api/v1/repair/keys";
/// `POST` a [`RepairByKey`] body (at most [`MAX_REPAIR_BY_KEY_BODY`] bytes), with
/// [`RepairPeerParams`]: the stored records with those `_key`s, as NDJSON, stopping early
/// at about [`MAX_REPAIR_ANSWER_BYTES`] (the client asks again for the keys it did not get).
pub const REPAIR_BY_KEY: &str = "/api/v1/repair/by-key";

/// The size past which a repair answer of records takes no further record (the first one
/// is always sent, whatever its size), so an answer stays near this size.
pub const MAX_REPAIR_ANSWER_BYTES: usize = 8 << 20;
/// The largest [`REPAIR_BY_KEY`] body a replica takes.
pub const MAX_REPAIR_BY_KEY_BODY: usize = 4 << 20;

/// The most records or keys one repair request returns.
pub const MAX_REPAIR_LIMIT: usize = 10_000;
/// The most `_seq` ranges one [`Holdings`] page lists (a sender with more is cut to these,
/// so a peer may copy its tail from another replica or not at all).
pub const MAX_HOLDINGS_RANGES: usize = 100_000;

/// What a replica holds: per sender its `_seq` values as inclusive ranges, and per
/// partition a digest of its `_key` (bulk `_id`) records. Records with neither key cannot
/// be compared, so they are never repaired.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Holdings {
    pub replica: String,
    pub group: String,
    pub sources: Vec<SourceRanges>,
    /// Listed on the first page only.
    pub partitions: Vec<KeyDigest>,
    /// More senders follow: ask again with this as `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The parameters of [`REPAIR_HOLDINGS`]: the senders after `after` (from the first without
/// it); `replica` is the replica the client means to ask.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairHoldingsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// One sender's `_seq` values, as sorted, disjoint inclusive `[first, last]` ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRanges {
    pub src: String,
    pub ranges: Vec<[u64; 2]>,
}

/// The `_key` records of one partition: how many, and an order-independent hash of their
/// keys, so replicas list keys only for the partitions that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDigest {
    /// The partition's start, epoch seconds.
    pub start: i64,
    pub count: u64,
    pub hash: u64,
}

/// The parameters of [`REPAIR_RECORDS`]: sender `src`, `_seq` from `from` to `to`
/// inclusive, at most `limit` records; `replica` is the replica the client means to ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRecordsParams {
    pub src: String,
    pub from: u64,
    pub to: u64,
    #[serde(default = "default_repair_limit")]
    pub limit: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// The parameters of [`REPAIR_BY_KEY`]: `replica`, the replica the client means to ask.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairPeerParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// The parameters of [`REPAIR_KEYS`]: partition `start`, keys after `after`; `replica` is
/// the replica the client means to ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairKeysParams {
    pub start: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default = "default_repair_limit")]
    pub limit: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

fn default_repair_limit() -> usize {
    1000
}

/// The answer of [`REPAIR_KEYS`]: keys in byte order; `next` is the `after` of the next page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairKeys {
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The body of [`REPAIR_BY_KEY`]: `_key`s of partition `start`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairByKey {
    pub start: i64,
    pub keys: Vec<String>,
}

/// The body of every error answer, whatever the route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
    /// The HTTP status, repeated for clients that only see the body.
    pub status: u16,
}

impl ErrorBody {
    /// The message of an error answer's body; the start of the body as text when it is not
    /// one (a proxy's page, say).
    pub fn message_of(body: &[u8]) -> String {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => e.error,
            Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_its_token() {
        for (path, token) in [
            (INGEST, Token::Ingest),
            (BULK, Token::Ingest),
            ("/logs-2026/_bulk", Token::Ingest),
            ("//_bulk", Token::Read),
            ("/a/b/_bulk", Token::Read),
            (SEARCH, Token::Read),
            (METRICS, Token::Read),
            (REPAIR_BY_KEY, Token::Read),
            ("/api/v1/context/abc", Token::Read),
            ("/no/such/route", Token::Read),
            (HEALTHZ, Token::None),
            ("/", Token::Either),
        ] {
            assert_eq!(token_for(path), token, "{path}");
        }
    }

    #[test]
    fn ids_are_escaped_into_paths() {
        assert_eq!(path_with(CONTEXT, "12"), "/api/v1/context/12");
        assert_eq!(path_with(TRACE, "a b/c"), "/api/v1/trace/a%20b%2Fc");
        assert_eq!(path_with(BULK_INDEX, "logs"), "/logs/_bulk");
        assert_eq!(path_with(SEARCH, "x"), SEARCH);
    }

    #[test]
    fn hits_carry_their_id_beside_the_record() {
        let j = r#"{"_id":"5","ts":"2026-11-30T07:00:00.000000000Z","message":"m","severity":"err","_src":"s","_seq":3,"_message_cut":true}"#;
        let h: Hit = serde_json::from_str(j).unwrap();
        assert_eq!(h.id, "5");
        assert!(h.message_cut);
        assert_eq!(h.record.severity, Some(crate::Severity::Err));
        assert_eq!(h.record.key.as_ref().map(|k| k.seq), Some(3));
        let back: Hit = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn a_reader_may_take_hits_its_own_way() {
        let j =
            r#"{"total":2,"hits":[{"_id":"1","message":"m"},{"_id":"2","message":5}],"took_ms":1}"#;
        assert!(serde_json::from_str::<SearchResponse>(j).is_err());
        let lenient: SearchResponse<serde_json::Value> = serde_json::from_str(j).unwrap();
        let typed: Vec<bool> = lenient
            .hits
            .into_iter()
            .map(|h| serde_json::from_value::<Hit>(h).is_ok())
            .collect();
        assert_eq!(typed, [true, false]);
    }

    #[test]
    fn default_parameters_are_left_out_of_requests() {
        let p = SearchParams {
            q: "a".into(),
            ..SearchParams::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v, serde_json::json!({"q": "a"}));
        assert!(serde_json::from_str::<SearchParams>(r#"{"q":"a","nope":1}"#).is_err());
    }

    #[test]
    fn record_ids_read_back_in_every_form() {
        for s in ["g0~s~12~host-a", "g0~s~0~a~b", "g.1~d~logs/7", "g~r~ab12~5"] {
            let id: RecordId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        for bad in [
            "", "g0", "~5", "g~", "g~s~1~", "g~s~x~a", "g~r~~1", "g~d~", "g~01", "g~+1", "g~q~1",
            "g~9",
        ] {
            assert!(bad.parse::<RecordId>().is_err(), "{bad} parsed");
        }
        assert_eq!("7".parse::<LocalId>(), Ok(LocalId::Rid(7)));
    }

    /// A URL path segment's bytes, `%XX` decoded (as axum's `Path` does).
    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn record_ids_round_trip(
            group in "[A-Za-z0-9._-]{1,64}",
            src in "\\PC{1,40}",
            key in "\\PC{1,40}",
            replica in "[a-f0-9]{1,32}",
            n in proptest::num::u64::ANY,
            form in 0..4u8,
        ) {
            let local = match form {
                0 => LocalId::Seq { src, seq: n },
                1 => LocalId::Doc(key),
                2 => LocalId::Replica { replica, rid: n },
                _ => LocalId::Rid(n),
            };
            let id = RecordId { group, local };
            let text = id.to_string();
            if form == 3 {
                // A bare numeric id is one replica's own: not a cluster-wide id.
                proptest::prop_assert!(text.parse::<RecordId>().is_err());
            } else {
                proptest::prop_assert_eq!(text.parse::<RecordId>(), Ok(id.clone()));
                // Through a URL path and back, as a record link carries it.
                let path = path_with(CONTEXT, &text);
                let segment = path.strip_prefix("/api/v1/context/").unwrap();
                proptest::prop_assert_eq!(percent_decode(segment).parse::<RecordId>(), Ok(id.clone()));
            }
            proptest::prop_assert_eq!(id.local.to_string().parse::<LocalId>(), Ok(id.local));
        }
    }

    #[test]
    fn error_bodies_are_read_or_quoted() {
        assert_eq!(
            ErrorBody::message_of(br#"{"error":"bad","status":400}"#),
            "bad"
        );
        assert_eq!(ErrorBody::message_of(b"<html>"), "<html>");
    }
}
