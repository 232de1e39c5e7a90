//! The log thread: takes ingest requests, drops records already held (`dedup.rs`), appends
//! the rest to the write-ahead log (`wal.rs`) with one fsync per group of requests, answers
//! every request of the group only then, and hands the records to the index thread.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::dedup::Dedup;
use crate::error::Result;
use crate::metrics::{Metrics, WalWriteFailed, WalWritten};
use crate::record::Record;
use crate::store::index::{IndexBatch, ToIndex};
use crate::wal::{encode_frame, Wal};

/// What became of one record of an ingest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durable, with its id (its write-ahead log position).
    Stored(u64),
    /// Already held; nothing stored.
    Duplicate,
}

/// One ingest request on its way to the log thread.
pub struct WalRequest {
    pub records: Vec<Record>,
    pub reply: oneshot::Sender<Result<Vec<Outcome>>>,
}

/// Most records one group write gathers before its fsync.
const MAX_GROUP_RECORDS: usize = 100_000;

/// The log thread's state.
pub struct LogThread {
    pub wal: Wal,
    /// Shared with repair, which reads a snapshot of it; locked once per group of requests.
    pub dedup: Arc<Mutex<Dedup>>,
    pub index_tx: SyncSender<ToIndex>,
}

/// A group of requests framed for one write.
struct Group {
    buf: Vec<u8>,
    outcomes: Vec<Vec<Outcome>>,
    replies: Vec<oneshot::Sender<Result<Vec<Outcome>>>>,
    batch: Vec<(u64, Record)>,
}

impl LogThread {
    /// Runs until every sender of `rx` is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<WalRequest>, metrics: &Metrics) {
        let mut buf = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            // Everyone waiting shares one fsync.
            let mut group = vec![first];
            let mut n = group[0].records.len();
            while n < MAX_GROUP_RECORDS {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.records.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            buf.clear();
            let framed = self.frame(group, n, std::mem::take(&mut buf));
            buf = self.write(framed, metrics);
        }
    }

    /// Drops duplicates and frames the rest, each record's position its id.
    fn frame(&mut self, group: Vec<WalRequest>, n: usize, mut buf: Vec<u8>) -> Group {
        let base = self.wal.next_position();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut batch = Vec::with_capacity(n);
        let mut dedup = self.dedup.lock().unwrap();
        for req in group {
            let mut out = Vec::with_capacity(req.records.len());
            for rec in req.records {
                if let Some(k) = &rec.key {
                    if !dedup.insert(k) {
                        out.push(Outcome::Duplicate);
                        continue;
                    }
                }
                let pos = base + buf.len() as u64;
                encode_frame(&mut buf, rec.source.as_bytes());
                out.push(Outcome::Stored(pos));
                batch.push((pos, rec));
            }
            outcomes.push(out);
            replies.push(req.reply);
        }
        Group {
            buf,
            outcomes,
            replies,
            batch,
        }
    }

    /// Appends and syncs a group, answers its requests, and passes its records on; gives the
    /// buffer back for the next group.
    fn write(&mut self, g: Group, metrics: &Metrics) -> Vec<u8> {
        let started = Instant::now();
        let res = if g.buf.is_empty() {
            Ok(())
        } else {
            self.wal.append(&g.buf)
        };
        let took = started.elapsed();
        match res {
            Ok(()) => {
                WalWritten {
                    bytes: g.buf.len(),
                    took,
                }
                .emit(metrics);
                let unkeyed = g.batch.iter().filter(|(_, r)| r.key.is_none()).count();
                metrics.add(crate::metrics::M::RecordsUnkeyed, unkeyed as u64);
                for (reply, out) in g.replies.into_iter().zip(g.outcomes) {
                    let _ = reply.send(Ok(out));
                }
                if !g.batch.is_empty() {
                    let end = self.wal.next_position();
                    let batch = IndexBatch {
                        records: g.batch,
                        end,
                    };
                    if self.index_tx.send(ToIndex::Batch(batch)).is_err() {
                        tracing::error!(
                            "Index thread is gone; records stay in the write-ahead log for replay."
                        );
                    }
                }
            }
            Err(e) => {
                WalWriteFailed { error: &e, took }.emit(metrics);
                // Not stored, so not held: a resend must be stored.
                let mut dedup = self.dedup.lock().unwrap();
                for (_, rec) in &g.batch {
                    if let Some(k) = &rec.key {
                        dedup.remove(k);
                    }
                }
                drop(dedup);
                for reply in g.replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        g.buf
    }
}
