//! Demo traffic: five services handling requests that cross all of them, so a newcomer has
//! realistic logs to search the moment `sawmill up --demo` starts.

use std::time::Duration;

use sawmill_record::Severity;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Where and how fast the demo sends.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The syslog socket the demo services log to, as applications log to `/dev/log`.
    pub socket: std::path::PathBuf,
    /// Requests per second of live traffic.
    pub rate: f64,
    /// How much past traffic to send at start, so the histogram is not empty.
    pub backfill: Duration,
}

/// Generates requests through gateway → auth → orders → inventory → payments.
pub struct Demo {
    rng: fastrand::Rng,
    seq: u64,
}

const HOSTS: [&str; 3] = ["node-1", "node-2", "node-3"];
const PATHS: [&str; 5] = [
    "/api/orders",
    "/api/orders/{id}",
    "/api/cart",
    "/api/checkout",
    "/api/products/{id}",
];
const SKUS: [&str; 6] = [
    "sku-espresso",
    "sku-grinder",
    "sku-filter",
    "sku-kettle",
    "sku-mug",
    "sku-beans",
];

impl Demo {
    pub fn new(seed: u64) -> Demo {
        Demo {
            rng: fastrand::Rng::with_seed(seed),
            seq: 0,
        }
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.rng.u32(0..16), 16).unwrap())
            .collect()
    }

    /// One line, a little after the previous one of the same request.
    fn record(
        &mut self,
        t: &mut OffsetDateTime,
        service: &str,
        severity: &str,
        message: String,
        ids: (&str, &str),
        fields: Value,
    ) -> Value {
        *t += Duration::from_micros(self.rng.u64(300..9000));
        let at = *t;
        self.seq += 1;
        let host = HOSTS[(service.len() + self.seq as usize % 2) % HOSTS.len()];
        json!({
            "ts": sawmill_ts(at),
            "message": message,
            "host": host,
            "service": service,
            "severity": severity,
            "container": format!("demo-{service}-1"),
            "image": format!("sawmill-demo/{service}:1.4"),
            "stream": if severity == "err" { "stderr" } else { "stdout" },
            "pid": 100 + service.len() as u64,
            "trace_id": ids.0,
            "request_id": ids.1,
            "fields": fields,
        })
    }

    /// The log lines of one request that started at `at`, in time order.
    // Long on purpose: one request's lines, service by service, read as a script.
    pub fn request(&mut self, at: OffsetDateTime) -> Vec<Value> {
        let trace = self.hex(32);
        let req = format!("req-{}", self.hex(12));
        let ids = (trace.as_str(), req.as_str());
        let user = self.rng.u32(1000..1100);
        let path = PATHS[self.rng.usize(..PATHS.len())]
            .replace("{id}", &self.rng.u32(1..5000).to_string());
        let sku = SKUS[self.rng.usize(..SKUS.len())];
        let qty = self.rng.u32(1..4);
        let roll = self.rng.f64();
        let mut t = at;
        let mut out = Vec::new();
        let method = if path.contains("checkout") || path == "/api/orders" {
            "POST"
        } else {
            "GET"
        };
        out.push(self.record(
            &mut t,
            "gateway",
            "info",
            format!("{method} {path} started request_id={req} user_id={user}"),
            ids,
            json!({"method": method, "path": path, "user_id": user}),
        ));
        if roll < 0.02 {
            out.push(self.record(
                &mut t,
                "auth",
                "warning",
                format!("token expired for user_id={user}, refreshing"),
                ids,
                json!({"user_id": user}),
            ));
        }
        out.push(self.record(
            &mut t,
            "auth",
            "info",
            format!("token validated user_id={user} scopes=orders:write"),
            ids,
            json!({"user_id": user}),
        ));
        if roll < 0.3 {
            out.push(self.record(
                &mut t,
                "auth",
                "debug",
                format!("session cache hit key=sess:{user}"),
                ids,
                json!({"cache": "hit"}),
            ));
        }
        let order = self.rng.u32(10_000..99_999);
        out.push(self.record(
            &mut t,
            "orders",
            "info",
            format!("loading cart for user_id={user} order_id={order}"),
            ids,
            json!({"order_id": order, "user_id": user}),
        ));
        let db_ms = self.rng.u32(2..40) + if roll > 0.95 { 900 } else { 0 };
        if db_ms > 500 {
            out.push(self.record(
                &mut t,
                "orders",
                "warning",
                format!(
                    "slow query took {db_ms}ms: SELECT * FROM order_items WHERE order_id = {order}"
                ),
                ids,
                json!({"db_ms": db_ms, "order_id": order}),
            ));
        }
        out.push(self.record(
            &mut t,
            "inventory",
            "info",
            format!("reserved {qty} x {sku} for order_id={order}"),
            ids,
            json!({"sku": sku, "qty": qty, "order_id": order}),
        ));
        let amount = format!("{}.{:02}", self.rng.u32(5..300), self.rng.u32(0..100));
        let status;
        if roll < 0.04 {
            let trace_text = format!(
                "payment provider timeout after 5000ms for order_id={order}\nTraceback (most recent call last):\n  File \"/app/payments/charge.py\", line 88, in charge\n    resp = client.post(PROVIDER_URL, json=body, timeout=5)\n  File \"/app/payments/client.py\", line 41, in post\n    raise ProviderTimeout(url)\npayments.errors.ProviderTimeout: https://provider.invalid/v2/charges"
            );
            out.push(self.record(
                &mut t,
                "payments",
                "err",
                trace_text,
                ids,
                json!({"order_id": order, "amount": amount, "error": "ProviderTimeout"}),
            ));
            out.push(self.record(
                &mut t,
                "inventory",
                "notice",
                format!("released {qty} x {sku} for order_id={order} (payment failed)"),
                ids,
                json!({"sku": sku, "qty": qty}),
            ));
            status = 502;
        } else if roll < 0.06 {
            out.push(self.record(
                &mut t,
                "payments",
                "err",
                format!(
                    "card declined for order_id={order} amount={amount} reason=insufficient_funds"
                ),
                ids,
                json!({"order_id": order, "amount": amount, "error": "CardDeclined"}),
            ));
            status = 402;
        } else {
            out.push(self.record(
                &mut t,
                "payments",
                "info",
                format!("charged {amount} EUR for order_id={order}"),
                ids,
                json!({"order_id": order, "amount": amount}),
            ));
            status = 200;
        }
        let took = (t - at).whole_milliseconds();
        let sev = if status >= 500 {
            "err"
        } else if status >= 400 {
            "warning"
        } else {
            "info"
        };
        out.push(self.record(
            &mut t,
            "gateway",
            sev,
            format!(
                "{method} {path} completed status={status} duration_ms={took} request_id={req}"
            ),
            ids,
            json!({"status": status, "duration_ms": took as u64, "path": path}),
        ));
        out
    }

    /// Sends `backfill` worth of past requests, then live traffic until the task is dropped.
    pub async fn run(mut self, cfg: DemoConfig) -> Result<()> {
        let sock =
            std::os::unix::net::UnixDatagram::unbound().map_err(|e| Error::io(&cfg.socket, e))?;
        sock.set_nonblocking(true)
            .map_err(|e| Error::io(&cfg.socket, e))?;
        let now = OffsetDateTime::now_utc();
        let n = (cfg.backfill.as_secs_f64() * cfg.rate) as u64;
        for i in 0..n {
            let at = now - cfg.backfill + Duration::from_secs_f64(i as f64 / cfg.rate);
            for line in self.request(at) {
                send(&sock, &cfg.socket, &line).await;
            }
        }
        tracing::info!(requests = n, "Demo backfill sent.");
        let tick = Duration::from_millis(250);
        loop {
            tokio::time::sleep(tick).await;
            let due = self.rng.f64() * cfg.rate * tick.as_secs_f64() * 2.0;
            for _ in 0..due.round() as usize {
                for line in self.request(OffsetDateTime::now_utc()) {
                    send(&sock, &cfg.socket, &line).await;
                }
            }
        }
    }
}

