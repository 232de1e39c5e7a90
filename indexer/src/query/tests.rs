//! The query language against a naive scan of the same records, and against hostile input.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value as Json};
use tantivy::collector::DocSetCollector;
use tantivy::{Index, IndexReader, TantivyDocument};
use time::OffsetDateTime;

use super::*;
use crate::record::Record;
use sawmill_record::Severity;

// ---- limits: the inputs that used to abort the process -------------------------------

fn message(q: &str) -> String {
    match parse(q) {
        Err(Error::BadQuery { message, .. }) => message,
        other => panic!("`{}` should be refused, got {other:?}", shorten(q)),
    }
}

#[test]
fn deep_nesting_is_refused_with_the_limit_named() {
    // Regression: 2,200 nested `(` overflowed tantivy's parser's stack and aborted.
    let q = format!("{}a{}", "(".repeat(2200), ")".repeat(2200));
    assert!(message(&q).contains(&format!("limit of {MAX_DEPTH}")));
    let q = "(".repeat(4500);
    assert!(message(&q).contains(&format!("limit of {MAX_DEPTH}")));
    // Just inside the limit still works.
    let q = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&q).is_ok());
}

#[test]
fn long_chains_of_not_cost_no_stack() {
    // Regression: `NOT ` × 5000 overflowed the stack.
    assert!(message(&"NOT ".repeat(5000)).contains("clause is missing"));
    let q = format!("{}alpha", "NOT ".repeat(5000));
    assert_eq!(
        parse(&q).unwrap(),
        Ast::Leaf {
            field: None,
            value: Value::Word("alpha".into())
        }
    );
}

#[test]
fn size_and_clause_limits_are_named() {
    let q = "a ".repeat(MAX_QUERY_BYTES);
    assert!(message(&q).contains(&format!("{MAX_QUERY_BYTES} bytes")));
    let q = "a ".repeat(MAX_CLAUSES + 1);
    assert!(message(&q).contains(&format!("limit of {MAX_CLAUSES}")));
    let q = format!("{}*", "a".repeat(MAX_PATTERN_BYTES));
    assert!(message(&q).contains(&format!("limit of {MAX_PATTERN_BYTES}")));
    assert!(message("alpha~3").contains("0, 1 or 2"));
}

#[test]
fn what_can_never_work_is_refused_with_the_reason() {
    let f = Fields::new();
    let refused = |q: &str| match compile(q, &f) {
        Err(Error::BadQuery { message, .. }) => message,
        Err(e) => panic!("`{q}`: {e}"),
        Ok(_) => panic!("`{}` should be refused", shorten(q)),
    };
    // Review: a NUL in a JSON path tripped an assertion inside tantivy (a 500, or a dead
    // tail connection).
    assert!(refused("fields.a\0b:1").contains("control"));
    assert!(refused("host:/web-[0-9]+/").contains("regular expressions"));
    assert!(refused("fields.*:x").contains("field names"));
    // The index leaves out words of 40 bytes or more: a query for one would answer 0.
    let sha = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
    assert!(refused(&format!("error AND {sha}")).contains("40 bytes"));
    assert!(refused(&format!("{sha}*")).contains("40 bytes"));
    assert!(
        compile(&format!("trace_id:{sha}"), &f).is_ok(),
        "exact fields keep long values"
    );
    // Each wildcard reads part of a term dictionary: at most 16 in one query.
    assert!(refused(&"*e* ".repeat(MAX_SCANS + 1)).contains("limit of 16"));
    assert!(compile(&"*e* ".repeat(MAX_SCANS), &f).is_ok());
    assert!(refused(&format!("host:{}~1", "a".repeat(MAX_PATTERN_BYTES + 1))).contains("limit"));
}

#[test]
fn operator_words_joined_to_a_word_are_part_of_it() {
    // `NOT-FOUND` is one word, as Lucene reads it, not `NOT -FOUND`.
    assert_eq!(
        parse("NOT-FOUND").unwrap(),
        Ast::Leaf {
            field: None,
            value: Value::Word("NOT-FOUND".into())
        }
    );
    assert_eq!(parse("host: h1").unwrap(), parse("host:h1").unwrap());
}

