//! The tantivy schema every partition shares, and how a record becomes a document.

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, NumericOptions,
    Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::{DateTime, TantivyDocument};

use crate::record::{Record, STRING_FIELDS};

/// Handles to the schema's fields.
#[derive(Clone)]
pub struct Fields {
    pub schema: Schema,
    pub ts: Field,
    pub message: Field,
    /// In the order of [`STRING_FIELDS`].
    pub strings: Vec<Field>,
    pub pid: Field,
    pub fields: Field,
    pub src: Field,
    pub seq: Field,
    pub key: Field,
    pub rid: Field,
    pub source: Field,
}

/// String fields that are also columnar, for terms and fast filters.
pub const FAST_STRING_FIELDS: [&str; 7] = [
    "host",
    "service",
    "severity",
    "facility",
    "container",
    "image",
    "stream",
];

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
        let strings = STRING_FIELDS
            .iter()
            .map(|name| {
                if FAST_STRING_FIELDS.contains(name) {
                    b.add_text_field(name, STRING | FAST)
                } else {
                    b.add_text_field(name, STRING)
                }
            })
            .collect();
        let pid = b.add_u64_field("pid", NumericOptions::default().set_indexed());
        let fields = b.add_json_field(
            "fields",
            JsonObjectOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
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
            strings,
            pid,
            fields,
            src,
            seq,
            key,
            rid,
            source,
        }
    }

    pub fn string_field(&self, name: &str) -> Option<Field> {
        STRING_FIELDS
            .iter()
            .position(|f| *f == name)
            .map(|i| self.strings[i])
    }

    pub fn document(&self, rid: u64, r: &Record) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        let nanos = r.ts.unix_timestamp_nanos();
        doc.add_date(self.ts, DateTime::from_timestamp_nanos(nanos as i64));
        doc.add_text(self.message, &r.message);
        for (i, v) in r.strings.iter().enumerate() {
            if let Some(v) = v {
                doc.add_text(self.strings[i], v);
            }
        }
        if let Some(pid) = r.pid {
            doc.add_u64(self.pid, pid);
        }
        if !r.fields.is_empty() {
            let obj: std::collections::BTreeMap<String, tantivy::schema::OwnedValue> = r
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), tantivy::schema::OwnedValue::from(v.clone())))
                .collect();
            doc.add_object(self.fields, obj);
        }
        match &r.key {
            Some(crate::record::DedupKey::Seq { src, seq }) => {
                doc.add_text(self.src, src);
                doc.add_u64(self.seq, *seq);
            }
            Some(crate::record::DedupKey::Id(id)) => doc.add_text(self.key, id),
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
