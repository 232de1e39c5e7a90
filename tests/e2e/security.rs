//! TLS and tokens (DESIGN.md "Security"): a listener given a certificate speaks HTTPS only,
//! ingest and read routes each take their own tokens, and every client — the shipper,
//! `sawmill query`, the UI, curl, Python, rsyslog — verifies the indexer's certificate and
//! sends its token. rsyslog also forwards to the shipper over TLS (RFC 5425). Certificates
//! and tokens are re-read on SIGHUP without dropping anyone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::Method;
use serde_json::{json, Value};

use crate::util::*;

/// How a request presents its token.
#[derive(Clone, Copy, Debug)]
enum Auth<'a> {
    Nothing,
    Bearer(&'a str),
    /// Basic auth with the token as the password and a user name of the client's choosing,
    /// as Elasticsearch clients (Vector, Filebeat, Logstash) send it.
    Basic(&'a str),
}

fn send(http: &Client, method: Method, url: &str, body: Option<Vec<u8>>, auth: Auth) -> Response {
    let mut req = http.request(method.clone(), url);
    if let Some(b) = body {
        req = req.body(b);
    }
    req = match auth {
        Auth::Nothing => req,
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::Basic(t) => req.basic_auth("elastic", Some(t)),
    };
    req.send()
        .unwrap_or_else(|e| panic!("{method} {url} ({auth:?}): no answer: {e}"))
}

/// Sends, returning the status and the JSON (or plain text) answer.
fn call(
    http: &Client,
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
    auth: Auth,
) -> (u16, Value) {
    let resp = send(http, method, url, body, auth);
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The total of a search for `q` at `base` (an indexer's or `sawmill query`'s URL).
fn search_total(http: &Client, base: &str, auth: Auth, q: &str) -> u64 {
    let url = format!("{base}/api/v1/search?q={}&limit=0", urlencode(q));
    let (status, v) = call(http, Method::GET, &url, None, auth);
    assert_eq!(status, 200, "GET {url}: {v}");
    v["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("GET {url}: {v}"))
}

fn wait_for_total(http: &Client, base: &str, auth: Auth, q: &str, n: u64) {
    eventually(
        &format!("search {q:?} at {base} reaching {n}"),
        60,
        || match search_total(http, base, auth, q) {
            t if t == n => Ok(()),
            t => Err(format!("total {t}")),
        },
    );
}

/// POSTs NDJSON records to `base`'s ingest route; the status and the answer.
fn ingest(http: &Client, base: &str, auth: Auth, records: &[Value]) -> (u16, Value) {
    let url = format!("{base}/api/v1/ingest");
    call(http, Method::POST, &url, Some(ndjson(records)), auth)
}

/// The text of `base`'s `/metrics`, read with `auth`.
fn metrics(http: &Client, base: &str, auth: Auth) -> String {
    let resp = send(http, Method::GET, &format!("{base}/metrics"), None, auth);
    assert_eq!(resp.status().as_u16(), 200, "GET {base}/metrics");
    resp.text().unwrap()
}

/// A token as an operator makes one: random, so that finding it in a log means it leaked.
fn new_token(kind: &str) -> String {
    format!(
        "{kind}-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

/// Whether rsyslogd is installed; says the test is skipped when not (CI installs it, with
/// `plugin`, the Debian package of the module the test needs).
fn have_rsyslog(plugin: &str) -> bool {
    let found = rsyslogd().is_some();
    if !found {
        eprintln!("skipped: rsyslogd is not installed (Debian's rsyslog and {plugin} packages; CI installs them)");
    }
    found
}

/// An indexer serving HTTPS with CA 1's server certificate and committing every 100 ms, its
/// ingest and read routes each needing a fresh token: the indexer and the two tokens.
fn secure_indexer(pki: &Pki, dir: &TempDir) -> (Indexer, String, String) {
    let (ingest, read) = (new_token("ingest"), new_token("read"));
    let (ingest_file, read_file) = (dir.path().join("ingest"), dir.path().join("read"));
    token_file(&ingest_file, &[&ingest]);
    token_file(&read_file, &[&read]);
    let ix = Indexer::start(
        &dir.path().join("ix"),
        &[
            "--commit-interval",
            "100ms",
            "--tls-cert",
            path_str(&pki.ca1.server_cert),
            "--tls-key",
            path_str(&pki.ca1.server_key),
            "--ingest-token-file",
            path_str(&ingest_file),
            "--read-token-file",
            path_str(&read_file),
        ],
    );
    (ix, ingest, read)
}

/// Writes a token file as an operator keeps one: a comment, then one token a line, then a
/// blank line (servers ignore comments and blank lines; a client sends its first token).
fn token_file(path: &Path, tokens: &[&str]) {
    let mut text = String::from("# sawmill tokens, one a line\n");
    for t in tokens {
        text.push_str(t);
        text.push('\n');
    }
    text.push('\n');
    replace_file(path, text.as_bytes());
}

/// Writes aside and renames into place, as configuration management does: a reload never
/// reads half a file.
fn replace_file(path: &Path, bytes: &[u8]) {
    let aside = PathBuf::from(format!("{}.new", path.display()));
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// Puts the server certificate and key `ca` signed at `cert` and `key`, the paths a
/// server's `--tls-cert` and `--tls-key` name.
fn install_server_cert(ca: &Authority, cert: &Path, key: &Path) {
    replace_file(cert, &std::fs::read(&ca.server_cert).unwrap());
    replace_file(key, &std::fs::read(&ca.server_key).unwrap());
}

fn hangup(child: &Child) {
    let r = unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert_eq!(r, 0, "SIGHUP to {}", child.id());
}

/// Asserts none of `tokens` appears in a process's log.
fn assert_not_logged(what: &str, log: &str, tokens: &[&str]) {
    for t in tokens {
        assert!(!log.contains(t), "{what}'s log holds the token {t}:\n{log}");
    }
}

/// A request refused for its credentials: 401, a challenge naming Bearer, a JSON error.
fn assert_refused(http: &Client, method: Method, url: &str, body: Option<Vec<u8>>, auth: Auth) {
    let resp = send(http, method.clone(), url, body, auth);
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().unwrap_or_default();
    assert_eq!(status, 401, "{method} {url} with {auth:?}: {text}");
    assert!(
        challenge.contains("Bearer"),
        "{method} {url} with {auth:?}: WWW-Authenticate is {challenge:?}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: the 401's body is not JSON ({e}): {text}"));
    assert!(v["error"].is_string(), "{method} {url}: {v}");
}

/// A request let through. The body is left unread: a tail streams for as long as it is read.
fn assert_allowed(http: &Client, method: Method, url: &str, body: Option<Vec<u8>>, auth: Auth) {
    let resp = send(http, method.clone(), url, body, auth);
    let status = resp.status();
    assert!(
        status.is_success(),
        "{method} {url} with {auth:?}: {status} {}",
        resp.text().unwrap_or_default()
    );
}

/// One route of the indexer's API with parameters it answers 2xx to once authorised.
struct Route {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
}

fn route(method: Method, path: &str, body: Option<Vec<u8>>) -> Route {
    Route {
        method,
        path: path.to_string(),
        body,
    }
}

#[test]
fn every_route_needs_the_right_token_over_tls() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-routes");
    let (ix, ingest_token, read_token) = secure_indexer(&pki, &dir);
    let wrong = new_token("wrong");
    assert!(ix.url.starts_with("https://"), "{}", ix.url);
    let tls = tls_client(&[&pki.ca1.ca], None);
    let (ingest_auth, read_auth) = (Auth::Bearer(&ingest_token), Auth::Bearer(&read_token));

    // One record to point the context and trace routes at.
    let record =
        json!({"message": "secured record", "service": "secure", "trace_id": "trace-sec-1"});
    let (s, v) = ingest(&tls, &ix.url, ingest_auth, &[record]);
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    wait_for_total(&tls, &ix.url, read_auth, "service:secure", 1);
    let (s, found) = call(
        &tls,
        Method::GET,
        &ix.api("/api/v1/search?q=service:secure"),
        None,
        read_auth,
    );
    assert_eq!(s, 200, "{found}");
    let id = found["hits"][0]["_id"].as_str().unwrap().to_string();

    let bulk = || {
        Some(b"{\"index\":{}}\n{\"message\":\"secured bulk\",\"service\":\"secure\"}\n".to_vec())
    };
    let ingest_routes = [
        route(
            Method::POST,
            "/api/v1/ingest",
            Some(ndjson(&[
                json!({"message": "secured ingest", "service": "secure"}),
            ])),
        ),
        route(Method::POST, "/_bulk", bulk()),
        route(Method::POST, "/secure-logs/_bulk", bulk()),
    ];
    let read_routes = [
        route(Method::GET, "/api/v1/search?q=secured", None),
        route(Method::GET, "/api/v1/histogram?q=secured", None),
        route(Method::GET, "/api/v1/terms?field=service", None),
        route(
            Method::GET,
            &format!("/api/v1/context/{}", urlencode(&id)),
            None,
        ),
        route(Method::GET, "/api/v1/trace/trace-sec-1", None),
        route(Method::GET, "/api/v1/tail?q=secured", None),
        route(Method::GET, "/api/v1/repair/holdings", None),
        route(
            Method::GET,
            "/api/v1/repair/records?src=nobody&from=1&to=10",
            None,
        ),
        route(Method::GET, "/api/v1/repair/keys?start=0", None),
        route(
            Method::POST,
            "/api/v1/repair/by-key",
            Some(br#"{"start":0,"keys":["none"]}"#.to_vec()),
        ),
        route(Method::GET, "/metrics", None),
    ];
    // Each kind of token opens its own routes and no other's; refusals are counted by what
    // the route needs, so an operator sees which kind of client holds a stale token.
    let unauthorized =
        |need: &str| format!("sawmill_indexer_requests_unauthorized_total{{need=\"{need}\"}}");
    let mut refusals = Vec::new();
    for (need, routes, right, other) in [
        (
            "ingest",
            &ingest_routes[..],
            ingest_token.as_str(),
            read_token.as_str(),
        ),
        (
            "read",
            &read_routes[..],
            read_token.as_str(),
            ingest_token.as_str(),
        ),
    ] {
        let mut refused = 0u64;
        for r in routes {
            let url = ix.api(&r.path);
            for auth in [
                Auth::Nothing,
                Auth::Bearer(&wrong),
                Auth::Basic(&wrong),
                Auth::Bearer(other),
            ] {
                assert_refused(&tls, r.method.clone(), &url, r.body.clone(), auth);
                refused += 1;
            }
            for auth in [Auth::Bearer(right), Auth::Basic(right)] {
                assert_allowed(&tls, r.method.clone(), &url, r.body.clone(), auth);
            }
        }
        refusals.push((need, refused));
    }
    // `/` is what Elasticsearch clients (Vector, Filebeat) ask for the version before
    // shipping, with their ingest credentials: either token opens it, nothing else does.
    let root = ix.api("/");
    for auth in [Auth::Nothing, Auth::Bearer(&wrong), Auth::Basic(&wrong)] {
        assert_refused(&tls, Method::GET, &root, None, auth);
    }
    refusals[1].1 += 3;
    for auth in [ingest_auth, read_auth, Auth::Basic(&ingest_token)] {
        assert_allowed(&tls, Method::GET, &root, None, auth);
    }
    // Load balancers and orchestrators probe without credentials.
    let (s, v) = call(&tls, Method::GET, &ix.api("/healthz"), None, Auth::Nothing);
    assert_eq!(s, 200, "{v}");
    let text = metrics(&tls, &ix.url, read_auth);
    for (need, refused) in refusals {
        assert_eq!(
            metric_in(&text, &unauthorized(need)),
            refused as f64,
            "{need}"
        );
    }

    // Plain HTTP to the TLS port gets no answer: nothing is served unencrypted.
    let plain = ix.url.replacen("https://", "http://", 1);
    let answer = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{plain}/healthz"))
        .send();
    assert!(
        answer.is_err(),
        "plain HTTP to {plain} answered {:?}",
        answer.map(|r| r.status())
    );

    assert_not_logged(
        "the indexer",
        &ix.log_text(),
        &[&ingest_token, &read_token, &wrong],
    );
}

#[test]
fn mtls_refuses_a_client_certificate_it_does_not_trust() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-mtls");
    // Configured through the environment, as a container is.
    let ix = Indexer::start_env(
        &dir.path().join("ix"),
        &[],
        &[
            ("SAWMILL_TLS_CERT", path_str(&pki.ca1.server_cert)),
            ("SAWMILL_TLS_KEY", path_str(&pki.ca1.server_key)),
            ("SAWMILL_CLIENT_CA", path_str(&pki.ca1.ca)),
        ],
    );
    assert!(ix.url.starts_with("https://"), "{}", ix.url);
    let url = ix.api("/healthz");
    let with_identity = |identity: Option<&Path>| {
        tls_client(&[&pki.ca1.ca], identity)
            .get(&url)
            .send()
            .map(|r| r.status().as_u16())
    };
    let anonymous = with_identity(None);
    assert!(
        anonymous.is_err(),
        "no client certificate: answered {anonymous:?}"
    );
    let stranger = with_identity(Some(pki.ca2.client_identity.as_path()));
    assert!(
        stranger.is_err(),
        "a client certificate from an untrusted CA: answered {stranger:?}"
    );
    // The refusals left the listener serving the clients it trusts.
    let member = with_identity(Some(pki.ca1.client_identity.as_path()))
        .unwrap_or_else(|e| panic!("a client certificate from the CA: {e}"));
    assert_eq!(member, 200);
}

/// `url` with its host replaced by 127.0.0.1: a server listening on every address prints
/// 0.0.0.0, which its certificate does not name.
fn loopback(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let port = rest.trim_end_matches('/').rsplit_once(':').unwrap().1;
    format!("{scheme}://127.0.0.1:{port}")
}

#[test]
fn a_public_address_without_tls_is_refused() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-public");
    // Plain HTTP off loopback would put tokens and logs on the network in clear.
    let mut cmd = sawmill();
    cmd.args(["indexer", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("refused"));
    let (status, stdout, stderr) = run_to_exit(cmd, 30);
    assert_eq!(status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--insecure"),
        "the error names both ways out: {stderr}"
    );

    // Every other listener says the same: `up` (its indexer, and its UI, which has no
    // sign-in even with TLS) and `query`.
    let data = dir.path().join("up");
    let (cert, key) = (
        path_str(&pki.ca1.server_cert),
        path_str(&pki.ca1.server_key),
    );
    for (args, names) in [
        (
            vec!["up", "--listen", "0.0.0.0:0", "--ui-listen", "127.0.0.1:0"],
            "--tls-cert",
        ),
        (
            vec![
                "up",
                "--listen",
                "127.0.0.1:0",
                "--ui-listen",
                "0.0.0.0:0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            "--users-file",
        ),
        (
            vec![
                "query",
                "--listen",
                "0.0.0.0:0",
                "--indexer",
                "http://127.0.0.1:9",
            ],
            "--tls-cert",
        ),
    ] {
        let mut cmd = sawmill();
        cmd.args(&args);
        if args[0] == "up" {
            cmd.arg("--data").arg(&data);
        }
        let (status, stdout, stderr) = run_to_exit(cmd, 30);
        assert_eq!(status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
        assert!(!stdout.contains("listening on"), "{args:?}: {stdout}");
        assert!(
            stderr.contains(names) && stderr.contains("--insecure"),
            "{args:?}: {stderr}"
        );
    }

    // The operator who means it says so.
    let ix = Indexer::start_at("0.0.0.0:0", &dir.path().join("insecure"), &["--insecure"]);
    let url = loopback(&ix.url);
    assert!(url.starts_with("http://"), "{}", ix.url);
    get_ok(&format!("{url}/healthz"));
    assert!(ix.terminate().success());

    let ix = Indexer::start_at(
        "0.0.0.0:0",
        &dir.path().join("tls"),
        &[
            "--tls-cert",
            path_str(&pki.ca1.server_cert),
            "--tls-key",
            path_str(&pki.ca1.server_key),
        ],
    );
    let url = loopback(&ix.url);
    assert!(url.starts_with("https://"), "{}", ix.url);
    let (s, v) = call(
        &tls_client(&[&pki.ca1.ca], None),
        Method::GET,
        &format!("{url}/healthz"),
        None,
        Auth::Nothing,
    );
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_shipper_delivers_over_tls_with_a_token_and_reports_a_replica_it_cannot_verify() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-shipper");
    let token = new_token("ingest");
    let tokens = dir.path().join("ingest-tokens");
    token_file(&tokens, &[&token]);
    let start = |name: &str, cert: &Path, key: &Path| {
        Indexer::start(
            &dir.path().join(name),
            &[
                "--commit-interval",
                "100ms",
                "--tls-cert",
                path_str(cert),
                "--tls-key",
                path_str(key),
                "--ingest-token-file",
                path_str(&tokens),
            ],
        )
    };
    let a = start("a", &pki.ca1.server_cert, &pki.ca1.server_key);
    // B shows a certificate from a CA the shipper does not trust, from files of its own
    // that the test replaces later.
    let (b_cert, b_key) = (dir.path().join("b-cert.pem"), dir.path().join("b-key.pem"));
    install_server_cert(&pki.ca2, &b_cert, &b_key);
    let b = start("b", &b_cert, &b_key);
    let sh = Shipper::start(
        dir.path(),
        &[&a.url, &b.url],
        &[
            "--ca-file",
            path_str(&pki.ca1.ca),
            "--token-file",
            path_str(&tokens),
        ],
    );
    // The test reads both replicas whichever certificate they show.
    let reader = tls_client(&[&pki.ca1.ca, &pki.ca2.ca], None);
    let q = "service:tlsship";
    for i in 0..100 {
        sh.send(format!("<13>Nov 27 07:57:02 tlsship[1]: n={i} first batch").as_bytes());
    }
    wait_for_total(&reader, &a.url, Auth::Nothing, q, 100);
    // B is treated as unreachable, and the log says why, naming it.
    eventually("the shipper logging B's certificate", 30, || {
        let log = sh.log_text();
        log.lines()
            .any(|l| l.contains(&b.url) && l.to_lowercase().contains("certificate"))
            .then_some(())
            .ok_or_else(|| format!("no line names {} and a certificate:\n{log}", b.url))
    });
    assert_eq!(search_total(&reader, &b.url, Auth::Nothing, q), 0);
    // The line naming the certificate may be discovery's health check, before a batch failed.
    sh.wait_counted(&format!(
        "sawmill_shipper_batches_retried_total{{replica=\"{}\"}}",
        b.url
    ));

    // B gets a certificate the shipper trusts; the shipper's retries now get through.
    install_server_cert(&pki.ca1, &b_cert, &b_key);
    hangup(&b.child);
    for i in 0..100 {
        sh.send(format!("<13>Nov 27 07:57:02 tlsship[1]: n={i} second batch").as_bytes());
    }
    wait_for_total(&reader, &a.url, Auth::Nothing, q, 200);
    // Both batches: the first was held for B while it could not be verified.
    wait_for_total(&reader, &b.url, Auth::Nothing, q, 200);
    for r in [&a.url, &b.url] {
        let delivered = sh.metric(&format!(
            "sawmill_shipper_replica_records_delivered_total{{replica=\"{r}\"}}"
        ));
        assert_eq!(delivered, 200.0, "replica {r}");
    }
    assert_not_logged("the shipper", &sh.log_text(), &[&token]);
    assert_not_logged("indexer A", &a.log_text(), &[&token]);
    assert_not_logged("indexer B", &b.log_text(), &[&token]);
}

/// The rotation test's batch `n`: five records.
fn rotation_batch(n: usize) -> Vec<u8> {
    let records: Vec<Value> = (0..5)
        .map(|i| json!({"message": format!("rotation {n}.{i}"), "service": "rotation"}))
        .collect();
    ndjson(&records)
}

#[test]
fn token_rotation_under_load_fails_no_request_with_a_valid_token() {
    let dir = TempDir::new("sec-rotate");
    let (old, new) = (new_token("old"), new_token("new"));
    let tokens = dir.path().join("ingest-tokens");
    token_file(&tokens, &[&old]);
    let ix = Indexer::start(
        &dir.path().join("ix"),
        &[
            "--commit-interval",
            "100ms",
            "--ingest-token-file",
            path_str(&tokens),
        ],
    );
    let http = client();
    let probe = |token: &str| {
        ingest(
            &http,
            &ix.url,
            Auth::Bearer(token),
            &[json!({"message": "rotation probe", "service": "probe"})],
        )
        .0
    };

    // A sender posting small batches back to back with whichever token it is told to use,
    // as a fleet of shippers does while an operator rotates.
    let current = Arc::new(Mutex::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (current, stop, sent) = (current.clone(), stop.clone(), sent.clone());
        let url = ix.api("/api/v1/ingest");
        std::thread::spawn(move || {
            let http = client();
            let (mut accepted, mut failures) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let n = sent.load(Ordering::SeqCst);
                let token = current.lock().unwrap().clone();
                let batch = rotation_batch(n);
                match http.post(&url).bearer_auth(&token).body(batch).send() {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
                        accepted += v["accepted"].as_u64().unwrap();
                    }
                    Ok(r) => failures.push(format!("batch {n} with {token}: {}", r.status())),
                    Err(e) => failures.push(format!("batch {n} with {token}: {e}")),
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            (accepted, failures)
        })
    };
    // Each of the four steps lasts until the sender has made 15 more requests (60 in all),
    // so every phase of the rotation sees traffic however slow the machine.
    let more_requests = || {
        let target = sent.load(Ordering::SeqCst) + 15;
        eventually("the sender making 15 more requests", 60, || {
            let n = sent.load(Ordering::SeqCst);
            (n >= target)
                .then_some(())
                .ok_or_else(|| format!("{n} sent"))
        });
    };
    more_requests();
    // Step 1: both tokens are valid; clients move over at their own pace.
    token_file(&tokens, &[&old, &new]);
    hangup(&ix.child);
    eventually("the new token accepted after SIGHUP", 30, || {
        match probe(&new) {
            200 => Ok(()),
            s => Err(format!("{s}")),
        }
    });
    more_requests();
    *current.lock().unwrap() = new.clone();
    more_requests();
    // Step 2: the old token is retired.
    token_file(&tokens, &[&new]);
    hangup(&ix.child);
    eventually("the old token refused after SIGHUP", 30, || {
        match probe(&old) {
            401 => Ok(()),
            s => Err(format!("{s}")),
        }
    });
    more_requests();
    stop.store(true, Ordering::SeqCst);
    let (accepted, failures) = sender.join().unwrap();
    let count = sent.load(Ordering::SeqCst) as u64;
    assert!(
        failures.is_empty(),
        "{} of {count} requests with a valid token failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        accepted,
        5 * count,
        "every record of every request accepted"
    );
    assert_eq!(probe(&old), 401);
    assert_eq!(probe(&new), 200);
    wait_total(&ix, "service:rotation", accepted);
}

#[test]
fn curl_and_python_ship_to_a_tls_indexer() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-tools");
    let (ix, ingest_token, read_token) = secure_indexer(&pki, &dir);
    let ca = path_str(&pki.ca1.ca);

    // curl, as a shell script ships a file.
    let records: Vec<Value> = (0..3)
        .map(|i| json!({"message": format!("curlingest line {i}"), "service": "curl"}))
        .collect();
    let body = dir.path().join("records.ndjson");
    std::fs::write(&body, ndjson(&records)).unwrap();
    let answer = dir.path().join("curl-answer.json");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "-o", path_str(&answer)])
            .args([
                "-w",
                "%{http_code}",
                "-H",
                "Content-Type: application/x-ndjson",
            ])
            .args(extra)
            .args(["--data-binary", &format!("@{}", body.display())])
            .arg(ix.api("/api/v1/ingest"))
            .output()
            .expect("curl is installed")
    };
    // Without the CA, curl cannot verify the indexer and sends nothing (exit 60).
    let out = curl(&[]);
    assert_eq!(
        out.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auth = format!("Authorization: Bearer {ingest_token}");
    let out = curl(&["--cacert", ca, "-H", &auth]);
    let answer_text = std::fs::read_to_string(&answer).unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{answer_text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&answer_text).unwrap();
    assert_eq!(v["accepted"], 3, "{v}");

    // Python's standard library, as an Elasticsearch bulk client with Basic auth.
    const PYTHON: &str = r#"
import base64, ssl, sys, urllib.error, urllib.request
url, cafile, token = sys.argv[1:4]
body = b"".join(
    b'{"index":{}}\n{"message":"pythonbulk line %d","service":"python"}\n' % i for i in range(3)
)
auth = base64.b64encode(b"sawmill:" + token.encode()).decode()
req = urllib.request.Request(url, data=body, method="POST", headers={
    "Authorization": "Basic " + auth, "Content-Type": "application/x-ndjson"})
ctx = ssl.create_default_context(cafile=cafile)
try:
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        print(resp.status)
        print(resp.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
    print(e.read().decode())
"#;
    let out = Command::new("python3")
        .args(["-c", PYTHON, &ix.api("/_bulk"), ca, &ingest_token])
        .output()
        .expect("python3 is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, answer) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
    assert_eq!(
        status,
        "200",
        "{answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(v["errors"], false, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(3), "{v}");

    let tls = tls_client(&[&pki.ca1.ca], None);
    let read = Auth::Bearer(&read_token);
    wait_for_total(&tls, &ix.url, read, "curlingest", 3);
    wait_for_total(&tls, &ix.url, read, "pythonbulk", 3);
}

#[test]
fn query_and_ui_read_tls_indexers_with_a_read_token() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-readers");
    // The indexer's read token, which query and the UI send, and query's own.
    let (read_token, query_token) = (new_token("read"), new_token("query"));
    let (read_file, query_file) = (dir.path().join("read"), dir.path().join("query"));
    token_file(&read_file, &[&read_token]);
    token_file(&query_file, &[&query_token]);
    let (cert, key, ca) = (
        path_str(&pki.ca1.server_cert),
        path_str(&pki.ca1.server_key),
        path_str(&pki.ca1.ca),
    );
    let ix = Indexer::start(
        &dir.path().join("ix"),
        &[
            "--commit-interval",
            "100ms",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--read-token-file",
            path_str(&read_file),
        ],
    );
    let tls = tls_client(&[&pki.ca1.ca], None);
    let records: Vec<Value> = (0..5)
        .map(|i| json!({"message": format!("tls-ui-row-{i}"), "service": "tlsread"}))
        .collect();
    // No ingest token file: ingest is open, reads are not.
    let (s, v) = ingest(&tls, &ix.url, Auth::Nothing, &records);
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(5)), "{v}");
    let q = "service:tlsread";
    wait_for_total(&tls, &ix.url, Auth::Bearer(&read_token), q, 5);

    let query = Service::start(
        dir.path(),
        "query",
        &[
            "--indexer",
            &ix.url,
            "--ca-file",
            ca,
            "--token-file",
            path_str(&read_file),
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--read-token-file",
            path_str(&query_file),
        ],
    );
    assert!(query.url.starts_with("https://"), "{}", query.url);
    assert_eq!(
        search_total(&tls, &query.url, Auth::Bearer(&query_token), q),
        5
    );
    // Query checks its own tokens: the indexers' read token does not open it.
    let search = format!("{}/api/v1/search?q={}", query.url, urlencode(q));
    assert_refused(&tls, Method::GET, &search, None, Auth::Nothing);
    assert_refused(&tls, Method::GET, &search, None, Auth::Bearer(&read_token));
    let text = metrics(&tls, &query.url, Auth::Bearer(&query_token));
    let unauthorized = r#"sawmill_query_requests_unauthorized_total{need="read"}"#;
    assert_eq!(metric_in(&text, unauthorized), 2.0);

    let page = |ui: &Service, path: &str| {
        let url = format!("{}{path}", ui.url);
        let resp = client().get(&url).send().expect("the UI answers");
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    let search_page = format!("/?q={}", urlencode(q));
    let ui = Service::start(
        dir.path(),
        "ui",
        &[
            "--indexer",
            &ix.url,
            "--ca-file",
            ca,
            "--token-file",
            path_str(&read_file),
        ],
    );
    let (s, html) = page(&ui, "/");
    assert_eq!(s, 200, "{html:.500}");
    let (s, html) = page(&ui, &search_page);
    assert_eq!(s, 200, "{html:.500}");
    for i in 0..5 {
        assert!(
            html.contains(&format!("tls-ui-row-{i}")),
            "the page lacks row {i}: {html:.2000}"
        );
    }
    // Without the token the same UI shows none of them: the token is what let it read.
    let tokenless = Service::start(dir.path(), "ui", &["--indexer", &ix.url, "--ca-file", ca]);
    let (_, html) = page(&tokenless, &search_page);
    assert!(!html.contains("tls-ui-row-"), "{html:.2000}");

    assert_not_logged("the indexer", &ix.log_text(), &[&read_token]);
    assert_not_logged(
        "sawmill query",
        &query.log_text(),
        &[&read_token, &query_token],
    );
    assert_not_logged("sawmill ui", &ui.log_text(), &[&read_token]);
}

/// Waits for a `data:` line of the tail containing `word`.
fn expect_event(events: &Receiver<String>, word: &str, secs: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(line) if line.contains(word) => return Ok(()),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return Err(format!("no event with {word}")),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("the tail ended before an event with {word}"))
            }
        }
    }
}

