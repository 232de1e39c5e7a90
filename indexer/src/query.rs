//! The query language, Kibana's Lucene mode: parsed by hand into a bounded tree, then compiled
//! into tantivy queries over the indexer's schema.
//!
//! Why not tantivy's own `QueryParser`: it recurses once per `(` and per `NOT`, so one GET
//! with a few thousand of them overflowed the stack and aborted the indexer; it has no
//! wildcards (`alph*` silently matched nothing), no per-term fuzziness (`alpha~1`), and
//! answered `fields.x:*` with a 500. Here every limit is explicit and named in the 400 a
//! query gets for crossing it, and every construct either works or is refused with a reason.
//!
//! The grammar, loosest first:
//!
//! ```text
//! query   = and ( ("OR" | "||") and )*
//! and     = unary ( ("AND" | "&&")? unary )*          words narrow the search
//! unary   = ("NOT" | "!" | "-" | "+")* primary ("^" boost)?
//! primary = "(" query ")" | "*" | "*:*" | "_exists_:" FIELD
//!         | FIELD ":" ( "(" query ")" | value | "*" | range | (">"|">="|"<"|"<=") bound )
//!         | value
//! value   = WORD ("~" DIGIT?)? | "\"" PHRASE "\"" ("~" SLOP)?     WORD may hold * and ?
//! range   = ("[" | "{") bound "TO" bound ("]" | "}")             bound may be *
//! ```

use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use tantivy::json_utils::convert_to_fast_value_and_append_to_json_term;
use tantivy::query::BitSetDocSet;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScorer, EmptyQuery, EmptyScorer, EnableScoring,
    Explanation, FuzzyTermQuery, Occur, PhraseQuery, Query, RangeQuery, Scorer, TermQuery, Weight,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{LowerCaser, SimpleTokenizer, TextAnalyzer};
use tantivy::{BitSet, DateTime, DocId, DocSet, Score, SegmentReader, Term};
use time::OffsetDateTime;

use sawmill_record::fields::EXACT;
use sawmill_record::Severity;

use crate::error::{Error, Result};
use crate::schema::Fields;
use crate::times::parse_instant;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Deepest nesting of parentheses (and `field:(...)` groups).
pub const MAX_DEPTH: usize = 32;
/// Most words, phrases and ranges in one query (Elasticsearch's old `max_clause_count`).
pub const MAX_CLAUSES: usize = 1024;
/// Longest word with wildcards, in bytes: a pattern is matched against every term of a field.
pub const MAX_PATTERN_BYTES: usize = 256;
/// Largest edit distance of `word~N`, as in Lucene.
pub const MAX_FUZZY_DISTANCE: u8 = 2;
/// Most clauses that read a slice of a term dictionary rather than one term: wildcards,
/// fuzzy words and has-field on fields without a column. Each costs a scan and a bitset
/// per segment, so a thousand of them in one GET would tie up a core and memory.
pub const MAX_SCANS: usize = 16;
/// The index leaves out words of this many bytes or more (tantivy's `RemoveLongFilter`), so
/// a query for one can never match.
pub const MAX_WORD_BYTES: usize = 40;

/// A parsed query, before it meets the schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Ast {
    /// `*`, `*:*`, or an empty query.
    All,
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Not(Box<Ast>),
    Boost(Box<Ast>, f32),
    /// One value; `field` is `None` for bare words, which search `message`.
    Leaf {
        field: Option<String>,
        value: Value,
    },
}

/// What a leaf asks of its field.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Word(String),
    /// A word with `*` (any run of characters) or `?` (one character) in it.
    Pattern(Vec<Piece>),
    Phrase {
        text: String,
        slop: u32,
    },
    Fuzzy {
        text: String,
        distance: u8,
    },
    Range {
        lo: Bound<String>,
        hi: Bound<String>,
    },
    /// `field:*` or `_exists_:field`: the record has the field.
    Exists,
}

/// One element of a wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Char(char),
    /// `?`
    One,
    /// `*`
    Any,
}

/// Parses `q` into a tree, enforcing every limit above.
pub fn parse(q: &str) -> Result<Ast> {
    let bad = |message: String| Error::BadQuery {
        query: shorten(q),
        message,
    };
    if q.len() > MAX_QUERY_BYTES {
        return Err(bad(format!(
            "it is {} bytes long, over the limit of {MAX_QUERY_BYTES} bytes",
            q.len()
        )));
    }
    let mut p = Parser {
        s: q,
        pos: 0,
        clauses: 0,
    };
    p.skip_ws();
    if p.eof() {
        return Ok(Ast::All);
    }
    let ast = p.or(0, None).map_err(bad)?;
    p.skip_ws();
    if !p.eof() {
        let rest = &p.s[p.pos..];
        return Err(bad(if rest.starts_with(')') {
            format!("unmatched `)` at byte {}", p.pos)
        } else {
            format!("unexpected `{}` at byte {}", shorten(rest), p.pos)
        }));
    }
    Ok(ast)
}

/// Parses and compiles `q` for the schema's fields.
pub fn compile(q: &str, fields: &Fields) -> Result<Box<dyn Query>> {
    let ast = parse(q)?;
    let c = Compiler {
        f: fields,
        q,
        scans: std::cell::Cell::new(0),
    };
    Ok(c.top(&ast)?.unwrap_or_else(|| Box::new(EmptyQuery)))
}

