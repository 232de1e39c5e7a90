//! The table of a record's top-level fields: what each holds and how the indexer keeps it.
//! The indexer builds its schema from it, its query language checks names against it, and
//! the UI takes its export columns from it; a new field is one row here.

/// What a field holds, and so how it is indexed and searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An instant (RFC 3339 on the wire), searched by range.
    Time,
    /// Free text, split into words.
    Text,
    /// A value matched whole (`host:web-1`), never split.
    Exact,
    /// A non-negative integer, searched by value or range.
    Number,
    /// `true` when present; kept in the stored record only.
    Flag,
    /// A JSON object whose leaves are searched as `fields.KEY:value`.
    Object,
    /// Part of the de-duplication key; not for people to search.
    Key,
}

/// One top-level field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldKind,
    /// Also kept as a column, for terms, histograms and fast filters.
    pub fast: bool,
}

const fn f(name: &'static str, kind: FieldKind, fast: bool) -> Field {
    Field { name, kind, fast }
}

/// Every top-level field of a stored record, in the order records are written.
pub const FIELDS: [Field; 17] = [
    f("ts", FieldKind::Time, true),
    f("received", FieldKind::Time, false),
    f("message", FieldKind::Text, false),
    f("host", FieldKind::Exact, true),
    f("service", FieldKind::Exact, true),
    f("severity", FieldKind::Exact, true),
    f("facility", FieldKind::Exact, true),
    f("container", FieldKind::Exact, true),
    f("image", FieldKind::Exact, true),
    f("stream", FieldKind::Exact, true),
    f("trace_id", FieldKind::Exact, false),
    f("request_id", FieldKind::Exact, false),
    f("pid", FieldKind::Number, false),
    f("truncated", FieldKind::Flag, false),
    f("fields", FieldKind::Object, false),
    f("_src", FieldKind::Key, true),
    f("_seq", FieldKind::Key, true),
];

/// The field named `name`, if a record has one.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

const fn count_exact() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < FIELDS.len() {
        if matches!(FIELDS[i].kind, FieldKind::Exact) {
            n += 1;
        }
        i += 1;
    }
    n
}

/// How many [`FieldKind::Exact`] fields there are.
pub const EXACT_COUNT: usize = count_exact();

const fn exact_names() -> [&'static str; EXACT_COUNT] {
    let mut out = [""; EXACT_COUNT];
    let (mut i, mut n) = (0, 0);
    while i < FIELDS.len() {
        if matches!(FIELDS[i].kind, FieldKind::Exact) {
            out[n] = FIELDS[i].name;
            n += 1;
        }
        i += 1;
    }
    out
}

/// The exact-value fields (`host`, `service`, `severity`, …), in table order: a record
/// holds them as an array in this order.
pub const EXACT: [&str; EXACT_COUNT] = exact_names();

/// The position of exact field `name` in [`EXACT`].
pub fn exact_index(name: &str) -> Option<usize> {
    EXACT.iter().position(|f| *f == name)
}

/// Where `severity` sits in [`EXACT`].
pub const SEVERITY: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_fields_are_derived_from_the_table() {
        assert_eq!(
            EXACT,
            [
                "host",
                "service",
                "severity",
                "facility",
                "container",
                "image",
                "stream",
                "trace_id",
                "request_id"
            ]
        );
        assert_eq!(EXACT[SEVERITY], "severity");
        assert_eq!(exact_index("stream"), Some(6));
        assert_eq!(field("pid").map(|f| f.kind), Some(FieldKind::Number));
        assert!(field("nope").is_none());
    }
}
