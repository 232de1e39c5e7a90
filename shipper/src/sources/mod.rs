//! Where records enter: one module per source, each with a config that spawns it onto the
//! queue. Sources only read, frame and stamp; parsing waits until after the queue.
//!
//! - [`socket`]: syslog on a unix datagram socket (`/dev/log`), over UDP and over TCP.
//! - [`file`]: files matching globs (Docker json-file, CRI, plain text).
//! - [`docker`]: containers' output through the Docker Engine API.

pub mod docker;
pub mod file;
pub mod socket;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::queue::Queue;

/// What every source is given.
#[derive(Clone)]
pub struct Context {
    /// Where what it reads goes.
    pub queue: Queue,
    /// Raised when the shipper stops: sources stop reading.
    pub stop: Arc<AtomicBool>,
    /// Held (shared) by sources that checkpoint while a line is enqueued and checkpointed; a
    /// stop takes it exclusively after raising `stop`, so no line is checkpointed after the
    /// queue was drained.
    pub gate: Arc<RwLock<()>>,
}

/// A source that was started.
#[derive(Default)]
pub struct Running {
    /// The thread a stop waits for; none for a source that cannot be joined (Docker, whose
    /// followers block on the engine's streams and stop reading once `stop` is raised).
    pub thread: Option<JoinHandle<()>>,
    /// The syslog socket, kept open (and its file in place) until the shipper has stopped.
    pub socket: Option<Arc<socket::SyslogSocket>>,
}

/// A source's settings, which start it.
pub trait SourceConfig {
    /// Binds or opens what the source reads, and starts reading it onto `cx.queue` until
    /// `cx.stop` is raised.
    fn spawn(self: Box<Self>, cx: &Context) -> Result<Running>;
}

/// Starts a named thread.
pub fn thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io(name, e))
}
