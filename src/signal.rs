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

/// What SIGHUP reads again: listeners' certificates, token files, clients' tokens. The
/// certificate files are also watched (every few seconds), so a renewal by cert-manager,
/// certbot or a mounted Secret takes effect without a signal.
#[derive(Default)]
pub struct Reload {
    items: Vec<Item>,
    watched: Vec<std::path::PathBuf>,
}

/// What is reloaded, whether its files are watched (certificates), and how.
type Item = (
    &'static str,
    bool,
    Box<dyn Fn() -> Result<(), String> + Send + Sync>,
);

impl Reload {
    pub fn server_tls(&mut self, tls: &Option<std::sync::Arc<sawmill_http::ServerTls>>) {
        if let Some(t) = tls {
            let f = t.files();
            self.watched.push(f.cert.clone());
            self.watched.push(f.key.clone());
            self.watched.extend(f.client_ca.clone());
            let t = t.clone();
            self.items.push((
                "certificate",
                true,
                Box::new(move || t.reload().map_err(|e| e.to_string())),
            ));
        }
    }

    pub fn access(&mut self, access: &sawmill_http::Access) {
        if access.any() {
            let a = access.clone();
            self.add("token files", move || a.reload().map_err(|e| e.to_string()));
        }
    }

    pub fn connect(&mut self, connect: &sawmill_http::Connect) {
        if connect.token.is_set() {
            let c = connect.clone();
            self.add("--token-file", move || {
                c.reload().map_err(|e| e.to_string())
            });
        }
    }

    /// Reads `what` again with `reload` at each SIGHUP.
    pub fn add(
        &mut self,
        what: &'static str,
        reload: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.items.push((what, false, Box::new(reload)));
    }

    /// Reloads on every SIGHUP, and when a watched file changes, until the process ends. A
    /// file that cannot be read leaves what is in use, with an error in the log.
    pub fn start(self) {
        use tokio::signal::unix::{signal, SignalKind};
        if self.items.is_empty() {
            return;
        }
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "Cannot catch SIGHUP; certificates and tokens are not reloaded.");
                return;
            }
        };
        tokio::spawn(async move {
            let stamp = |files: &[std::path::PathBuf]| -> Vec<Option<std::time::SystemTime>> {
                files
                    .iter()
                    .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                    .collect()
            };
            let mut seen = stamp(&self.watched);
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            loop {
                let (why, only_watched) = tokio::select! {
                    _ = hup.recv() => ("SIGHUP", false),
                    _ = tick.tick() => {
                        if stamp(&self.watched) == seen {
                            continue;
                        }
                        ("a certificate file changed", true)
                    }
                };
                // Taken before reading, and kept only if every read succeeds: a
                // certificate caught half-written is read again at the next tick.
                let now = stamp(&self.watched);
                let mut all_read = true;
                for (what, watched, reload) in &self.items {
                    if only_watched && !watched {
                        continue;
                    }
                    match reload() {
                        Ok(()) => tracing::info!(reason = why, what, "Reloaded."),
                        Err(e) => {
                            all_read = false;
                            tracing::error!(reason = why, what, error = %e, "Could not reload; what is in use stays.")
                        }
                    }
                }
                if all_read {
                    seen = now;
                }
            }
        });
    }
}

/// How often watched certificate files are checked for a change.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
