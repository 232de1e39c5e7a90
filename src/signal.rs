//! The stop signals: SIGTERM (service managers, orchestrators) and SIGINT (Ctrl-C).

/// Catches SIGTERM and SIGINT from the moment it is called, so that a signal during start-up
/// stops the process cleanly once it has started instead of killing it; completes at the
/// first one, after logging `stopping`: what this process does now, in a full sentence.
pub fn shutdown_signal(stopping: String) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("{stopping}");
    }
}