/// A long query shown in full in every error would make the error as large as the query.
fn shorten(s: &str) -> String {
    const KEEP: usize = 120;
    if s.len() <= KEEP {
        return s.to_string();
    }
    let mut end = KEEP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    clauses: usize,
}

type PResult<T> = std::result::Result<T, String>;

/// Characters that end a word unless escaped with `\`.
fn ends_word(c: char, in_value: bool) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '^' | '~') || (c == ':' && !in_value)
}

impl<'a> Parser<'a> {
    fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Whether the input continues with the operator `kw` standing alone.
    fn at_op(&self, kw: &str) -> bool {
        let r = self.rest();
        r.starts_with(kw)
            && r[kw.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '(' || c == '"')
    }

    fn at_or(&self) -> bool {
        self.at_op("OR") || self.at_op("||")
    }

    fn at_and(&self) -> bool {
        self.at_op("AND") || self.at_op("&&")
    }

    fn or(&mut self, depth: usize, field: Option<&str>) -> PResult<Ast> {
        let mut items = vec![self.and(depth, field)?];
        loop {
            self.skip_ws();
            if !self.at_or() {
                break;
            }
            let at = self.pos;
            self.pos += 2;
            self.clause_follows("OR", at)?;
            items.push(self.and(depth, field)?);
        }
        Ok(joined(items, Ast::Or))
    }

    /// After operator `op` at byte `at`: a clause must follow, not the end, a `)` or
    /// another operator.
    fn clause_follows(&mut self, op: &str, at: usize) -> PResult<()> {
        self.skip_ws();
        if self.eof() || self.peek() == Some(')') || self.at_or() || self.at_and() {
            return Err(format!("`{op}` at byte {at} needs a clause after it"));
        }
        Ok(())
    }

    fn and(&mut self, depth: usize, field: Option<&str>) -> PResult<Ast> {
        self.skip_ws();
        if self.at_and() || self.at_or() {
            let op = if self.at_and() { "AND" } else { "OR" };
            return Err(format!(
                "`{op}` at byte {} needs a clause before it",
                self.pos
            ));
        }
        let mut items = vec![self.unary(depth, field)?];
        loop {
            self.skip_ws();
            if self.eof() || self.peek() == Some(')') || self.at_or() {
                break;
            }
            if self.at_and() {
                let at = self.pos;
                self.pos += if self.rest().starts_with("&&") { 2 } else { 3 };
                self.clause_follows("AND", at)?;
            }
            items.push(self.unary(depth, field)?);
        }
        Ok(joined(items, Ast::And))
    }

    /// Prefix operators are read in a loop, not by recursion: `NOT NOT … x` of any length
    /// costs no stack.
    fn unary(&mut self, depth: usize, field: Option<&str>) -> PResult<Ast> {
        let mut negate = false;
        loop {
            self.skip_ws();
            if self.at_op("NOT") {
                self.pos += 3;
                negate = !negate;
            } else if matches!(self.peek(), Some('!' | '-' | '+'))
                && self.rest()[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| !c.is_whitespace())
            {
                if self.bump() != Some('+') {
                    negate = !negate;
                }
            } else {
                break;
            }
        }
        self.skip_ws();
        if self.eof() || self.peek() == Some(')') || self.at_or() || self.at_and() {
            return Err(format!("a clause is missing at byte {}", self.pos));
        }
        let mut ast = self.primary(depth, field)?;
        if self.peek() == Some('^') {
            self.bump();
            let n = self.number_text();
            let boost: f32 = n
                .parse()
                .ok()
                .filter(|b: &f32| b.is_finite() && *b >= 0.0)
                .ok_or_else(|| format!("`^{n}` is not a boost: use a number such as ^2"))?;
            ast = Ast::Boost(Box::new(ast), boost);
        }
        Ok(if negate { Ast::Not(Box::new(ast)) } else { ast })
    }

