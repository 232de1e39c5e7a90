//! TLS benchmark: ingest throughput of a real `sawmill indexer` over HTTPS with an ingest
//! token, against the same indexer over plain HTTP, in one process with the same records
//! (issue 13's target: at least 0.9x). Each round starts a fresh plain and a fresh TLS
//! indexer, in turn, so drift on a shared machine falls on both; the median round counts.
//! The certificates are made with `openssl` for the run (an EC P-256 CA and server key).
//!
//! Run: `cargo bench --bench tls` (`SAWMILL_BENCH_RECORDS=200000` for a quicker run,
//! `SAWMILL_BENCH_ROUNDS` for more rounds).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{env_or, generate, start_server, Data};

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bench CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Sends every batch from two threads, each on its own keep-alive connection (as the
/// indexer bench does); returns the seconds taken.
fn ingest(
    d: &Data,
    url: &str,
    client: impl Fn() -> reqwest::blocking::Client + Sync,
    token: Option<&str>,
) -> f64 {
    let next = AtomicUsize::new(0);
    let url = format!("{url}/api/v1/ingest");
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let c = client();
                while let Some(b) = d.batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut req = c.post(&url).body(b.clone());
                    if let Some(t) = token {
                        req = req.bearer_auth(t);
                    }
                    let resp = req.send().unwrap();
                    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 1_000_000);
    let rounds: usize = env_or("SAWMILL_BENCH_ROUNDS", 3);
    let d = generate(n);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    certificates(&tmp);
    std::fs::write(tmp.join("tokens"), "bench-ingest-token\n").unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tmp.join("ca.pem")).unwrap()).unwrap();
    let plain_client = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    };
    let tls_client = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .build()
            .unwrap()
    };
    println!(
        "{} records, {:.0} MB of NDJSON in {} batches, {rounds} rounds",
        d.records,
        d.raw_bytes as f64 / 1e6,
        d.batches.len()
    );
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let data = tmp.join(format!("plain-{round}"));
        let server = start_server(&data, &[]);
        let secs = ingest(&d, &server.url, plain_client, None);
        drop(server);
        let _ = std::fs::remove_dir_all(&data);
        plain.push(d.records as f64 / secs);

        let data = tmp.join(format!("tls-{round}"));
        let (cert, key, tokens) = (
            tmp.join("server.pem"),
            tmp.join("server.key"),
            tmp.join("tokens"),
        );
        let server = start_server(
            &data,
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                "--ingest-token-file",
                tokens.to_str().unwrap(),
            ],
        );
        assert!(server.url.starts_with("https://"), "{}", server.url);
        let secs = ingest(&d, &server.url, tls_client, Some("bench-ingest-token"));
        drop(server);
        let _ = std::fs::remove_dir_all(&data);
        tls.push(d.records as f64 / secs);
        println!(
            "round {round}: plain HTTP {:>9.0} records/s   HTTPS + token {:>9.0} records/s   ({:.3}x)",
            plain[round],
            tls[round],
            tls[round] / plain[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (p, t) = (median(&mut plain), median(&mut tls));
    println!(
        "ingest, plain HTTP (baseline)   {p:>9.0} records/s  {:>6.1} MB/s",
        p * d.raw_bytes as f64 / d.records as f64 / 1e6
    );
    println!(
        "ingest, HTTPS with a token      {t:>9.0} records/s  {:>6.1} MB/s",
        t * d.raw_bytes as f64 / d.records as f64 / 1e6
    );
    println!(
        "HTTPS / plain                   {:.3}x (target: at least 0.9x)",
        t / p
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
