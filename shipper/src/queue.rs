//! The one bounded queue between the sources and the batcher, bounded by records and bytes.
//! Sources whose sender must never wait (sockets, `sawmill run`) [`push`](Queue::push): the
//! newest item is dropped when full and counted per source. Sources that can wait (files,
//! Docker logs) [`push_wait`](Queue::push_wait) for room instead and are never skipped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::event::Item;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Queue {
    tx: Sender<(Item, usize)>,
    rx: Receiver<(Item, usize)>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Queue {
    pub fn new(max_records: usize, max_bytes: usize, metrics: Arc<Metrics>) -> Queue {
        let (tx, rx) = bounded(max_records.max(1));
        Queue {
            tx,
            rx,
            bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            metrics,
        }
    }

    /// Never blocks: false (and one drop counted) when the queue is full.
    pub fn push(&self, item: Item) -> bool {
        let source = item.source();
        let m = &self.metrics;
        m.received(source);
        let w = item.weight();
        if self.bytes.fetch_add(w, Relaxed) + w > self.max_bytes {
            self.bytes.fetch_sub(w, Relaxed);
            m.queue_full(source);
            return false;
        }
        match self.tx.try_send((item, w)) {
            Ok(()) => {
                m.queue_pushed();
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(w, Relaxed);
                m.queue_full(source);
                false
            }
        }
    }

    /// Waits for room instead of dropping: for sources that are their own buffer (a file,
    /// Docker's log). They may fill only half the queue (records and bytes), so that the
    /// sockets, which cannot wait, still find room while a big file is being read. False
    /// only when `stop` was raised before the item got in.
    pub fn push_wait(&self, item: Item, stop: &AtomicBool) -> bool {
        let source = item.source();
        let m = &self.metrics;
        let w = item.weight();
        let max_records = (self.tx.capacity().unwrap_or(1) / 2).max(1);
        let max_bytes = self.max_bytes / 2;
        let mut item = Some((item, w));
        let mut nap = Duration::from_micros(100);
        loop {
            if stop.load(Relaxed) {
                return false;
            }
            let bytes = self.bytes.load(Relaxed);
            // An item bigger than the share still goes in alone, or it would wait forever.
            let room = self.tx.len() < max_records && (bytes + w <= max_bytes || bytes == 0);
            if room {
                self.bytes.fetch_add(w, Relaxed);
                match self.tx.try_send(item.take().unwrap()) {
                    Ok(()) => {
                        // Counted only once in: a line left behind at a stop is read again.
                        m.received(source);
                        m.queue_pushed();
                        return true;
                    }
                    // A socket took the last slot in between: wait like any other time.
                    Err(TrySendError::Full(back)) | Err(TrySendError::Disconnected(back)) => {
                        self.bytes.fetch_sub(w, Relaxed);
                        item = Some(back);
                    }
                }
            }
            // Polling rather than a condition variable: the batcher pops on every record,
            // and a wake-up per pop would cost the socket path more than these naps cost a
            // file. Capped at 2 ms, a 100-record queue still passes tens of thousands of
            // lines a second.
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }

    pub fn pop(&self, wait: Duration) -> Result<Item, RecvTimeoutError> {
        Ok(self.taken(self.rx.recv_timeout(wait)?))
    }

    /// The next item if one is waiting; never parks, so pushes need not wake anyone.
    pub fn try_pop(&self) -> Option<Item> {
        Some(self.taken(self.rx.try_recv().ok()?))
    }

    /// Accounts for an item leaving the queue.
    fn taken(&self, (item, w): (Item, usize)) -> Item {
        self.bytes.fetch_sub(w, Relaxed);
        self.metrics.queue_popped();
        item
    }

    /// The counters its sources report to as well.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}
