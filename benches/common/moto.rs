//! A real S3-compatible server for the object-store benchmark: `moto_server` (PyPI's
//! `moto[server]`, which `.ci/run` installs) on a loopback port, holding one bucket, killed
//! when dropped. The bench's copy of the e2e harness's `Moto`, cut to what a bench needs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket the server holds from its start.
pub const BUCKET: &str = "sawmill-bench";

// Moto checks no signatures, but refuses an anonymous request (no credentials at all) with
// 403: the bench's own requests carry a well-formed SigV4 header with a dummy signature.
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=bench/20261130/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0000";

pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Moto {
    /// Starts the server and creates [`BUCKET`].
    pub fn start() -> Moto {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, so that stopping it reaches any process it started.
            .process_group(0)
            .spawn()
            .expect("`moto_server` (python3 -m pip install 'moto[server]')");
        // The guard exists from here on: a panic below still stops the server.
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(&moto.endpoint).send().is_err() {
            assert!(
                moto.child.try_wait().unwrap().is_none(),
                "moto_server exited (port {port} taken?)"
            );
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = moto
            .request(&client, reqwest::Method::PUT, &format!("/{BUCKET}"))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "creating bucket {BUCKET}: {status}");
        moto
    }

    /// `s3://BUCKET/PREFIX`, for `--object-store`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The standard AWS environment that points an S3 client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn request(
        &self,
        client: &reqwest::blocking::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        client
            .request(method, format!("{}{path}", self.endpoint))
            .header("authorization", AUTH)
    }

    /// An object's bytes, or `None` when there is no such object.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let client = reqwest::blocking::Client::new();
        let resp = self
            .request(&client, reqwest::Method::GET, &format!("/{BUCKET}/{key}"))
            .send()
            .unwrap();
        match resp.status().as_u16() {
            404 => None,
            200 => Some(resp.bytes().unwrap().to_vec()),
            s => panic!("GET {key} from moto answered {s}"),
        }
    }

    /// The server's resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        super::rss_mib(self.child.id())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
