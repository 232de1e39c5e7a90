//! What both benchmarks share: the direct-tantivy baseline's index and writer, and reading
//! a process's peak memory.

use std::path::Path;

use sawmill_indexer::{index_settings, Fields, StoreConfig};
use tantivy::{Index, IndexWriter, TantivyDocument};

/// An index with the indexer's schema and settings, and a writer sized as the indexer's.
pub fn baseline_index(dir: &Path) -> (Fields, Index, IndexWriter<TantivyDocument>) {
    std::fs::create_dir_all(dir).unwrap();
    let fields = Fields::new();
    let index = Index::builder()
        .schema(fields.schema.clone())
        .settings(index_settings())
        .create_in_dir(dir)
        .unwrap();
    let cfg = StoreConfig::new(dir);
    let writer = index
        .writer_with_num_threads::<TantivyDocument>(cfg.writer_threads, cfg.writer_memory)
        .unwrap();
    (fields, index, writer)
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