#[test]
fn certificates_are_reloaded_on_sighup_and_when_their_files_change() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-reload");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    install_server_cert(&pki.ca1, &cert, &key);
    let ix = Indexer::start(
        &dir.path().join("ix"),
        &[
            "--commit-interval",
            "100ms",
            "--tls-cert",
            path_str(&cert),
            "--tls-key",
            path_str(&key),
        ],
    );
    let healthz = ix.api("/healthz");
    let reaches = |ca: &Path| {
        tls_client(&[ca], None)
            .get(&healthz)
            .send()
            .map(|r| r.status().as_u16())
    };
    let first = reaches(&pki.ca1.ca).unwrap_or_else(|e| panic!("trusting CA 1: {e}"));
    assert_eq!(first, 200);
    assert!(reaches(&pki.ca2.ca).is_err(), "CA 2 signed nothing yet");

    // A tail opened under the first certificate: it must outlive the reload.
    let (tx, events) = std::sync::mpsc::channel::<String>();
    {
        let http = tls_client(&[&pki.ca1.ca], None);
        let url = ix.api("/api/v1/tail?q=service:reloaded");
        std::thread::spawn(move || {
            let Ok(resp) = http.get(&url).send() else {
                return;
            };
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("data:") && tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let record = |word: &str| json!({"message": format!("tail {word}"), "service": "reloaded"});
    let before = tls_client(&[&pki.ca1.ca], None);
    // Until the tail is open, records go by unseen: send until one comes through.
    eventually("the tail seeing a record", 30, || {
        let (s, v) = ingest(&before, &ix.url, Auth::Nothing, &[record("before-reload")]);
        assert_eq!(s, 200, "{v}");
        expect_event(&events, "before-reload", 1)
    });

    // The new files keep the old files' times, so the file watch sees no change: what
    // follows is the signal's doing. Past one watch interval the old certificate is still
    // served.
    let times = [&cert, &key].map(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    install_server_cert(&pki.ca2, &cert, &key);
    for (p, t) in [&cert, &key].into_iter().zip(times) {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        reaches(&pki.ca1.ca).ok(),
        Some(200),
        "no reload without a signal"
    );
    hangup(&ix.child);
    // New connections get the new certificate.
    eventually("the new certificate served", 30, || {
        match (reaches(&pki.ca1.ca), reaches(&pki.ca2.ca)) {
            (Err(_), Ok(200)) => Ok(()),
            seen => Err(format!("(CA 1, CA 2) got {seen:?}")),
        }
    });
    let after = tls_client(&[&pki.ca2.ca], None);
    let (s, v) = ingest(&after, &ix.url, Auth::Nothing, &[record("after-reload")]);
    assert_eq!(s, 200, "{v}");
    // The connection open from before goes on.
    expect_event(&events, "after-reload", 30).unwrap();

    // Files that change are read again without a signal (cert-manager, certbot).
    install_server_cert(&pki.ca1, &cert, &key);
    eventually(
        "the renewed certificate served without a signal",
        30,
        || match (reaches(&pki.ca1.ca), reaches(&pki.ca2.ca)) {
            (Ok(200), Err(_)) => Ok(()),
            seen => Err(format!("(CA 1, CA 2) got {seen:?}")),
        },
    );
}

/// Every hit of a search for `q` at `base` (at most 1000), read with `auth`.
fn hits(http: &Client, base: &str, auth: Auth, q: &str) -> Vec<Value> {
    let url = format!("{base}/api/v1/search?q={}&limit=1000", urlencode(q));
    let (status, v) = call(http, Method::GET, &url, None, auth);
    assert_eq!(status, 200, "GET {url}: {v}");
    v["hits"].as_array().cloned().unwrap_or_default()
}

/// Waits until a search for `q` at `base` totals `n`, failing with `logs()` (rsyslog's, the
/// shipper's): what went wrong is in them, not in the indexer's.
fn wait_for_total_or(
    http: &Client,
    base: &str,
    auth: Auth,
    q: &str,
    n: u64,
    logs: impl Fn() -> String,
) {
    eventually(
        &format!("search {q:?} reaching {n}"),
        60,
        || match search_total(http, base, auth, q) {
            t if t == n => Ok(()),
            t => Err(format!("total {t}; {}", logs())),
        },
    );
}

/// Message `n` of the rsyslog tests as rsyslog receives it, and what its record holds: RFC
/// 5424 with a time to the microsecond for an even `n`, RFC 3164 (as `syslog(3)` and older
/// devices write it, the year left out) for an odd one.
struct Sent {
    line: String,
    message: String,
    host: &'static str,
    service: &'static str,
    severity: &'static str,
    ts: Option<String>,
}

fn rsyslog_message(n: u32, text: &str) -> Sent {
    let message = format!("{text} n={n}");
    if n.is_multiple_of(2) {
        Sent {
            line: format!(
                "<11>1 2026-11-27T07:57:{n:02}.250000Z web-7 rsyslog-new 4242 - - {message}"
            ),
            message,
            host: "web-7",
            service: "rsyslog-new",
            severity: "err",
            ts: Some(format!("2026-11-27T07:57:{n:02}.250000000Z")),
        }
    } else {
        Sent {
            line: format!("<14>Nov 27 07:57:{n:02} web-8 rsyslog-old[99]: {message}"),
            message,
            host: "web-8",
            service: "rsyslog-old",
            severity: "info",
            ts: None,
        }
    }
}

/// Asserts `hits` are messages 0 to 19 of `text`, each once, each with the host, program,
/// severity and time rsyslog read from its header.
fn assert_rsyslog_records(hits: &[Value], text: &str) {
    assert_eq!(hits.len(), 20, "{hits:?}");
    for n in 0..20 {
        let sent = rsyslog_message(n, text);
        let hit = hits
            .iter()
            .find(|h| h["message"] == sent.message.as_str())
            .unwrap_or_else(|| panic!("no record of {:?} among {hits:?}", sent.message));
        assert_eq!(
            (
                hit["host"].as_str(),
                hit["service"].as_str(),
                hit["severity"].as_str(),
                hit["facility"].as_str()
            ),
            (
                Some(sent.host),
                Some(sent.service),
                Some(sent.severity),
                Some("user")
            ),
            "{hit}"
        );
        if let Some(ts) = sent.ts {
            assert_eq!(hit["ts"], ts.as_str(), "{hit}");
        }
    }
}

/// rsyslog's Elasticsearch output to the indexer at `url` over HTTPS, verified against
/// `ca`, with Basic credentials whose password is `password`; each message becomes a JSON
/// document of the fields the bulk route maps (`@timestamp`, `message`) and Sawmill's own.
fn omelasticsearch(url: &str, ca: &Path, password: &str) -> String {
    let port = url.trim_end_matches('/').rsplit_once(':').unwrap().1;
    let ca = ca.display();
    format!(
        r#"module(load="omelasticsearch")
template(name="sawmill" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="service" name="programname" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="message" name="$.msg" format="jsonf")
}}
ruleset(name="input") {{
  # RFC 3164 leaves the space after the tag in the message: `app: text` is " text".
  set $.msg = ltrim($msg);
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" usehttps="on"
         tls.cacert="{ca}" uid="rsyslog" pwd="{password}"
         searchIndex="rsyslog" bulkmode="on" template="sawmill"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}"#
    )
}

#[test]
fn rsyslog_omelasticsearch_ships_with_basic_credentials_to_a_tls_indexer() {
    if !have_rsyslog("rsyslog-elasticsearch") {
        return;
    }
    let pki = Pki::generate();
    let dir = TempDir::new("sec-rsyslog-es");
    let (ix, ingest_token, read_token) = secure_indexer(&pki, &dir);
    let wrong = new_token("wrong");
    let tls = tls_client(&[&pki.ca1.ca], None);
    let read = Auth::Bearer(&read_token);

    // Quotes and a backslash: the template's JSON escapes them.
    let text = r#"esbulk "quoted" C:\logs"#;
    let rs = Rsyslog::start(
        &dir.path().join("rsyslog"),
        &omelasticsearch(&ix.url, &pki.ca1.ca, &ingest_token),
    );
    for n in 0..20 {
        rs.send(&rsyslog_message(n, text).line);
    }
    wait_for_total_or(&tls, &ix.url, read, "esbulk", 20, || rs.log_text());
    assert_rsyslog_records(&hits(&tls, &ix.url, read, "esbulk"), text);
    // The records came with rsyslog's credentials: not one of its requests was refused.
    let unauthorized = r#"sawmill_indexer_requests_unauthorized_total{need="ingest"}"#;
    assert_eq!(metric_in(&metrics(&tls, &ix.url, read), unauthorized), 0.0);
    drop(rs);

    // With a password that is no token, the indexer refuses rsyslog's requests, and rsyslog
    // logs the indexer's answer.
    let rs = Rsyslog::start(
        &dir.path().join("rsyslog-wrong"),
        &omelasticsearch(&ix.url, &pki.ca1.ca, &wrong),
    );
    for n in 0..5 {
        rs.send(&rsyslog_message(n, "refusedbulk").line);
    }
    eventually("rsyslog logging the indexer's refusal", 60, || {
        let log = rs.log_text();
        log.contains(r#""need":"ingest""#).then_some(()).ok_or(log)
    });
    assert!(metric_in(&metrics(&tls, &ix.url, read), unauthorized) >= 1.0);
    assert_eq!(search_total(&tls, &ix.url, read, "refusedbulk"), 0);
    assert_not_logged(
        "the indexer",
        &ix.log_text(),
        &[&ingest_token, &read_token, &wrong],
    );
}

/// rsyslog forwarding to `addr` over TLS as RFC 5425 and rsyslog's documentation have it:
/// its OpenSSL driver, the peer's certificate verified against `ca` and its name (`localhost`,
/// which the test server certificates hold), RFC 5424 in octet-counted frames. With
/// `identity` (certificate, key), it presents a client certificate.
fn omfwd_tls(addr: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let ca = ca.display();
    let identity = identity
        .map(|(cert, key)| {
            format!(
                r#"StreamDriver.CertFile="{}" StreamDriver.KeyFile="{}""#,
                cert.display(),
                key.display()
            )
        })
        .unwrap_or_default();
    format!(
        r#"ruleset(name="input") {{
  action(type="omfwd" target="{host}" port="{port}" protocol="tcp"
         StreamDriver="ossl" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" StreamDriver.CAFile="{ca}" {identity}
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}"#
    )
}

#[test]
fn rsyslog_forwards_over_tls_to_the_shipper() {
    if !have_rsyslog("rsyslog-openssl") {
        return;
    }
    let pki = Pki::generate();
    let dir = TempDir::new("sec-rsyslog-tls");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let http = client();
    let (cert, key, ca) = (
        path_str(&pki.ca1.server_cert),
        path_str(&pki.ca1.server_key),
        pki.ca1.ca.as_path(),
    );
    let received = r#"sawmill_shipper_records_received_total{source="syslog_tls"}"#;
    let shipper = |name: &str, addr: &str, extra: &[&str]| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut args = vec!["--syslog-tls", addr, "--tls-cert", cert, "--tls-key", key];
        args.extend_from_slice(extra);
        Shipper::start(&d, &[&ix.url], &args)
    };

    // Server authentication only: rsyslog verifies the shipper, any client may send.
    let addr = free_addr();
    let sh = shipper("shipper", &addr, &[]);
    let rs = Rsyslog::start(&dir.path().join("rsyslog"), &omfwd_tls(&addr, ca, None));
    let text = "forwarded over tls";
    for n in 0..20 {
        rs.send(&rsyslog_message(n, text).line);
    }
    let logs = || format!("{}\nthe shipper's log:\n{}", rs.log_text(), sh.log_text());
    wait_for_total_or(&http, &ix.url, Auth::Nothing, "forwarded", 20, logs);
    assert_rsyslog_records(&hits(&http, &ix.url, Auth::Nothing, "forwarded"), text);
    // Each frame read whole, the newline rsyslog ends it with left out of the message.
    assert_eq!(
        line_numbers(&ix, "forwarded"),
        (0..20).collect::<Vec<u64>>()
    );
    assert_eq!(sh.metric(received), 20.0);
    drop(rs);

    // Client certificates: one from CA 1 gets through, none and one from CA 2 do not.
    let addr = free_addr();
    let sh = shipper("shipper-mtls", &addr, &["--client-ca", path_str(ca)]);
    let member = Rsyslog::start(
        &dir.path().join("rsyslog-member"),
        &omfwd_tls(
            &addr,
            ca,
            Some((pki.ca1.client_cert.as_path(), pki.ca1.client_key.as_path())),
        ),
    );
    let line = |service: &str, n: u32| {
        format!("<14>1 2026-11-27T07:58:0{n}.000000Z web-9 {service} 7 - - client n={n}")
    };
    for n in 0..5 {
        member.send(&line("rsyslog-member", n));
    }
    let member_logs = || {
        format!(
            "{}\nthe shipper's log:\n{}",
            member.log_text(),
            sh.log_text()
        )
    };
    wait_for_total_or(
        &http,
        &ix.url,
        Auth::Nothing,
        "service:rsyslog-member",
        5,
        member_logs,
    );
    assert_eq!(sh.metric(received), 5.0);
    let refusals = || {
        sh.log_text()
            .lines()
            .filter(|l| l.to_lowercase().contains("certificate"))
            .count()
    };
    for (service, identity) in [
        ("rsyslog-anonymous", None),
        (
            "rsyslog-stranger",
            Some((pki.ca2.client_cert.as_path(), pki.ca2.client_key.as_path())),
        ),
    ] {
        let before = refusals();
        let rs = Rsyslog::start(&dir.path().join(service), &omfwd_tls(&addr, ca, identity));
        for n in 0..5 {
            rs.send(&line(service, n));
        }
        // The shipper logs the handshake it refused, naming the certificate.
        eventually(&format!("the shipper refusing {service}"), 60, || {
            (refusals() > before)
                .then_some(())
                .ok_or_else(|| format!("{}\nthe shipper's log:\n{}", rs.log_text(), sh.log_text()))
        });
        assert_eq!(sh.metric(received), 5.0, "{service}");
    }
    // One more through the member's open connection, after every refused one: once it is
    // stored, nothing from the refused clients is on its way.
    member.send(&line("rsyslog-member", 5));
    wait_for_total_or(
        &http,
        &ix.url,
        Auth::Nothing,
        "service:rsyslog-member",
        6,
        member_logs,
    );
    assert_eq!(sh.metric(received), 6.0);
    for service in ["rsyslog-anonymous", "rsyslog-stranger"] {
        let q = format!("service:{service}");
        assert_eq!(search_total(&http, &ix.url, Auth::Nothing, &q), 0, "{q}");
    }
}

/// A sign-in form's token and the cookie that goes with it, as a browser gets them.
fn signin_form(http: &Client, ui: &str) -> (String, String) {
    let resp = http.get(format!("{ui}/signin")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-sawmill_csrf="))
        .expect("a token cookie")
        .to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    let html = resp.text().unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a token in the form")
        .to_string();
    (pair, token)
}

/// POSTs the sign-in form: the status and the answer's cookies.
fn sign_in_as(
    http: &Client,
    ui: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    site: Option<&str>,
) -> (u16, Vec<String>, Option<String>) {
    let mut req = http
        .post(format!("{ui}/signin"))
        .header("cookie", cookie)
        .form(fields);
    if let Some(s) = site {
        req = req.header("sec-fetch-site", s);
    }
    let resp = req.send().unwrap();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), cookies, retry)
}

#[test]
fn ui_sign_in_sets_strict_cookies_refuses_other_sites_and_bounds_failures() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-signin");
    let ix = Indexer::start(&dir.path().join("ix"), &[]);
    // The hash comes from the real `sawmill hash-password`, as an operator makes it.
    let hash = hash_password("s3cret pass");
    let users = dir.path().join("users");
    std::fs::write(&users, format!("bob:{hash}\n")).unwrap();
    let ui = Service::start(
        dir.path(),
        "ui",
        &[
            "--indexer",
            &ix.url,
            "--users-file",
            path_str(&users),
            "--tls-cert",
            path_str(&pki.ca1.server_cert),
            "--tls-key",
            path_str(&pki.ca1.server_key),
        ],
    );
    assert!(ui.url.starts_with("https://"), "{}", ui.url);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca1.ca).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    // Not signed in: pages send the browser to the sign-in page, data answers 401.
    let page = http.get(format!("{}/?q=x", ui.url)).send().unwrap();
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(
        page.headers()["location"].to_str().unwrap(),
        "/signin?next=%2F%3Fq%3Dx"
    );
    let rows = http.get(format!("{}/rows?q=x", ui.url)).send().unwrap();
    assert_eq!(rows.status().as_u16(), 401);

    // A form posted from another site, or without the token cookie, changes nothing.
    let (cookie, token) = signin_form(&http, &ui.url);
    let right = [
        ("user", "bob"),
        ("password", "s3cret pass"),
        ("csrf", token.as_str()),
    ];
    let (s, _, _) = sign_in_as(&http, &ui.url, &cookie, &right, Some("cross-site"));
    assert_eq!(s, 403, "a cross-site sign-in");
    let (s, _, _) = sign_in_as(&http, &ui.url, "", &right, None);
    assert_eq!(s, 403, "no token cookie");
    let (s, _, _) = sign_in_as(
        &http,
        &ui.url,
        &cookie,
        &[
            ("user", "bob"),
            ("password", "s3cret pass"),
            ("csrf", "0000"),
        ],
        None,
    );
    assert_eq!(s, 403, "a token that is not the cookie's");

    // The right password: a session cookie out of scripts' and other sites' reach, and
    // only over TLS.
    let (s, cookies, _) = sign_in_as(&http, &ui.url, &cookie, &right, Some("same-origin"));
    assert_eq!(s, 303);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-sawmill_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    let pair = session.split(';').next().unwrap();
    let page = http
        .get(format!("{}/", ui.url))
        .header("cookie", pair)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);

    // Ten wrong passwords a minute from one address, then 429 — the right one included —
    // with when to come back.
    let wrong = |token: &str| {
        [
            ("user", "bob".to_string()),
            ("password", "guess".to_string()),
            ("csrf", token.to_string()),
        ]
    };
    for i in 0..10 {
        let (cookie, token) = signin_form(&http, &ui.url);
        let f = wrong(&token);
        let fields: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, _, _) = sign_in_as(&http, &ui.url, &cookie, &fields, None);
        assert_eq!(s, 401, "wrong password {i}");
    }
    let (cookie, token) = signin_form(&http, &ui.url);
    let right = [
        ("user", "bob"),
        ("password", "s3cret pass"),
        ("csrf", token.as_str()),
    ];
    let (s, cookies, retry) = sign_in_as(&http, &ui.url, &cookie, &right, None);
    assert_eq!(s, 429, "the eleventh try in a minute");
    assert!(!cookies
        .iter()
        .any(|c| c.starts_with("__Host-sawmill_session=")));
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        !ui.log_text().contains("s3cret") && !ui.log_text().contains("guess"),
        "passwords stay out of the log"
    );

    // Off loopback without users, the UI is refused: it would show every log line.
    let mut cmd = sawmill();
    cmd.args(["ui", "--listen", "0.0.0.0:0", "--indexer", &ix.url])
        .args(["--tls-cert", path_str(&pki.ca1.server_cert)])
        .args(["--tls-key", path_str(&pki.ca1.server_key)]);
    let (status, _, stderr) = run_to_exit(cmd, 30);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--users-file"), "{stderr}");
}