    fn number_text(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn group(&mut self, depth: usize, field: Option<&str>) -> PResult<Ast> {
        let open = self.pos;
        self.bump(); // (
        if depth + 1 > MAX_DEPTH {
            return Err(format!(
                "parentheses nest deeper than the limit of {MAX_DEPTH} levels"
            ));
        }
        self.skip_ws();
        let inner = if self.peek() == Some(')') {
            return Err(format!("empty parentheses at byte {open}"));
        } else {
            self.or(depth + 1, field)?
        };
        self.skip_ws();
        if self.bump() != Some(')') {
            return Err(format!("`(` at byte {open} is never closed"));
        }
        Ok(inner)
    }

    fn primary(&mut self, depth: usize, field: Option<&str>) -> PResult<Ast> {
        match self.peek() {
            Some('(') => return self.group(depth, field),
            Some('"') => {
                let value = self.phrase()?;
                return self.leaf(field.map(str::to_string), value);
            }
            Some('[' | '{') => {
                let value = self.range()?;
                return self.leaf(field.map(str::to_string), value);
            }
            _ => {}
        }
        let start = self.pos;
        let (word, wild) = self.word(field.is_some())?;
        if self.peek() == Some(':') && field.is_none() {
            // `word` was a field name.
            self.bump();
            if word == "*" && !wild.is_empty() {
                // `*:*`
                if self.peek() == Some('*') {
                    self.bump();
                    return Ok(Ast::All);
                }
                return Err(format!("`*:` at byte {start} needs `*` after it"));
            }
            if word == "_exists_" {
                let (name, _) = self.word(true)?;
                if name.is_empty() {
                    return Err("`_exists_:` needs a field name after it".into());
                }
                return self.leaf(Some(name), Value::Exists);
            }
            if word.is_empty() {
                return Err(format!(
                    "a field name is missing before `:` at byte {start}"
                ));
            }
            return self.field_value(depth, word);
        }
        if word.is_empty() {
            return Err(format!(
                "unexpected `{}` at byte {}",
                shorten(self.rest()),
                self.pos
            ));
        }
        let value = self.word_value(word, wild)?;
        if field.is_none() && value == Value::Pattern(vec![Piece::Any]) {
            return Ok(Ast::All);
        }
        self.leaf(field.map(str::to_string), value)
    }

    fn field_value(&mut self, depth: usize, field: String) -> PResult<Ast> {
        // `host: web-1` is read as `host:web-1`, as Lucene does.
        self.skip_ws();
        if self.eof() || self.at_and() || self.at_or() || self.peek() == Some(')') {
            return Err(format!("`{field}:` needs a value after it"));
        }
        match self.peek() {
            None => Err(format!("`{field}:` needs a value after it")),
            Some('/') => Err(format!(
                "`{field}:/…/`: regular expressions are not supported; use wildcards (`*`, `?`), or quote a value that starts with `/`"
            )),
            Some('(') => self.group(depth, Some(&field)),
            Some('"') => {
                let v = self.phrase()?;
                self.leaf(Some(field), v)
            }
            Some('[' | '{') => {
                let v = self.range()?;
                self.leaf(Some(field), v)
            }
            Some('>' | '<') => {
                let less = self.bump() == Some('<');
                let incl = if self.peek() == Some('=') {
                    self.bump();
                    true
                } else {
                    false
                };
                let (bound, wild) = self.word(true)?;
                if bound.is_empty() || !wild.is_empty() {
                    return Err(format!("`{field}:` needs a value after `<` or `>`"));
                }
                let b = if incl {
                    Bound::Included(bound)
                } else {
                    Bound::Excluded(bound)
                };
                let (lo, hi) = if less {
                    (Bound::Unbounded, b)
                } else {
                    (b, Bound::Unbounded)
                };
                self.leaf(Some(field), Value::Range { lo, hi })
            }
            _ => {
                let (word, wild) = self.word(true)?;
                if word.is_empty() {
                    return Err(format!("`{field}:` needs a value after it"));
                }
                let value = self.word_value(word, wild)?;
                let value = if value == Value::Pattern(vec![Piece::Any]) {
                    Value::Exists
                } else {
                    value
                };
                self.leaf(Some(field), value)
            }
        }
    }

    fn leaf(&mut self, field: Option<String>, value: Value) -> PResult<Ast> {
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(format!(
                "it has more than the limit of {MAX_CLAUSES} words, phrases and ranges"
            ));
        }
        if let Some(f) = &field {
            if f.contains(|c: char| c.is_control()) {
                return Err("a field name holds a control character".into());
            }
            if f.contains(['*', '?']) {
                return Err(format!(
                    "`{}`: wildcards work in values, not in field names",
                    shorten(f)
                ));
            }
        }
        Ok(Ast::Leaf { field, value })
    }

    /// Reads a word; returns its text with escapes resolved, and the character positions
    /// (in the text) of unescaped `*` and `?`.
    fn word(&mut self, in_value: bool) -> PResult<(String, Vec<usize>)> {
        let mut text = String::new();
        let mut wild = Vec::new();
        while let Some(c) = self.peek() {
            if ends_word(c, in_value) {
                break;
            }
            self.bump();
            match c {
                '\\' => match self.bump() {
                    Some(e) => text.push(e),
                    None => return Err("the query ends in an unfinished `\\` escape".into()),
                },
                '*' | '?' => {
                    wild.push(text.chars().count());
                    text.push(c);
                }
                _ => text.push(c),
            }
        }
        Ok((text, wild))
    }

