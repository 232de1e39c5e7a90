//! CPU priority of the shipper's background threads: work that can wait in a queue yields
//! the CPU to the applications being logged and to the readers that keep sockets drained.

/// Puts the calling thread in the `SCHED_IDLE` class: it runs on CPU nobody else wants.
///
/// Why: on this kind of host `/dev/log` holds only `net.unix.max_dgram_qlen` datagrams
/// (10 by default), so an application's `syslog(3)` blocks whenever the socket reader is
/// not scheduled promptly. Measured on 2 cores, a batcher at normal priority (or nice 10
/// or 19) halved the rate a sender could log at; in the idle class it costs the sender
/// about 10 %. The price is paid by the queue instead: if the machine stays saturated,
/// the queue fills and records are dropped, counted and reported, as the contract says.
/// Failure leaves the normal class, which is only slower for senders, so it is ignored
/// after a debug line.
pub fn run_only_when_idle() {
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter.
    let param = libc::sched_param { sched_priority: 0 };
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "Cannot move a background thread to the idle scheduling class.");
    }
}
