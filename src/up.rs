//! `sawmill up`: an indexer, the web UI and a shipper with its syslog socket in the data
//! directory, all on this machine, for a first look; with `--demo`, traffic to look at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use sawmill_indexer::{ApiConfig, StoreConfig};

use crate::serve::{shipper_stopping, ui_listener, RunningIndexer};
use crate::signal::shutdown_signal;

/// Everything `sawmill up` is told.
pub struct UpConfig {
    /// Where the indexer listens.
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub api: ApiConfig,
    /// Where the web UI listens.
    pub ui_listen: SocketAddr,
    /// The UI's TLS (the indexer's is in `api`).
    pub ui_tls: Option<std::sync::Arc<sawmill_http::ServerTls>>,
    /// How the shipper reaches the indexer (its CA, its ingest token).
    pub shipper: sawmill_http::Connect,
    /// How the UI reaches the indexer (its CA, its read token).
    pub ui: sawmill_http::Connect,
    /// Feed sample traffic.
    pub demo: bool,
}

/// Runs until a stop signal, then stops the parts in the order that loses nothing: the
/// shipper delivers into the indexer before the indexer commits and stops.
pub async fn up(cfg: UpConfig) -> anyhow::Result<()> {
    let stop = shutdown_signal(format!(
        "{} Then the indexer commits what was acknowledged.",
        shipper_stopping(shipper_drain_timeout())
    ));
    let data = cfg.store.data.clone();
    let indexer = RunningIndexer::start(
        cfg.listen,
        cfg.store,
        cfg.api,
        sawmill_indexer::RepairConfig::default(),
    )
    .await?;
    let ui = RunningUi::start(cfg.ui_listen, cfg.ui_tls, &indexer.local_url, cfg.ui).await?;
    // The store made the directory; a full path keeps the printed commands valid anywhere.
    let data = std::fs::canonicalize(&data).unwrap_or(data);
    let socket = data.join("dev-log");
    let shipper = start_shipper(&indexer.local_url, cfg.shipper, &data, &socket).await?;
    print_guide(&indexer.url, &ui.url, &data, &socket);
    let demo = cfg.demo.then(|| Demo::start(&socket, &ui.url));
    stop.await;
    // The UI's stop runs while the shipper drains: each is bounded, and the sum is shorter.
    let ui_stopped = ui.stop();
    if let Some(demo) = demo {
        demo.stop();
    }
    // The shipper drains into the indexer before the indexer stops.
    shipper.stop().await;
    ui_stopped.await??;
    indexer.stop().await?;
    tracing::info!("Stopped.");
    Ok(())
}

/// How long the shipper `up` starts may take to deliver at a stop: the shipper's default.
fn shipper_drain_timeout() -> Duration {
    sawmill_shipper::ShipperConfig::new(Vec::new(), PathBuf::new()).drain_timeout
}

/// The web UI serving on a spawned task.
struct RunningUi {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningUi {
    /// Binds `listen` and prints `sawmill ui listening on URL`: tests read this second line
    /// to find the UI's port.
    async fn start(
        listen: SocketAddr,
        tls: Option<std::sync::Arc<sawmill_http::ServerTls>>,
        indexer_url: &str,
        connect: sawmill_http::Connect,
    ) -> anyhow::Result<RunningUi> {
        let (listener, url) = ui_listener(listen, &tls).await?;
        println!("sawmill ui listening on {url}");
        let client = sawmill_ui::Client::new(vec![indexer_url.to_string()], connect).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = sawmill_ui::ServeConfig {
            tls,
            ..Default::default()
        };
        let server = tokio::spawn(sawmill_ui::serve(listener, client, None, config, async {
            let _ = stopped.await;
        }));
        Ok(RunningUi { url, stop, server })
    }

    /// Asks the UI to stop; the handle completes once it has.
    fn stop(self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let _ = self.stop.send(());
        self.server
    }
}

/// A shipper serving the syslog socket `socket`, keeping its state under `data`.
async fn start_shipper(
    indexer_url: &str,
    connect: sawmill_http::Connect,
    data: &Path,
    socket: &Path,
) -> anyhow::Result<sawmill_shipper::Shipper> {
    let mut cfg =
        sawmill_shipper::ShipperConfig::new(vec![indexer_url.to_string()], data.join("shipper"));
    cfg.syslog_socket = Some(socket.to_path_buf());
    cfg.connect = connect;
    sawmill_shipper::Shipper::start(cfg)
        .await
        .context("cannot start the shipper")
}

/// Tells a newcomer how to send logs and where to look at them.
fn print_guide(url: &str, ui_url: &str, data: &Path, socket: &Path) {
    let s = socket.display();
    println!("  syslog socket: {s}");
    println!("  log to it:     logger -u {s} -t myapp 'hello from logger'");
    println!("  wrap a process: sawmill run --to {s} -- your-command args");
    println!("  containers:    docker run --rm -v {}:/run/sawmill busybox sh -c 'ln -sf /run/sawmill/dev-log /dev/log && logger -t box hello'", data.display());
    println!(
        "  search:        curl '{url}{}?q=*&limit=5'",
        sawmill_record::api::SEARCH
    );
    println!("  open the UI:   {ui_url}/");
}

/// The demo traffic: five services logging to the socket, and a batch worker under
/// `sawmill run`.
struct Demo {
    services: tokio::task::JoinHandle<()>,
    worker: Option<Child>,
}

impl Demo {
    fn start(socket: &Path, ui_url: &str) -> Demo {
        println!("  demo:          five services (gateway, auth, orders, inventory, payments) log to the socket and a batch-worker runs under `sawmill run`; failed requests: {ui_url}/?q=severity:err");
        let cfg = sawmill_shipper::DemoConfig {
            socket: socket.to_path_buf(),
            rate: 4.0,
            backfill: Duration::from_secs(15 * 60),
        };
        let services = tokio::spawn(async move {
            if let Err(e) = sawmill_shipper::Demo::new(seed()).run(cfg).await {
                tracing::error!(error = %e, "Demo traffic stopped.");
            }
        });
        let worker = start_batch_worker(socket)
            .map_err(|e| tracing::warn!(error = %e, "Demo batch worker not started."))
            .ok();
        Demo { services, worker }
    }

    /// Ends the traffic before the shipper stops: a stop closes the socket to senders, and
    /// the demo would keep trying it and warn that its lines are not delivered.
    fn stop(self) {
        self.services.abort();
        if let Some(mut w) = self.worker {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The demo's batch worker: a real child process writing plain lines to stdout and, now and
/// then, a warning to stderr, as a batch job does. It exists to show `sawmill run` wrapping
/// a process the way a user would; a shell loop is the smallest such program found on every
/// machine, and needs no code of ours that would blur what is being shown.
const BATCH_WORKER_SCRIPT: &str = "i=0; while true; do i=$((i+1)); echo \"batch $i processed items=$((i*7 % 50)) request_id=batch-$i\"; if [ $((i % 5)) -eq 0 ]; then echo \"level=warning batch $i slow: took 2300ms\" >&2; fi; sleep 2; done";

/// `sawmill run --service batch-worker --to SOCKET -- sh -c BATCH_WORKER_SCRIPT`.
fn start_batch_worker(socket: &Path) -> std::io::Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["run", "--service", "batch-worker", "--to"])
        .arg(socket)
        .args(["--", "sh", "-c", BATCH_WORKER_SCRIPT])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn()
}

/// Makes the child get SIGTERM when this process dies: if `up` is killed outright (no
/// chance to stop its children), the batch worker must not outlive it and keep running
/// orphaned.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the new process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    };
}

/// A seed for the demo's randomness: different on every run.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