#[test]
fn replicas_found_through_dns_https_are_verified_against_the_name_they_were_found_under() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-dns");
    let token = new_token("ingest");
    let tokens = dir.path().join("tokens");
    token_file(&tokens, &[&token]);
    // Two replicas whose certificate names only `indexers.sawmill.test`, no address.
    let port = free_port();
    let start = |ip: &str| {
        Indexer::start_at(
            &format!("{ip}:{port}"),
            &dir.path().join(ip),
            &[
                "--commit-interval",
                "100ms",
                "--tls-cert",
                path_str(&pki.ca1.named_cert),
                "--tls-key",
                path_str(&pki.ca1.named_key),
                "--ingest-token-file",
                path_str(&tokens),
            ],
        )
    };
    let (a, b) = (start("127.0.0.2"), start("127.0.0.3"));
    let hosts = dir.path().join("hosts");
    hosts_file(
        &hosts,
        &[
            ("127.0.0.2", "indexers.sawmill.test"),
            ("127.0.0.3", "indexers.sawmill.test"),
        ],
    );
    let found = TempDir::new("sec-dns-shipper");
    let sh = Shipper::start_in(
        &hosts,
        found.path(),
        &[&format!("dns+https://indexers.sawmill.test:{port}")],
        &[
            "--ca-file",
            path_str(&pki.ca1.ca),
            "--token-file",
            path_str(&tokens),
            "--discovery-interval",
            "1s",
        ],
    );
    // The same replica asked by its address alone: the certificate does not name it.
    let fixed = TempDir::new("sec-dns-fixed");
    let by_ip = Shipper::start(
        fixed.path(),
        &[&a.url],
        &[
            "--ca-file",
            path_str(&pki.ca1.ca),
            "--token-file",
            path_str(&tokens),
        ],
    );
    sh.knows_replicas(&["default"], 2);
    for i in 0..50 {
        sh.send(format!("<13>Nov 27 07:57:02 dnstls[1]: n={i} found by name").as_bytes());
        by_ip.send(format!("<13>Nov 27 07:57:02 iptls[1]: n={i} asked by address").as_bytes());
    }
    // The test reads each replica by the name its certificate gives, resolved to it.
    let resolve = |ix: &Indexer| {
        let addr: std::net::SocketAddr = ix.url.trim_start_matches("https://").parse().unwrap();
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&pki.ca1.ca).unwrap()).unwrap(),
            )
            .resolve("indexers.sawmill.test", addr)
            .build()
            .unwrap()
    };
    let base = format!("https://indexers.sawmill.test:{port}");
    for ix in [&a, &b] {
        wait_for_total(&resolve(ix), &base, Auth::Nothing, "service:dnstls", 50);
    }
    eventually(
        "the shipper asking by address logging the certificate",
        30,
        || {
            let log = by_ip.log_text();
            log.lines()
                .any(|l| l.contains(&a.url) && l.contains("certificate"))
                .then_some(())
                .ok_or_else(|| format!("no line names {} and a certificate:\n{log}", a.url))
        },
    );
    assert_eq!(
        search_total(&resolve(&a), &base, Auth::Nothing, "service:iptls"),
        0,
        "nothing reached a replica through a certificate that does not name its address"
    );
}