#[test]
fn the_grammar_reads_as_kibana_users_write_it() {
    let leaf = |f: Option<&str>, v: Value| Ast::Leaf {
        field: f.map(str::to_string),
        value: v,
    };
    let w = |s: &str| Value::Word(s.into());
    assert_eq!(parse("").unwrap(), Ast::All);
    assert_eq!(parse(" * ").unwrap(), Ast::All);
    assert_eq!(parse("*:*").unwrap(), Ast::All);
    assert_eq!(
        parse("a b OR c").unwrap(),
        Ast::Or(vec![
            Ast::And(vec![leaf(None, w("a")), leaf(None, w("b"))]),
            leaf(None, w("c"))
        ])
    );
    assert_eq!(
        parse("service:api AND NOT -x").unwrap(),
        Ast::And(vec![leaf(Some("service"), w("api")), leaf(None, w("x"))])
    );
    assert_eq!(
        parse("fields.x:*").unwrap(),
        leaf(Some("fields.x"), Value::Exists)
    );
    assert_eq!(
        parse("_exists_:fields.x").unwrap(),
        leaf(Some("fields.x"), Value::Exists)
    );
    assert_eq!(
        parse(r"host:h1* a\*b").unwrap(),
        Ast::And(vec![
            leaf(
                Some("host"),
                Value::Pattern(vec![Piece::Char('h'), Piece::Char('1'), Piece::Any])
            ),
            leaf(None, w("a*b")),
        ])
    );
    assert_eq!(
        parse("alpha~1").unwrap(),
        leaf(
            None,
            Value::Fuzzy {
                text: "alpha".into(),
                distance: 1
            }
        )
    );
    assert_eq!(
        parse("pid:[1 TO 5} ts:>=now-1h").unwrap(),
        Ast::And(vec![
            leaf(
                Some("pid"),
                Value::Range {
                    lo: Bound::Included("1".into()),
                    hi: Bound::Excluded("5".into())
                }
            ),
            leaf(
                Some("ts"),
                Value::Range {
                    lo: Bound::Included("now-1h".into()),
                    hi: Bound::Unbounded
                }
            ),
        ])
    );
    assert_eq!(
        parse("service:(a OR b)").unwrap(),
        Ast::Or(vec![
            leaf(Some("service"), w("a")),
            leaf(Some("service"), w("b"))
        ])
    );
    for bad in [
        "(a",
        "a)",
        "AND",
        "a AND",
        "OR b",
        "\"open",
        "x:",
        "pid:[1 5]",
        "a\\",
    ] {
        assert!(parse(bad).is_err(), "`{bad}` should not parse");
    }
}