    /// A word, possibly with wildcards, possibly followed by `~N`.
    fn word_value(&mut self, word: String, wild: Vec<usize>) -> PResult<Value> {
        if self.peek() == Some('~') {
            self.bump();
            if !wild.is_empty() {
                return Err(format!("`{word}~` mixes wildcards and fuzziness"));
            }
            let n = self.number_text();
            let distance = if n.is_empty() {
                MAX_FUZZY_DISTANCE
            } else {
                n.parse::<u8>()
                    .ok()
                    .filter(|d| *d <= MAX_FUZZY_DISTANCE)
                    .ok_or_else(|| {
                        format!(
                            "`{word}~{n}`: the edit distance after `~` is 0, 1 or {MAX_FUZZY_DISTANCE}"
                        )
                    })?
            };
            if word.len() > MAX_PATTERN_BYTES {
                return Err(format!(
                    "the fuzzy word `{}` is longer than the limit of {MAX_PATTERN_BYTES} bytes",
                    shorten(&word)
                ));
            }
            return Ok(Value::Fuzzy {
                text: word,
                distance,
            });
        }
        if wild.is_empty() {
            return Ok(Value::Word(word));
        }
        if word.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "the wildcard word `{}` is longer than the limit of {MAX_PATTERN_BYTES} bytes",
                shorten(&word)
            ));
        }
        let pieces = word
            .chars()
            .enumerate()
            .map(|(i, c)| match c {
                '*' if wild.contains(&i) => Piece::Any,
                '?' if wild.contains(&i) => Piece::One,
                c => Piece::Char(c),
            })
            .collect();
        Ok(Value::Pattern(pieces))
    }

    fn phrase(&mut self) -> PResult<Value> {
        let open = self.pos;
        self.bump(); // "
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(format!("the quote at byte {open} is never closed")),
                Some('"') => break,
                Some('\\') => match self.bump() {
                    Some(e) => text.push(e),
                    None => return Err(format!("the quote at byte {open} is never closed")),
                },
                Some(c) => text.push(c),
            }
        }
        let mut slop = 0;
        if self.peek() == Some('~') {
            self.bump();
            let n = self.number_text();
            slop =
                n.parse::<u32>().ok().filter(|s| *s <= 100).ok_or_else(|| {
                    format!("`~{n}` after a phrase takes a word distance, 0 to 100")
                })?;
        }
        Ok(Value::Phrase { text, slop })
    }

    fn range(&mut self) -> PResult<Value> {
        let open = self.pos;
        let inclusive_lo = self.bump() == Some('[');
        let bound = |p: &mut Parser| -> PResult<Option<String>> {
            p.skip_ws();
            let text = if p.peek() == Some('"') {
                match p.phrase()? {
                    Value::Phrase { text, .. } => text,
                    _ => unreachable!("phrase() returns a phrase"),
                }
            } else {
                let start = p.pos;
                while p
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && !matches!(c, ']' | '}'))
                {
                    p.bump();
                }
                p.s[start..p.pos].to_string()
            };
            Ok((text != "*").then_some(text))
        };
        let lo = bound(self)?;
        self.skip_ws();
        if !self.rest().starts_with("TO") {
            return Err(format!(
                "the range at byte {open} needs `TO` between its bounds"
            ));
        }
        self.pos += 2;
        let hi = bound(self)?;
        self.skip_ws();
        let inclusive_hi = match self.bump() {
            Some(']') => true,
            Some('}') => false,
            _ => {
                return Err(format!(
                    "the range at byte {open} is never closed with `]` or `}}`"
                ))
            }
        };
        if lo.as_deref().is_some_and(str::is_empty) || hi.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "the range at byte {open} has an empty bound: use `*` for none"
            ));
        }
        if lo.is_none() && hi.is_none() {
            // `[* TO *]`: any value at all.
            return Ok(Value::Exists);
        }
        let b = |v: Option<String>, incl: bool| match v {
            None => Bound::Unbounded,
            Some(v) if incl => Bound::Included(v),
            Some(v) => Bound::Excluded(v),
        };
        Ok(Value::Range {
            lo: b(lo, inclusive_lo),
            hi: b(hi, inclusive_hi),
        })
    }
}

/// How a field is indexed, which decides what its values mean.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Tokenized and lowercased (`message`).
    Text(Field),
    /// Exact strings (`host`, `service`, …, `_src`).
    Keyword(Field),
    /// An indexed whole number (`pid`, `_id`).
    Number(Field),
    /// `_seq`: a columnar number only.
    FastNumber(Field),
    Date(Field),
    /// A path inside `fields`.
    Json(Field),
}

/// One clause alone stands for itself; several are joined by `join` (`Ast::And`, `Ast::Or`).
fn joined(mut items: Vec<Ast>, join: fn(Vec<Ast>) -> Ast) -> Ast {
    match items.len() {
        1 => items.remove(0),
        _ => join(items),
    }
}

struct Compiler<'a> {
    f: &'a Fields,
    q: &'a str,
    /// Clauses so far that read a slice of a term dictionary (see [`MAX_SCANS`]).
    scans: std::cell::Cell<usize>,
}

type Compiled = Option<Box<dyn Query>>;

/// Words of `text` as the index cuts them: the schema's own analyzer for `message` and text
/// in `fields` (tantivy's "default"), but keeping the words it would leave out for length,
/// so that a query for one is refused rather than silently dropped.
fn tokens(text: &str) -> Vec<(usize, String)> {
    static ANALYZER: OnceLock<TextAnalyzer> = OnceLock::new();
    let mut a = ANALYZER
        .get_or_init(|| {
            // "default" is SimpleTokenizer, RemoveLongFilter(40), LowerCaser: the same
            // without the length filter.
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(LowerCaser)
                .build()
        })
        .clone();
    let mut out = Vec::new();
    let mut stream = a.token_stream(text);
    stream.process(&mut |t| out.push((t.position, t.text.clone())));
    out
}

fn everything_but(q: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(vec![
        (Occur::Must, Box::new(AllQuery)),
        (Occur::MustNot, q),
    ]))
}