fn sawmill_ts(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One line as an application's syslog(3) would send it, in RFC 5424 with its ids and
/// fields as structured data.
pub fn datagram(line: &Value) -> Vec<u8> {
    let s = |k: &str| line[k].as_str().unwrap_or("-").to_string();
    let sev = line["severity"]
        .as_str()
        .and_then(|s| Severity::parse(s).ok())
        .unwrap_or(Severity::Info);
    let pri = 16 * 8 + sev.rank(); // local0
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]")
    };
    let mut sd = format!(
        "[req@32473 request_id=\"{}\" trace_id=\"{}\"",
        esc(&s("request_id")),
        esc(&s("trace_id"))
    );
    if let Some(fields) = line["fields"].as_object() {
        for (k, v) in fields {
            let v = match v {
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            sd.push_str(&format!(" {k}=\"{}\"", esc(&v)));
        }
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} {} {} - {sd} {}",
        s("ts"),
        s("host"),
        s("service"),
        line["pid"],
        s("message")
    )
    .into_bytes()
}

/// Sends one datagram, waiting a moment when the socket's buffer is full so that the
/// backfill paces itself instead of being dropped.
async fn send(sock: &std::os::unix::net::UnixDatagram, to: &std::path::Path, line: &Value) {
    let d = datagram(line);
    for _ in 0..100 {
        match sock.send_to(&d, to) {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    tracing::warn!("Demo line not delivered: the syslog socket stays unavailable.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_crosses_every_service_under_one_request_id() {
        let mut demo = Demo::new(7);
        let now = OffsetDateTime::now_utc();
        let lines = demo.request(now);
        let services: std::collections::BTreeSet<_> = lines
            .iter()
            .map(|l| l["service"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(services.len(), 5, "{services:?}");
        let ids: std::collections::BTreeSet<_> = lines
            .iter()
            .map(|l| l["request_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 1);
        let ts: Vec<_> = lines
            .iter()
            .map(|l| l["ts"].as_str().unwrap().to_string())
            .collect();
        let mut sorted = ts.clone();
        sorted.sort();
        assert_eq!(ts, sorted, "lines are in time order");
    }

    #[test]
    fn some_requests_fail_with_a_stack_trace() {
        let mut demo = Demo::new(1);
        let now = OffsetDateTime::now_utc();
        let errs: Vec<Value> = (0..500)
            .flat_map(|_| demo.request(now))
            .filter(|l| l["severity"] == "err")
            .collect();
        assert!(!errs.is_empty());
        assert!(errs
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("Traceback")));
    }
}