#[test]
fn glob_matches_as_wildcards_mean() {
    let p = |s: &str| -> Vec<Piece> {
        s.chars()
            .map(|c| match c {
                '*' => Piece::Any,
                '?' => Piece::One,
                c => Piece::Char(c),
            })
            .collect()
    };
    for (pat, text, want) in [
        ("a*", "alpha", true),
        ("a*", "", false),
        ("*", "", true),
        ("?", "é", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*ph*", "alpha", true),
        ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ("al*a", "alpha", true),
        ("al*a", "alphab", false),
    ] {
        assert_eq!(glob(&p(pat), text), want, "`{pat}` against `{text}`");
    }
}

#[test]
fn query_words_are_cut_as_the_index_cuts_them() {
    let mut index = tantivy::tokenizer::TokenizerManager::default()
        .get("default")
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let alphabet: Vec<char> = "aZ9 -_.:/éÄß漢字\u{1F600}\t,".chars().collect();
    for _ in 0..20_000 {
        let text: String = (0..rng.usize(0..60))
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let mut want = Vec::new();
        index
            .token_stream(&text)
            .process(&mut |t| want.push((t.position, t.text.clone())));
        // Ours keeps long words (to refuse them); the index drops them.
        let ours: Vec<_> = tokens(&text)
            .into_iter()
            .filter(|(_, t)| t.len() < MAX_WORD_BYTES)
            .collect();
        assert_eq!(ours, want, "`{text}`");
    }
}

// ---- the same answers as a naive scan ----------------------------------------------

const WORDS: [&str; 10] = [
    "alpha", "alphabet", "alps", "beta", "bet", "Gamma", "delta", "deltas", "epsilon", "alpha1",
];
const SERVICES: [&str; 5] = ["api", "apps", "auth", "web", "web-1"];
const HOSTS: [&str; 4] = ["h1", "h12", "h2", "host.a"];
/// Ways to write each severity; index modulo 8 is its rank.
const SEVERITY_WORDS: [&str; 24] = [
    "emerg",
    "alert",
    "crit",
    "err",
    "warning",
    "notice",
    "info",
    "debug",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "panic",
    "alert",
    "fatal",
    "error",
    "warn",
    "notice",
    "information",
    "trace",
];

struct Corpus {
    records: Vec<Json>,
    reader: IndexReader,
    fields: Fields,
}

/// 300 records drawn from a small vocabulary, so generated queries often match something,
/// indexed with the indexer's own schema into one segment (doc id = position).
fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let mut rng = fastrand::Rng::with_seed(7);
        let fields = Fields::new();
        let index = Index::create_in_ram(fields.schema.clone());
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let mut records = Vec::new();
        for i in 0..300u64 {
            let n = rng.usize(1..6);
            let msg: Vec<&str> = (0..n).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
            let sep = if rng.bool() { " " } else { "-" };
            let mut obj = Map::new();
            obj.insert("message".into(), json!(msg.join(sep)));
            if rng.u8(..10) < 8 {
                obj.insert(
                    "service".into(),
                    json!(SERVICES[rng.usize(..SERVICES.len())]),
                );
            }
            obj.insert("host".into(), json!(HOSTS[rng.usize(..HOSTS.len())]));
            if rng.u8(..10) < 9 {
                obj.insert(
                    "severity".into(),
                    json!(Severity::ALL[rng.usize(..8)].name()),
                );
            }
            if rng.bool() {
                obj.insert("pid".into(), json!(rng.u64(1..20)));
            }
            let mut f = Map::new();
            if rng.bool() {
                f.insert("user".into(), json!(WORDS[rng.usize(..WORDS.len())]));
            }
            if rng.bool() {
                f.insert("status".into(), json!([200, 404, 500][rng.usize(..3)]));
            }
            obj.insert("fields".into(), Json::Object(f));
            let r = Record::from_object(obj, now).unwrap();
            writer.add_document(fields.document(i, &r)).unwrap();
            records.push(serde_json::from_str(&r.source).unwrap());
        }
        writer.commit().unwrap();
        let reader = index.reader().unwrap();
        Corpus {
            records,
            reader,
            fields,
        }
    })
}

fn tantivy_matches(c: &Corpus, q: &str) -> Result<BTreeSet<usize>> {
    let query = compile(q, &c.fields)?;
    let searcher = c.reader.searcher();
    let docs = searcher.search(query.as_ref(), &DocSetCollector)?;
    Ok(docs.into_iter().map(|d| d.doc_id as usize).collect())
}

/// The reference: every record checked one by one, with none of the code under test.
mod naive {
    use super::*;

    pub fn words(s: &str) -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    pub fn glob(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| glob(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && glob(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && glob(rest, &t[1..]),
        }
    }

    /// Optimal string alignment distance (adjacent transpositions cost one).
    pub fn distance(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }

    /// What a generated leaf asks, in the test's own terms.
    #[derive(Clone, Debug)]
    pub enum Leaf {
        Word(String),
        Pattern(String),
        Phrase(Vec<String>),
        Fuzzy(String, u8),
        Range(Bound<String>, Bound<String>),
        Exists,
    }

    #[derive(Clone, Debug)]
    pub enum Q {
        And(Vec<Q>),
        Or(Vec<Q>),
        Not(Box<Q>),
        Leaf(&'static str, Leaf),
    }

    fn in_range(v: &str, lo: &Bound<String>, hi: &Bound<String>) -> bool {
        let above = match lo {
            Bound::Unbounded => true,
            Bound::Included(l) => v >= l.as_str(),
            Bound::Excluded(l) => v > l.as_str(),
        };
        let below = match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => v <= h.as_str(),
            Bound::Excluded(h) => v < h.as_str(),
        };
        above && below
    }

    fn num_in_range(v: u64, lo: &Bound<String>, hi: &Bound<String>) -> bool {
        let n = |s: &String| s.parse::<u64>().unwrap();
        (match lo {
            Bound::Unbounded => true,
            Bound::Included(l) => v >= n(l),
            Bound::Excluded(l) => v > n(l),
        }) && (match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => v <= n(h),
            Bound::Excluded(h) => v < n(h),
        })
    }