impl Compiler<'_> {
    fn bad(&self, message: String) -> Error {
        Error::BadQuery {
            query: shorten(self.q),
            message,
        }
    }

    /// Counts one clause that scans a term dictionary, refusing past [`MAX_SCANS`].
    fn scan(&self) -> Result<()> {
        self.scans.set(self.scans.get() + 1);
        if self.scans.get() > MAX_SCANS {
            return Err(self.bad(format!(
                "it has more than the limit of {MAX_SCANS} wildcard, fuzzy and has-field clauses"
            )));
        }
        Ok(())
    }

    /// Words the index never holds can never match: say so instead of answering 0.
    fn check_lengths(&self, name: &str, toks: &[(usize, String)]) -> Result<()> {
        match toks.iter().find(|(_, t)| t.len() >= MAX_WORD_BYTES) {
            Some((_, t)) => Err(self.bad(format!(
                "`{name}` does not index words of {MAX_WORD_BYTES} bytes or more, such as `{}`: search a shorter prefix with `*`, or put such ids in their own field",
                shorten(t)
            ))),
            None => Ok(()),
        }
    }

    /// `None` is a clause that analysis left empty (a word of punctuation only): it drops
    /// out of its parent, as in Lucene.
    fn top(&self, ast: &Ast) -> Result<Compiled> {
        Ok(match ast {
            Ast::Not(inner) => self.top(inner)?.map(everything_but),
            other => self.node(other)?,
        })
    }

    fn node(&self, ast: &Ast) -> Result<Compiled> {
        Ok(match ast {
            Ast::All => Some(Box::new(AllQuery)),
            Ast::And(items) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for item in items {
                    let (occur, inner) = match item {
                        Ast::Not(inner) => (Occur::MustNot, inner.as_ref()),
                        other => (Occur::Must, other),
                    };
                    if let Some(q) = self.node(inner)? {
                        clauses.push((occur, q));
                    }
                }
                if clauses.is_empty() {
                    return Ok(None);
                }
                // tantivy matches nothing with negative clauses alone; Lucene users mean
                // "everything but".
                if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Some(Box::new(BooleanQuery::new(clauses)))
            }
            Ast::Or(items) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for item in items {
                    if let Some(q) = self.top(item)? {
                        clauses.push((Occur::Should, q));
                    }
                }
                (!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as _)
            }
            Ast::Not(inner) => self.node(inner)?.map(everything_but),
            Ast::Boost(inner, b) => self
                .node(inner)?
                .map(|q| Box::new(BoostQuery::new(q, *b)) as _),
            Ast::Leaf { field, value } => self.leaf(field.as_deref(), value)?,
        })
    }

    fn kind(&self, field: &str) -> Result<Kind> {
        let f = self.f;
        if let Some(path) = field.strip_prefix("fields.") {
            if path.is_empty() {
                return Err(self.bad("`fields.` needs a name after the dot".into()));
            }
            return Ok(Kind::Json(f.fields));
        }
        if let Some(s) = f.exact_field(field) {
            return Ok(Kind::Keyword(s));
        }
        Ok(match field {
            "message" => Kind::Text(f.message),
            "pid" => Kind::Number(f.pid),
            "_id" => Kind::Number(f.rid),
            "_src" => Kind::Keyword(f.src),
            "_seq" => Kind::FastNumber(f.seq),
            "ts" => Kind::Date(f.ts),
            _ => {
                return Err(self.bad(format!(
                    "unknown field `{field}`: use message, {}, pid, ts, _src, _seq or fields.NAME",
                    EXACT.join(", ")
                )))
            }
        })
    }

    fn leaf(&self, field: Option<&str>, value: &Value) -> Result<Compiled> {
        let name = field.unwrap_or("message");
        let kind = self.kind(name)?;
        let path = name.strip_prefix("fields.").unwrap_or("");
        match (kind, value) {
            (Kind::Date(_), Value::Exists) => Ok(Some(Box::new(AllQuery))),
            (Kind::Text(_), Value::Exists) => Ok(Some(Box::new(AllQuery))),
            (Kind::Json(f), Value::Exists) => {
                self.scan()?;
                let term = Term::from_field_json_path(f, path, false);
                let mut prefix = term.serialized_value_bytes().to_vec();
                prefix.pop(); // the end-of-path byte: sub-paths count too
                Ok(Some(Box::new(TermScanQuery {
                    field: f,
                    prefix,
                    rest: Matcher::JsonPathEnd,
                })))
            }
            (Kind::Keyword(f) | Kind::Number(f) | Kind::FastNumber(f), Value::Exists) => {
                let entry = self.f.schema.get_field_entry(f);
                if entry.is_fast() {
                    // The column says which records have a value: no term to read.
                    let name = entry.name().to_string();
                    return Ok(Some(Box::new(tantivy::query::ExistsQuery::new(
                        name, false,
                    ))));
                }
                self.scan()?;
                Ok(Some(Box::new(TermScanQuery {
                    field: f,
                    prefix: Vec::new(),
                    rest: Matcher::Any,
                })))
            }
            (Kind::Text(f), v) => self.text(name, v, |tok| Term::from_field_text(f, tok), f, None),
            (Kind::Json(f), v) => {
                let base = Term::from_field_json_path(f, path, false);
                let typed = match v {
                    Value::Word(w) | Value::Phrase { text: w, .. } => {
                        convert_to_fast_value_and_append_to_json_term(&base, w, true)
                    }
                    _ => None,
                };
                let words = |v: &Value| {
                    self.text(
                        name,
                        v,
                        |tok| {
                            let mut t = base.clone();
                            t.append_type_and_str(tok);
                            t
                        },
                        f,
                        Some(&base),
                    )
                };
                let text = match v {
                    // A quoted value is the whole value, as on the exact fields, read from
                    // the path's raw column: what the terms API counts, and what the
                    // sidebar's "filter for" asks (`"a b"~2` stays a phrase of words).
                    Value::Phrase { text, slop: 0 } => {
                        self.scan()?;
                        Some(Box::new(WholeValueQuery {
                            column: name.to_string(),
                            value: text.clone(),
                            // Partitions written before `fields` was columnar: the words,
                            // where they can be searched.
                            by_words: words(v).ok().flatten().map(Arc::from),
                        }) as Box<dyn Query>)
                    }
                    _ => words(v)?,
                };
                // `fields.status:500` finds the number 500 and the text "500" alike.
                Ok(match (typed, text) {
                    (None, text) => text,
                    (Some(t), None) => Some(term_query(t)),
                    (Some(t), Some(text)) => Some(Box::new(BooleanQuery::new(vec![
                        (Occur::Should, term_query(t)),
                        (Occur::Should, text),
                    ]))),
                })
            }
            (Kind::Keyword(f), v) => self.keyword(name, f, v).map(Some),
            (Kind::Number(f) | Kind::FastNumber(f), v) => {
                let fast = matches!(kind, Kind::FastNumber(_));
                self.number(name, f, fast, v).map(Some)
            }
            (Kind::Date(f), v) => self.date(name, f, v).map(Some),
        }
    }

    /// A word with wildcards on an analyzed field (see [`Compiler::text`]).
    fn text_pattern(
        &self,
        name: &str,
        pieces: &[Piece],
        field: Field,
        json_base: Option<&Term>,
    ) -> Result<Compiled> {
        // Wildcards are not analyzed (as in Lucene), so they match one word: only its
        // case is folded, as the index folds it.
        if pieces
            .iter()
            .any(|p| matches!(p, Piece::Char(c) if !c.is_alphanumeric()))
        {
            return Err(self.bad(format!(
                "the wildcard word `{}` on `{name}` holds characters that split words; wildcards match within one word",
                pattern_text(pieces)
            )));
        }
        self.scan()?;
        // A pattern whose shortest match is too long for the index matches nothing.
        let shortest: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Char(c) => c.len_utf8(),
                Piece::One => 1,
                Piece::Any => 0,
            })
            .sum();
        if shortest >= MAX_WORD_BYTES {
            return Err(self.bad(format!(
                "`{name}` does not index words of {MAX_WORD_BYTES} bytes or more, so `{}` can never match: shorten it",
                shorten(&pattern_text(pieces))
            )));
        }
        let lowered: Vec<Piece> = pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Char(c) => c.to_lowercase().map(Piece::Char).collect(),
                other => vec![other.clone()],
            })
            .collect();
        let mut prefix = match json_base {
            Some(base) => {
                let mut t = base.clone();
                t.append_type_and_str("");
                t.serialized_value_bytes().to_vec()
            }
            None => Vec::new(),
        };
        Ok(Some(Box::new(pattern_query(field, &mut prefix, lowered))))
    }

    /// A value on an analyzed field: `message`, or text inside `fields` (then `json_base`
    /// is the path's term, for patterns).
    fn text(
        &self,
        name: &str,
        value: &Value,
        term: impl Fn(&str) -> Term,
        field: Field,
        json_base: Option<&Term>,
    ) -> Result<Compiled> {
        match value {
            Value::Word(text) | Value::Phrase { text, .. } => {
                let slop = match value {
                    Value::Phrase { slop, .. } => *slop,
                    _ => 0,
                };
                let toks = tokens(text);
                self.check_lengths(name, &toks)?;
                Ok(match toks.len() {
                    0 => None,
                    1 => Some(term_query(term(&toks[0].1))),
                    _ => {
                        let terms = toks.iter().map(|(p, t)| (*p, term(t))).collect();
                        Some(Box::new(PhraseQuery::new_with_offset_and_slop(terms, slop)))
                    }
                })
            }
            Value::Fuzzy { text, distance } => {
                self.scan()?;
                let toks = tokens(text);
                self.check_lengths(name, &toks)?;
                match toks.as_slice() {
                    [] => Ok(None),
                    [(_, tok)] => Ok(Some(Box::new(FuzzyTermQuery::new(
                        term(tok),
                        *distance,
                        true,
                    )))),
                    _ => Err(self.bad(format!(
                        "`{text}~` is several words: fuzziness applies to one word"
                    ))),
                }
            }
            Value::Pattern(pieces) => self.text_pattern(name, pieces, field, json_base),
            Value::Range { .. } => Err(self.bad(format!(
                "`{name}` is searched by words, not ranges: ranges work on pid, ts, _seq and the exact-value fields ({})",
                EXACT.join(", ")
            ))),
            Value::Exists => unreachable!("handled by the caller"),
        }
    }

    fn keyword(&self, name: &str, f: Field, value: &Value) -> Result<Box<dyn Query>> {
        let exact = |v: &str| -> Result<String> {
            if name == "severity" {
                // `severity:error` and `severity:3` mean what they say, as on ingest.
                return Severity::parse(v)
                    .map(|s| s.name().to_string())
                    .map_err(|e| self.bad(e.to_string()));
            }
            Ok(v.to_string())
        };
        Ok(match value {
            Value::Word(v) | Value::Phrase { text: v, .. } => {
                term_query(Term::from_field_text(f, &exact(v)?))
            }
            Value::Fuzzy { text, distance } => {
                self.scan()?;
                Box::new(FuzzyTermQuery::new(
                    Term::from_field_text(f, text),
                    *distance,
                    true,
                ))
            }
            Value::Pattern(pieces) => {
                self.scan()?;
                Box::new(pattern_query(f, &mut Vec::new(), pieces.clone()))
            }
            Value::Range { lo, hi } if name == "severity" => self.severity_range(f, lo, hi)?,
            Value::Range { lo, hi } => {
                let t = |b: &Bound<String>| -> Result<Bound<Term>> {
                    Ok(match b {
                        Bound::Unbounded => Bound::Unbounded,
                        Bound::Included(v) => Bound::Included(Term::from_field_text(f, &exact(v)?)),
                        Bound::Excluded(v) => Bound::Excluded(Term::from_field_text(f, &exact(v)?)),
                    })
                };
                Box::new(RangeQuery::new(t(lo)?, t(hi)?))
            }
            Value::Exists => unreachable!("handled by the caller"),
        })
    }

    /// Severities are ranked, not alphabetical: `severity:<=3` and `severity:[emerg TO err]`
    /// both mean "err or worse", as syslog numbers them (0 emerg … 7 debug).
    fn severity_range(
        &self,
        f: Field,
        lo: &Bound<String>,
        hi: &Bound<String>,
    ) -> Result<Box<dyn Query>> {
        let rank = |v: &str| -> Result<usize> {
            let sev = Severity::parse(v).map_err(|e| self.bad(e.to_string()))?;
            Ok(usize::from(sev.rank()))
        };
        let from = match lo {
            Bound::Unbounded => 0,
            Bound::Included(v) => rank(v)?,
            Bound::Excluded(v) => rank(v)? + 1,
        };
        let to = match hi {
            Bound::Unbounded => Severity::ALL.len(),
            Bound::Included(v) => rank(v)? + 1,
            Bound::Excluded(v) => rank(v)?,
        };
        let ranked = Severity::ALL.get(from..to.max(from)).unwrap_or_default();
        Ok(Box::new(BooleanQuery::new(
            ranked
                .iter()
                .map(|s| {
                    (
                        Occur::Should,
                        term_query(Term::from_field_text(f, s.name())),
                    )
                })
                .collect(),
        )))
    }

    fn number(&self, name: &str, f: Field, fast: bool, value: &Value) -> Result<Box<dyn Query>> {
        let parse = |v: &str| -> Result<u64> {
            v.trim().parse::<u64>().map_err(|_| {
                self.bad(format!(
                    "`{name}` holds whole numbers, and `{v}` is not one"
                ))
            })
        };
        let bound = |b: &Bound<String>| -> Result<Bound<Term>> {
            Ok(match b {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(v) => Bound::Included(Term::from_field_u64(f, parse(v)?)),
                Bound::Excluded(v) => Bound::Excluded(Term::from_field_u64(f, parse(v)?)),
            })
        };
        Ok(match value {
            Value::Word(v) | Value::Phrase { text: v, .. } => {
                let t = Term::from_field_u64(f, parse(v)?);
                if fast {
                    Box::new(RangeQuery::new(
                        Bound::Included(t.clone()),
                        Bound::Included(t),
                    ))
                } else {
                    term_query(t)
                }
            }
            Value::Range { lo, hi } => Box::new(RangeQuery::new(bound(lo)?, bound(hi)?)),
            Value::Pattern(_) | Value::Fuzzy { .. } => {
                return Err(self.bad(format!(
                    "`{name}` holds numbers: wildcards and `~` work on words only"
                )))
            }
            Value::Exists => unreachable!("handled by the caller"),
        })
    }

    fn date(&self, name: &str, f: Field, value: &Value) -> Result<Box<dyn Query>> {
        let now = OffsetDateTime::now_utc();
        let at = |v: &str| -> Result<Term> {
            let t = parse_instant(v, now).map_err(|e| self.bad(format!("`{name}`: {e}")))?;
            let micros = (t.unix_timestamp_nanos() / 1000) as i64;
            Ok(Term::from_field_date(
                f,
                DateTime::from_timestamp_micros(micros),
            ))
        };
        let bound = |b: &Bound<String>| -> Result<Bound<Term>> {
            Ok(match b {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(v) => Bound::Included(at(v)?),
                Bound::Excluded(v) => Bound::Excluded(at(v)?),
            })
        };
        Ok(match value {
            Value::Word(v) | Value::Phrase { text: v, .. } => {
                let t = at(v)?;
                Box::new(RangeQuery::new(
                    Bound::Included(t.clone()),
                    Bound::Included(t),
                ))
            }
            Value::Range { lo, hi } => Box::new(RangeQuery::new(bound(lo)?, bound(hi)?)),
            Value::Pattern(_) | Value::Fuzzy { .. } => {
                return Err(self.bad(format!(
                    "`{name}` holds times: use a range such as `{name}:[now-1h TO now]`"
                )))
            }
            Value::Exists => unreachable!("handled by the caller"),
        })
    }
}

