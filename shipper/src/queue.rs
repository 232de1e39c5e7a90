//! The one bounded queue between sources and the forwarder: bounded by records and bytes,
//! it drops the newest item when full and counts the drop per source, so a source never
//! blocks.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
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