    /// Words: analyzed text (message, fields.user); a single token everywhere it is used.
    fn text_matches(text: Option<&str>, leaf: &Leaf) -> bool {
        let Some(text) = text else { return false };
        let toks = words(text);
        match leaf {
            Leaf::Word(w) => toks.contains(&w.to_lowercase()),
            Leaf::Pattern(p) => {
                let p: Vec<char> = p.to_lowercase().chars().collect();
                toks.iter()
                    .any(|t| glob(&p, &t.chars().collect::<Vec<_>>()))
            }
            Leaf::Phrase(ws) => {
                let ws: Vec<String> = ws.iter().map(|w| w.to_lowercase()).collect();
                toks.windows(ws.len()).any(|win| win == ws.as_slice())
            }
            Leaf::Fuzzy(w, d) => toks
                .iter()
                .any(|t| distance(t, &w.to_lowercase()) <= *d as usize),
            Leaf::Exists => true,
            Leaf::Range(..) => unreachable!("not generated for text"),
        }
    }

    fn keyword_matches(v: Option<&str>, leaf: &Leaf) -> bool {
        let Some(v) = v else { return false };
        match leaf {
            Leaf::Word(w) => v == w,
            Leaf::Phrase(ws) => v == ws.join(" "),
            Leaf::Pattern(p) => glob(
                &p.chars().collect::<Vec<_>>(),
                &v.chars().collect::<Vec<_>>(),
            ),
            Leaf::Fuzzy(w, d) => distance(v, w) <= *d as usize,
            Leaf::Range(lo, hi) => in_range(v, lo, hi),
            Leaf::Exists => true,
        }
    }

    pub fn eval(q: &Q, r: &Json) -> bool {
        match q {
            Q::And(items) => items.iter().all(|i| eval(i, r)),
            Q::Or(items) => items.iter().any(|i| eval(i, r)),
            Q::Not(inner) => !eval(inner, r),
            Q::Leaf(field, leaf) => match *field {
                "message" => text_matches(r["message"].as_str(), leaf),
                "service" | "host" => keyword_matches(r[*field].as_str(), leaf),
                "severity" => {
                    let Some(v) = r["severity"].as_str() else {
                        return false;
                    };
                    let rank = |s: &str| SEVERITY_WORDS.iter().position(|w| *w == s).unwrap() % 8;
                    let have = rank(v);
                    match leaf {
                        Leaf::Word(w) => rank(w) == have,
                        Leaf::Exists => true,
                        Leaf::Range(lo, hi) => {
                            (match lo {
                                Bound::Unbounded => true,
                                Bound::Included(l) => have >= rank(l),
                                Bound::Excluded(l) => have > rank(l),
                            }) && (match hi {
                                Bound::Unbounded => true,
                                Bound::Included(h) => have <= rank(h),
                                Bound::Excluded(h) => have < rank(h),
                            })
                        }
                        _ => unreachable!("not generated for severity"),
                    }
                }
                "pid" => match (r["pid"].as_u64(), leaf) {
                    (None, _) => false,
                    (Some(v), Leaf::Word(w)) => w.parse::<u64>() == Ok(v),
                    (Some(v), Leaf::Range(lo, hi)) => num_in_range(v, lo, hi),
                    (Some(_), Leaf::Exists) => true,
                    _ => unreachable!("not generated for pid"),
                },
                "fields.user" => text_matches(r["fields"]["user"].as_str(), leaf),
                "fields.status" => match (&r["fields"]["status"], leaf) {
                    (Json::Null, _) => false,
                    (_, Leaf::Exists) => true,
                    (v, Leaf::Word(w)) => v.as_u64().map(|n| n.to_string()).as_ref() == Some(w),
                    _ => unreachable!("not generated for fields.status"),
                },
                other => unreachable!("no such generated field {other}"),
            },
        }
    }