fn term_query(t: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(t, IndexRecordOption::Basic))
}

fn pattern_text(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Char(c) => *c,
            Piece::One => '?',
            Piece::Any => '*',
        })
        .collect()
}

/// Moves the pattern's literal start into `prefix` (so only that slice of the term
/// dictionary is read) and matches the rest of each term against what remains.
fn pattern_query(field: Field, prefix: &mut Vec<u8>, pieces: Vec<Piece>) -> TermScanQuery {
    let lead = pieces
        .iter()
        .take_while(|p| matches!(p, Piece::Char(_)))
        .count();
    let mut buf = [0u8; 4];
    for p in &pieces[..lead] {
        if let Piece::Char(c) = p {
            prefix.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    let rest = pieces[lead..].to_vec();
    TermScanQuery {
        field,
        prefix: std::mem::take(prefix),
        rest: if rest == [Piece::Any] {
            Matcher::Any
        } else {
            Matcher::Glob(rest)
        },
    }
}

/// What the part of a term after the scanned prefix must look like.
#[derive(Clone, Debug)]
enum Matcher {
    Any,
    Glob(Vec<Piece>),
    /// The prefix is a JSON path: it must end there (`\0`) or go on into a sub-path (`\x01`).
    JsonPathEnd,
}

impl Matcher {
    fn matches(&self, rest: &[u8]) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::JsonPathEnd => matches!(rest.first(), Some(0 | 1)),
            Matcher::Glob(pieces) => match std::str::from_utf8(rest) {
                Ok(s) => glob(pieces, s),
                Err(_) => false,
            },
        }
    }
}

