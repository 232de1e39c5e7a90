//! The tantivy schema every partition shares, and how a record becomes a document.

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, NumericOptions,
    Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::{DateTime, TantivyDocument};

use sawmill_record::fields::{exact_index, FieldKind, EXACT, EXACT_COUNT, FIELDS};

use crate::dedup::DedupKey;
use crate::record::Record;

/// Handles to the schema's fields.
#[derive(Clone)]
pub struct Fields {
    pub schema: Schema,
    pub ts: Field,
    pub message: Field,
    /// The exact-value fields, in the order of [`EXACT`].
    pub exact: [Field; EXACT_COUNT],
    pub pid: Field,
    pub fields: Field,
    pub src: Field,
    pub seq: Field,
    pub key: Field,
    pub rid: Field,
    pub source: Field,
}

impl Fields {
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let ts = b.add_date_field(
            "ts",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Microseconds),
        );
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let message = b.add_text_field("message", text.clone());
        // The exact fields as the contract's table has them, columnar where it says so.
        let mut exact = Vec::with_capacity(EXACT_COUNT);
        for f in FIELDS.iter().filter(|f| f.kind == FieldKind::Exact) {
            exact.push(if f.fast {
                b.add_text_field(f.name, STRING | FAST)
            } else {
                b.add_text_field(f.name, STRING)
            });
        }
        let exact: [Field; EXACT_COUNT] = exact.try_into().expect("one field per exact name");
        let pid = b.add_u64_field("pid", NumericOptions::default().set_indexed());
        let fields = b.add_json_field(
            "fields",
            fields_by_word()
                // Columnar too, each value whole ("raw"), for term counts on `fields.NAME`
                // (the sidebar's task metadata): the index above holds the values' words.
                .set_fast("raw"),
        );
        let src = b.add_text_field("_src", STRING | FAST);
        let seq = b.add_u64_field("_seq", FAST);
        let key = b.add_text_field("_key", STRING | FAST);
        let rid = b.add_u64_field("_rid", NumericOptions::default().set_indexed().set_fast());
        let source = b.add_text_field("_source", STORED);
        Fields {
            schema: b.build(),
            ts,
            message,
            exact,
            pid,
            fields,
            src,
            seq,
            key,
            rid,
            source,
        }
    }

    /// The schema of partitions written before `fields` was columnar: still opened and
    /// written to as they are (see [`crate::partition::Partition::create`]). The upgrade
    /// test makes such a partition; the fields benchmark indexes with it as its baseline.
    pub fn schema_without_fields_columns(&self) -> Schema {
        let mut b = Schema::builder();
        for (field, entry) in self.schema.fields() {
            b.add_field(if field == self.fields {
                tantivy::schema::FieldEntry::new_json(entry.name().to_string(), fields_by_word())
            } else {
                entry.clone()
            });
        }
        b.build()
    }

    /// The tantivy field of exact field `name`.
    pub fn exact_field(&self, name: &str) -> Option<Field> {
        exact_index(name).map(|i| self.exact[i])
    }

    pub fn document(&self, rid: u64, r: &Record) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        let nanos = r.ts.unix_timestamp_nanos();
        doc.add_date(self.ts, DateTime::from_timestamp_nanos(nanos as i64));
        let w = &r.wire;
        doc.add_text(self.message, &w.message);
        for (field, name) in self.exact.iter().zip(EXACT) {
            if let Some(v) = w.exact(name) {
                doc.add_text(*field, v);
            }
        }
        if let Some(pid) = w.pid {
            doc.add_u64(self.pid, pid);
        }
        if !w.fields.is_empty() {
            let obj: std::collections::BTreeMap<String, tantivy::schema::OwnedValue> = w
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), tantivy::schema::OwnedValue::from(v.clone())))
                .collect();
            doc.add_object(self.fields, obj);
        }
        match &r.key {
            Some(DedupKey::Seq { src, seq }) => {
                doc.add_text(self.src, src);
                doc.add_u64(self.seq, *seq);
            }
            Some(DedupKey::Id(id)) => doc.add_text(self.key, id),
            None => {}
        }
        doc.add_u64(self.rid, rid);
        doc.add_text(self.source, &r.source);
        doc
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

/// `fields` as the inverted index holds it: each value's words, as in `message`, so
/// `fields.NAME:word` finds a word within a value.
fn fields_by_word() -> JsonObjectOptions {
    JsonObjectOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}