#[test]
fn up_on_every_address_with_tls_and_tokens_ships_to_itself() {
    let pki = Pki::generate();
    let dir = TempDir::new("sec-up");
    let (ingest, read) = (new_token("ingest"), new_token("read"));
    let (ingest_file, read_file) = (dir.path().join("ingest"), dir.path().join("read"));
    token_file(&ingest_file, &[&ingest]);
    token_file(&read_file, &[&read]);
    let data = dir.path().join("data");
    // A certificate signed by a CA (not self-signed): `up`'s own shipper and UI trust
    // exactly the certificate it serves, whoever signed it.
    let mut cmd = sawmill();
    cmd.args([
        "up",
        "--listen",
        "0.0.0.0:0",
        "--ui-listen",
        "127.0.0.1:0",
        "--data",
    ])
    .arg(&data)
    .args(["--tls-cert", path_str(&pki.ca1.server_cert)])
    .args(["--tls-key", path_str(&pki.ca1.server_key)])
    .args(["--ingest-token-file", path_str(&ingest_file)])
    .args(["--read-token-file", path_str(&read_file)]);
    let log = dir.path().join("up.log");
    let mut child = cmd
        .env("SAWMILL_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let (first, second) = (next(), next());
    // The shipper's socket exists once `up` prints it, after the two addresses.
    let third = next();
    assert!(third.contains("syslog socket:"), "{third:?}");
    std::thread::spawn(move || for _ in lines {});
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    let url = first
        .strip_prefix("sawmill indexer listening on ")
        .unwrap_or_else(|| {
            panic!(
                "{first:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let ui = second
        .strip_prefix("sawmill ui listening on ")
        .unwrap()
        .to_string();
    assert!(url.starts_with("https://0.0.0.0:"), "{url}");
    let url = loopback(url);
    let sent = std::process::Command::new("logger")
        .arg("-u")
        .arg(data.join("dev-log"))
        .args(["-t", "uptls", "through the shipper inside up"])
        .status()
        .unwrap();
    assert!(sent.success());
    let http = tls_client(&[&pki.ca1.ca], None);
    wait_for_total(&http, &url, Auth::Bearer(&read), "service:uptls", 1);
    let page = http.get(format!("{ui}/?q=service:uptls")).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().unwrap();
    assert!(
        html.contains("through the shipper inside up"),
        "the UI inside up reads its indexer over TLS with the read token"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains(&ingest) && !log_text.contains(&read),
        "{log_text}"
    );
    drop(child);
}

#[test]
fn a_shippers_token_is_rotated_with_sighup_and_no_record_is_lost() {
    let dir = TempDir::new("sec-rotate-shipper");
    let (old, new) = (new_token("old"), new_token("new"));
    let (served, sent) = (dir.path().join("served"), dir.path().join("sent"));
    token_file(&served, &[&old]);
    token_file(&sent, &[&old]);
    let ix = Indexer::start(
        &dir.path().join("ix"),
        &[
            "--commit-interval",
            "100ms",
            "--ingest-token-file",
            path_str(&served),
        ],
    );
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--token-file", path_str(&sent)]);
    let send = |from: usize, word: &str| {
        for i in from..from + 50 {
            sh.send(format!("<13>Nov 27 07:57:02 rotated[1]: n={i} {word}").as_bytes());
        }
    };
    send(0, "old");
    wait_total(&ix, "service:rotated", 50);
    // The order an operator follows: both on the indexer, the shipper moves, the old goes.
    let reloads = |ix: &Indexer| ix.log_text().matches("Reloaded.").count();
    token_file(&served, &[&old, &new]);
    hangup(&ix.child);
    eventually("the indexer reloading its tokens", 30, || {
        (reloads(&ix) == 1)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    token_file(&sent, &[&new]);
    hangup(&sh.child);
    // Once the shipper took the new token, the indexer drops the old one.
    eventually("the shipper reloading its token", 30, || {
        sh.log_text()
            .contains("--token-file")
            .then_some(())
            .ok_or_else(|| "no reload logged".to_string())
    });
    token_file(&served, &[&new]);
    hangup(&ix.child);
    eventually("the indexer dropping the old token", 30, || {
        (reloads(&ix) == 2)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    send(50, "new");
    wait_total(&ix, "service:rotated", 100);
    let refused = ix.metric("sawmill_indexer_requests_unauthorized_total{need=\"ingest\"}");
    assert_eq!(refused, 0.0, "no batch was refused along the way");
    assert_not_logged("the shipper", &sh.log_text(), &[&old, &new]);
    assert_not_logged("the indexer", &ix.log_text(), &[&old, &new]);
}

/// Review of CI: a shipper in a container without CA certificates (busybox) refused to
/// start, as building its TLS configuration needed at least one trusted CA, though it only
/// spoke plain HTTP.
#[test]
fn a_machine_without_ca_certificates_still_ships_over_plain_http() {
    let dir = TempDir::new("sec-no-roots");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let missing = dir.path().join("no-such-certs");
    let sh = Shipper::start_env(
        dir.path(),
        &[&ix.url],
        &[],
        &[
            ("SSL_CERT_FILE", path_str(&missing)),
            ("SSL_CERT_DIR", path_str(&missing)),
        ],
    );
    sh.send(b"<13>Nov 27 07:57:02 noroots[1]: shipped without any CA");
    wait_total(&ix, "service:noroots", 1);
}