/// Wildcard matching in linear space; backtracks only to the last `*`, so it is
/// O(pattern × text) at worst, never exponential.
pub fn glob(pieces: &[Piece], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < t.len() {
        match pieces.get(p) {
            Some(Piece::Any) => {
                star = Some((p, i));
                p += 1;
            }
            Some(Piece::One) => {
                p += 1;
                i += 1;
            }
            Some(Piece::Char(c)) if *c == t[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pieces[p.min(pieces.len())..]
        .iter()
        .all(|x| *x == Piece::Any)
}

/// Every document holding a term that starts with `prefix` and whose remainder `rest`
/// accepts: wildcards, `field:*` and `_exists_`. It reads only the term dictionary's slice
/// that starts with `prefix`, and unions the postings into a bitset, so its memory is one
/// bit per document whatever the number of terms.
#[derive(Clone, Debug)]
struct TermScanQuery {
    field: Field,
    prefix: Vec<u8>,
    rest: Matcher,
}

impl Query for TermScanQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

/// The smallest byte string above every string that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl TermScanQuery {
    fn docs(&self, reader: &SegmentReader) -> tantivy::Result<BitSet> {
        let mut bits = BitSet::with_max_value(reader.max_doc());
        let inverted = reader.inverted_index(self.field)?;
        let mut range = inverted.terms().range().ge(&self.prefix);
        if let Some(end) = prefix_end(&self.prefix) {
            range = range.lt(end);
        }
        let mut terms = range.into_stream()?;
        while terms.advance() {
            if !self.rest.matches(&terms.key()[self.prefix.len()..]) {
                continue;
            }
            let mut postings = inverted
                .read_block_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
            loop {
                let docs = postings.docs();
                if docs.is_empty() {
                    break;
                }
                for &d in docs {
                    bits.insert(d);
                }
                postings.advance();
            }
        }
        Ok(bits)
    }
}

impl Weight for TermScanQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let docs = BitSetDocSet::from(self.docs(reader)?);
        Ok(Box::new(ConstScorer::new(docs, boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        explain_match(self, "TermScanQuery", reader, doc)
    }
}

/// The explanation of a constant-score match: that `doc` matches, or an error.
fn explain_match(
    w: &dyn Weight,
    name: &'static str,
    reader: &SegmentReader,
    doc: DocId,
) -> tantivy::Result<Explanation> {
    let mut scorer = w.scorer(reader, 1.0)?;
    if scorer.seek(doc) == doc {
        Ok(Explanation::new(name, 1.0))
    } else {
        Err(tantivy::TantivyError::InvalidArgument(format!(
            "document {doc} does not match"
        )))
    }
}

/// `fields.NAME:"VALUE"`: the records whose value at the path is VALUE whole (one of its
/// values, for an array), found in the path's raw column; in a partition written before
/// `fields` was columnar, which has no such column, `by_words` (the value's words as a
/// phrase) stands in.
#[derive(Clone, Debug)]
struct WholeValueQuery {
    /// The column's name, `fields.NAME`.
    column: String,
    value: String,
    by_words: Option<Arc<dyn Query>>,
}

impl Query for WholeValueQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(WholeValueWeight {
            column: self.column.clone(),
            value: self.value.clone(),
            by_words: match &self.by_words {
                Some(q) => Some(q.weight(scoring)?),
                None => None,
            },
        }))
    }
}

struct WholeValueWeight {
    column: String,
    value: String,
    by_words: Option<Box<dyn Weight>>,
}

impl Weight for WholeValueWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        if !crate::collectors::columnar(reader, &self.column) {
            return match &self.by_words {
                Some(w) => w.scorer(reader, boost),
                None => Ok(Box::new(EmptyScorer)),
            };
        }
        let mut bits = BitSet::with_max_value(reader.max_doc());
        if let Some(col) = reader.fast_fields().str(&self.column)? {
            if let Some(ord) = col.dictionary().term_ord(self.value.as_bytes())? {
                let mut docs = Vec::new();
                col.ords()
                    .get_docids_for_value_range(ord..=ord, 0..reader.max_doc(), &mut docs);
                for d in docs {
                    bits.insert(d);
                }
            }
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(bits), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        explain_match(self, "WholeValueQuery", reader, doc)
    }
}

#[cfg(test)]
mod tests;