    fn bound(b: &Bound<String>, open: char, close: char, lo: bool) -> (String, char) {
        match b {
            Bound::Unbounded => ("*".into(), if lo { open } else { close }),
            Bound::Included(v) => (v.clone(), if lo { '[' } else { ']' }),
            Bound::Excluded(v) => (v.clone(), if lo { '{' } else { '}' }),
        }
    }

    /// Writes the query as a user would, in one of several equivalent spellings.
    pub fn render(q: &Q, style: u32) -> String {
        let sub = |i: &Q| match i {
            Q::Leaf(..) => render(i, style),
            _ => format!("({})", render(i, style)),
        };
        match q {
            Q::And(items) => {
                let sep = if style.is_multiple_of(2) {
                    " AND "
                } else if style.is_multiple_of(3) {
                    " && "
                } else {
                    " "
                };
                items.iter().map(sub).collect::<Vec<_>>().join(sep)
            }
            Q::Or(items) => {
                let sep = if style.is_multiple_of(3) {
                    " || "
                } else {
                    " OR "
                };
                items.iter().map(sub).collect::<Vec<_>>().join(sep)
            }
            Q::Not(inner) => {
                let neg = if style.is_multiple_of(5) {
                    "-"
                } else if style.is_multiple_of(11) {
                    "!"
                } else {
                    "NOT "
                };
                format!("{neg}{}", sub(inner))
            }
            Q::Leaf(field, leaf) => {
                let prefix = if *field == "message" && !style.is_multiple_of(7) {
                    String::new()
                } else {
                    format!("{field}:")
                };
                let value = match leaf {
                    Leaf::Word(w) => w.clone(),
                    Leaf::Pattern(p) => p.clone(),
                    Leaf::Phrase(ws) => format!("\"{}\"", ws.join(" ")),
                    Leaf::Fuzzy(w, d) => format!("{w}~{d}"),
                    Leaf::Range(lo, hi) => {
                        let (l, o) = bound(lo, '[', ']', true);
                        let (h, c) = bound(hi, '[', ']', false);
                        format!("{o}{l} TO {h}{c}")
                    }
                    Leaf::Exists => {
                        return if style.is_multiple_of(2) {
                            format!("_exists_:{field}")
                        } else {
                            format!("{field}:*")
                        }
                    }
                };
                format!("{prefix}{value}")
            }
        }
    }
}

use naive::{Leaf, Q};

fn pattern_of(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    (prop::sample::select(words), any::<u64>()).prop_map(|(w, seed)| {
        // Keep a prefix, swap some characters for `?`, end with `*` or not, or start with `*`.
        let mut rng = fastrand::Rng::with_seed(seed);
        let chars: Vec<char> = w.chars().collect();
        let keep = rng.usize(0..=chars.len());
        let mut p: String = chars[..keep]
            .iter()
            .map(|c| {
                if c.is_alphanumeric() && rng.u8(..5) == 0 {
                    '?'
                } else {
                    *c
                }
            })
            .collect();
        match rng.u8(..4) {
            0 => p.insert(0, '*'),
            1 if !p.is_empty() => {}
            _ => p.push('*'),
        }
        if !p.contains(['*', '?']) {
            p.push('*');
        }
        p
    })
}

fn word_leaf(words: &'static [&'static str], keyword: bool) -> BoxedStrategy<Leaf> {
    let word = prop::sample::select(words).prop_map(str::to_string);
    let mut options = vec![
        word.clone().prop_map(Leaf::Word).boxed(),
        pattern_of(words).prop_map(Leaf::Pattern).boxed(),
        (word.clone(), 0u8..=2)
            .prop_map(|(w, d)| Leaf::Fuzzy(w, d))
            .boxed(),
        Just(Leaf::Exists).boxed(),
    ];
    if keyword {
        let b = prop_oneof![
            Just(Bound::Unbounded),
            word.clone().prop_map(Bound::Included),
            word.clone().prop_map(Bound::Excluded),
        ];
        options.push((b.clone(), b).prop_map(|(l, h)| Leaf::Range(l, h)).boxed());
    } else {
        options.push(
            prop::collection::vec(word, 1..3)
                .prop_map(Leaf::Phrase)
                .boxed(),
        );
    }
    prop::strategy::Union::new(options).boxed()
}

