//! The one bounded queue between sources and the forwarder, bounded by records and bytes.
//! Sources whose sender must never wait (sockets, `sawmill run`) [`push`](Queue::push): the
//! newest item is dropped when full and counted per source. Sources that can wait (files,
//! Docker logs) [`push_wait`](Queue::push_wait) for room instead and are never skipped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use time::OffsetDateTime;

use crate::event::Event;
use crate::metrics::Metrics;

/// Kernel-attested credentials of a datagram's sender (SO_PASSCRED).
#[derive(Clone, Copy, Debug)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// What sources put in the queue: as little work as possible before it.
pub enum Item {
    /// A raw syslog datagram, stamped on receipt; parsed after the queue.
    Syslog {
        data: Vec<u8>,
        received: OffsetDateTime,
        creds: Option<Creds>,
        source: Source,
    },
    /// A line a source already made into an event.
    Event(Box<Event>, Source),
}

/// Sources, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    SyslogUnix,
    SyslogUdp,
    SyslogTcp,
    Run,
    Docker,
    File,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::SyslogUnix,
        Source::SyslogUdp,
        Source::SyslogTcp,
        Source::Run,
        Source::Docker,
        Source::File,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::SyslogUnix => "syslog_unix",
            Source::SyslogUdp => "syslog_udp",
            Source::SyslogTcp => "syslog_tcp",
            Source::Run => "run",
            Source::Docker => "docker",
            Source::File => "file",
        }
    }

    pub fn index(self) -> usize {
        Source::ALL.iter().position(|s| *s == self).unwrap()
    }
}

impl Item {
    fn weight(&self) -> usize {
        match self {
            Item::Syslog { data, .. } => 64 + data.len(),
            Item::Event(e, _) => e.weight(),
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Item::Syslog { source, .. } | Item::Event(_, source) => *source,
        }
    }
}

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
        m.received[source.index()].fetch_add(1, Relaxed);
        let w = item.weight();
        if self.bytes.fetch_add(w, Relaxed) + w > self.max_bytes {
            self.bytes.fetch_sub(w, Relaxed);
            m.queue_dropped[source.index()].fetch_add(1, Relaxed);
            return false;
        }
        match self.tx.try_send((item, w)) {
            Ok(()) => {
                m.queue_pushed.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(w, Relaxed);
                m.queue_dropped[source.index()].fetch_add(1, Relaxed);
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
                        m.received[source.index()].fetch_add(1, Relaxed);
                        m.queue_pushed.fetch_add(1, Relaxed);
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
        self.metrics.queue_popped.fetch_add(1, Relaxed);
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

/// Drops counted per source since the last drop report.
pub fn take_drops(m: &Metrics, reported: &mut [u64; 6]) -> Vec<(Source, u64)> {
    let mut out = Vec::new();
    for s in Source::ALL {
        let total = m.queue_dropped[s.index()].load(Relaxed);
        let new = total - reported[s.index()];
        if new > 0 {
            out.push((s, new));
            reported[s.index()] = total;
        }
    }
    out
}