fn leaf() -> impl Strategy<Value = Q> {
    let num = |lo: u64, hi: u64| {
        prop_oneof![
            Just(Bound::Unbounded),
            (lo..hi).prop_map(|n| Bound::Included(n.to_string())),
            (lo..hi).prop_map(|n| Bound::Excluded(n.to_string())),
        ]
    };
    prop_oneof![
        4 => word_leaf(&WORDS, false).prop_map(|l| Q::Leaf("message", l)),
        2 => word_leaf(&SERVICES, true).prop_map(|l| Q::Leaf("service", l)),
        1 => word_leaf(&HOSTS, true).prop_map(|l| Q::Leaf("host", l)),
        1 => word_leaf(&WORDS, false)
            .prop_filter("phrases need positions in one value", |l| !matches!(l, Leaf::Phrase(_)))
            .prop_map(|l| Q::Leaf("fields.user", l)),
        1 => prop_oneof![
            Just(Leaf::Exists),
            prop::sample::select(&["200", "404", "500"][..]).prop_map(|s| Leaf::Word(s.into())),
        ]
        .prop_map(|l| Q::Leaf("fields.status", l)),
        1 => {
            let word = prop::sample::select(&SEVERITY_WORDS[..]).prop_map(str::to_string);
            let b = prop_oneof![
                Just(Bound::Unbounded),
                word.clone().prop_map(Bound::Included),
                word.clone().prop_map(Bound::Excluded),
            ];
            prop_oneof![
                Just(Leaf::Exists),
                word.prop_map(Leaf::Word),
                (b.clone(), b).prop_map(|(l, h)| Leaf::Range(l, h)),
            ]
            .prop_map(|l| Q::Leaf("severity", l))
        },
        1 => prop_oneof![
            Just(Leaf::Exists),
            (1u64..20).prop_map(|n| Leaf::Word(n.to_string())),
            (num(0, 21), num(0, 21)).prop_map(|(l, h)| Leaf::Range(l, h)),
        ]
        .prop_map(|l| Q::Leaf("pid", l)),
    ]
}

fn query() -> impl Strategy<Value = Q> {
    leaf().prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Q::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Q::Or),
            inner.prop_map(|q| Q::Not(Box::new(q))),
        ]
    })
}

fn cases() -> u32 {
    std::env::var("SAWMILL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn generated_queries_match_what_a_naive_scan_finds() {
    let c = corpus();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(query(), any::<u32>()), |(q, style)| {
            let text = naive::render(&q, style);
            let want: BTreeSet<usize> = c
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| naive::eval(&q, r))
                .map(|(i, _)| i)
                .collect();
            let got = tantivy_matches(c, &text)
                .map_err(|e| TestCaseError::fail(format!("`{text}`: {e}")))?;
            prop_assert_eq!(&got, &want, "`{}`", text);
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_reported_queries_match_records() {
    // Regressions from the issue: each matched nothing, or answered 500.
    let c = corpus();
    let count = |q: &str| tantivy_matches(c, q).unwrap().len();
    for q in [
        "alph*",
        "a*",
        "host:h1*",
        "service:a*",
        "message:alpha*",
        "alpha~1",
        "fields.user:*",
        "_exists_:fields.status",
    ] {
        assert!(count(q) > 0, "`{q}` matches nothing");
    }
    // `message:alpha*` is a prefix, not the word `alpha`.
    assert!(count("message:alpha*") > count("message:alpha"));
    assert!(count("alpha~1") > count("alpha"));
    assert_eq!(count("fields.nosuch:*"), 0);
}

#[test]
fn random_text_never_panics_and_fails_only_as_a_bad_query() {
    let c = corpus();
    let alphabet: Vec<char> =
        "\0\u{1}ab *?()[]{}\"\\:~^!+-&|/<>=.ANDORTNOT_exists_fields.pidtsseverity0123"
            .chars()
            .collect();
    let chars = prop::sample::select(alphabet);
    let text = prop_oneof![
        prop::collection::vec(chars, 0..40).prop_map(|v| v.into_iter().collect::<String>()),
        ".{0,40}",
    ];
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&text, |q| {
            match tantivy_matches(c, &q) {
                Ok(_) | Err(Error::BadQuery { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("`{q}` failed with {e}"))),
            }
            Ok(())
        })
        .unwrap();
}
