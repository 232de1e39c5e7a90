//! One group's part of the bucket: its manifest, changed only by conditional writes, and
//! its splits, uploaded and downloaded with their sizes and checksums verified.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion, WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::manifest::{tail_object, Manifest, SplitEntry, MANIFEST_VERSION};
use super::StoreUrl;
use crate::error::{Error, Result};

/// Splits up to this size go up in one PUT; larger ones as a multipart upload in parts
/// of this size (S3 wants parts of at least 5 MiB).
const MULTIPART_ABOVE: u64 = 16 << 20;
/// Parts of a multipart upload in flight at once: bounds memory to about 2 × 16 MiB.
const PARTS_IN_FLIGHT: usize = 2;
/// A manifest is a few hundred bytes per split; this bound keeps a corrupt or hostile one
/// from being read into memory whole.
const MAX_MANIFEST: u64 = 64 << 20;
/// Conditional writes of the manifest that may lose to another replica's in a row.
const MANIFEST_ATTEMPTS: u32 = 20;

/// A group's root in the bucket (`PREFIX/GROUP`), with the S3 client. Cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    /// `s3://bucket/prefix/group`, for logs and errors.
    url: String,
}

impl Bucket {
    /// S3 client from the standard AWS environment (AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; object_store's AmazonS3Builder::from_env),
    /// allowing plain http only when the endpoint is http:// (loopback test servers);
    /// conditional put enabled (ETag match). Timeouts set (connect 5 s, request 60 s).
    pub fn from_env(url: &StoreUrl, group: &str) -> Result<Bucket> {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Bucket::from_vars(vars, url, group)
    }

    /// [`Bucket::from_env`] over the given variables, so tests need not change the
    /// process's environment. Reads `AWS_*` exactly as `AmazonS3Builder::from_env` does.
    pub(crate) fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        url: &StoreUrl,
        group: &str,
    ) -> Result<Bucket> {
        let describe = format!("{url}/{group}");
        let fail = |message: String| Error::Store {
            what: describe.clone(),
            message,
        };
        if group.is_empty() || group.contains('/') || group == "." || group == ".." {
            return Err(fail(format!(
                "`{group}` cannot name a folder of the bucket"
            )));
        }
        let mut builder = AmazonS3Builder::new();
        let mut endpoint_url = None;
        for (key, value) in vars {
            if !key.starts_with("AWS_") {
                continue;
            }
            // AWS_ENDPOINT_URL is the AWS SDKs' name; object_store knows it too, but as
            // the same key as its own AWS_ENDPOINT, so whichever the environment listed
            // last would win. The standard name wins here, whatever the order.
            if key == "AWS_ENDPOINT_URL" {
                endpoint_url = Some(value);
                continue;
            }
            if let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(k, value);
            }
        }
        if let Some(endpoint) = endpoint_url {
            builder = builder.with_config(AmazonS3ConfigKey::Endpoint, endpoint);
        }
        let plain_http = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
        let store = builder
            .with_bucket_name(&url.bucket)
            .with_allow_http(plain_http)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            // The whole request, body included: a day's split of several GiB must be able
            // to travel; a stalled connection is cut by the retry's own limit sooner.
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "600s")
            // object_store's default retries for 3 minutes inside one call; callers
            // retry uploads with their own backoff, and a search should fail in seconds
            // rather than hang while the store is down.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let root = if url.prefix.is_empty() {
            ObjectPath::from(group)
        } else {
            ObjectPath::parse(&url.prefix)
                .map_err(|e| fail(e.to_string()))?
                .child(group)
        };
        Ok(Bucket {
            store: Arc::new(store),
            root,
            url: describe,
        })
    }

    /// "s3://bucket/prefix/group" for logs and errors.
    pub fn describe(&self) -> String {
        self.url.clone()
    }

    /// An error naming `what` (an object under the root) and the store's message.
    fn fail(&self, what: &str) -> impl Fn(object_store::Error) -> Error + '_ {
        let what = format!("{}/{what}", self.url);
        move |e| Error::Store {
            what: what.clone(),
            message: e.to_string(),
        }
    }

    /// The full path of `object`, a name relative to the root read from the manifest:
    /// `..` and empty segments are refused, so an entry cannot reach another group.
    fn path(&self, object: &str) -> Result<ObjectPath> {
        let bad = || Error::CorruptSplit {
            object: format!("{}/{object}", self.url),
            reason: "the manifest names it with an invalid path".into(),
        };
        if object
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(bad());
        }
        ObjectPath::parse(format!("{}/{object}", self.root)).map_err(|_| bad())
    }

    fn manifest_path(&self) -> ObjectPath {
        self.root.child("manifest.json")
    }

    /// The manifest and the version it was read at (None when absent).
    async fn read_manifest(&self) -> Result<(Manifest, Option<UpdateVersion>)> {
        let path = self.manifest_path();
        let fail = self.fail("manifest.json");
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok((Manifest::default(), None)),
            Err(e) => return Err(fail(e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        if got.meta.size > MAX_MANIFEST {
            return Err(Error::Store {
                what: format!("{}/manifest.json", self.url),
                message: format!(
                    "{} bytes exceeds the limit of {MAX_MANIFEST}",
                    got.meta.size
                ),
            });
        }
        let bytes = got.bytes().await.map_err(fail)?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
            what: format!("{}/manifest.json", self.url),
            message: format!("not a manifest: {e}"),
        })?;
        if manifest.version > MANIFEST_VERSION {
            return Err(Error::Store {
                what: format!("{}/manifest.json", self.url),
                message: format!(
                    "manifest version {} is newer than this build's {MANIFEST_VERSION}: upgrade",
                    manifest.version
                ),
            });
        }
        Ok((manifest, Some(version)))
    }

    /// The group's manifest; absent → `Manifest::default()`.
    pub async fn manifest(&self) -> Result<Manifest> {
        Ok(self.read_manifest().await?.0)
    }

    /// Read-modify-write with a conditional put; `f` returns Ok(false) for "no change".
    /// Retries on precondition failure (re-reading), at most 20 times.
    pub async fn update_manifest(
        &self,
        mut f: impl FnMut(&mut Manifest) -> Result<bool>,
    ) -> Result<Manifest> {
        let path = self.manifest_path();
        for attempt in 0..MANIFEST_ATTEMPTS {
            let (mut manifest, version) = self.read_manifest().await?;
            if !f(&mut manifest)? {
                return Ok(manifest);
            }
            manifest.version = MANIFEST_VERSION;
            let body = serde_json::to_vec(&manifest).expect("a manifest always serialises");
            let mode = match version {
                Some(v) => PutMode::Update(v),
                None => PutMode::Create,
            };
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(body), opts)
                .await
            {
                Ok(_) => return Ok(manifest),
                // Another replica wrote it since we read it: read theirs and apply ours
                // again, after a short pause that grows and is spread so the writers fall
                // out of step.
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::AlreadyExists { .. }) => {
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
                Err(e) => return Err(self.fail("manifest.json")(e)),
            }
        }
        Err(Error::Store {
            what: format!("{}/manifest.json", self.url),
            message: format!(
                "other writers changed it {MANIFEST_ATTEMPTS} times in a row while this one tried to"
            ),
        })
    }

    /// Uploads the bundle file at `path` as `entry.object` (multipart above 16 MiB), then
    /// checks with a HEAD that the stored size equals entry.bytes → Error::Store otherwise.
    pub async fn put_split(&self, path: &Path, entry: &SplitEntry) -> Result<()> {
        let object = self.path(&entry.object)?;
        let fail = self.fail(&entry.object);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        let len = file.metadata().await.map_err(|e| Error::io(path, e))?.len();
        if len != entry.bytes {
            return Err(Error::io(
                path,
                std::io::Error::other(format!(
                    "the split file has {len} bytes, its entry says {}",
                    entry.bytes
                )),
            ));
        }
        if len <= MULTIPART_ABOVE {
            let mut body = Vec::with_capacity(len as usize);
            file.read_to_end(&mut body)
                .await
                .map_err(|e| Error::io(path, e))?;
            self.store
                .put(&object, PutPayload::from(body))
                .await
                .map_err(&fail)?;
        } else {
            let upload = self.store.put_multipart(&object).await.map_err(&fail)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_ABOVE as usize);
            let mut buf = vec![0u8; 1 << 20];
            let sent: Result<()> = async {
                loop {
                    let n = file.read(&mut buf).await.map_err(|e| Error::io(path, e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(&fail)?;
                    writer.write(&buf[..n]);
                }
            }
            .await;
            match sent {
                Ok(()) => {
                    writer.finish().await.map_err(&fail)?;
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            }
        }
        let head = self.store.head(&object).await.map_err(&fail)?;
        if head.size != entry.bytes {
            return Err(Error::Store {
                what: format!("{}/{}", self.url, entry.object),
                message: format!("stored {} bytes after uploading {}", head.size, entry.bytes),
            });
        }
        if let Some(tail) = &entry.tail {
            // The tail again, as an object of its own: searches open the split with one
            // plain GET of it (and fall back to a ranged GET of the split without it).
            let mut body = vec![0u8; tail.bytes.min(len) as usize];
            file.seek(std::io::SeekFrom::Start(len - body.len() as u64))
                .await
                .map_err(|e| Error::io(path, e))?;
            file.read_exact(&mut body)
                .await
                .map_err(|e| Error::io(path, e))?;
            let name = tail_object(&entry.object);
            self.store
                .put(&self.path(&name)?, PutPayload::from(body))
                .await
                .map_err(self.fail(&name))?;
        }
        Ok(())
    }

    /// The whole of `object` if it exists and has at most `max` bytes; `None` if it does
    /// not exist or is larger (a tail object, which the split itself can stand in for).
    pub async fn get_small(&self, object: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let path = self.path(object)?;
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(object)(e)),
        };
        if got.meta.size > max {
            return Ok(None);
        }
        let bytes = got.bytes().await.map_err(self.fail(object))?;
        Ok(Some(bytes.to_vec()))
    }

    /// Removes a split's object and its tail's; absent is fine. Both are tried; the first
    /// failure is returned (what is left behind, the sweep removes later).
    pub async fn delete_split(&self, entry: &SplitEntry) -> Result<()> {
        let split = self.delete(&entry.object).await;
        let tail = self.delete(&tail_object(&entry.object)).await;
        split.and(tail)
    }

    /// Removes split and tail objects that the manifest does not list and that were last
    /// written more than `grace` ago: uploads a replica lost a race with or stopped before
    /// listing, and removals that failed. The manifest is read after the listing, so a
    /// split listed meanwhile is kept; the grace keeps an upload in flight, written but not
    /// yet listed, out of reach. Returns how many objects went.
    pub async fn sweep(&self, grace: Duration) -> Result<u64> {
        let mut stream = self.store.list(Some(&self.root.child("splits")));
        let cutoff = time::OffsetDateTime::now_utc().unix_timestamp() - grace.as_secs() as i64;
        // (object, the split it belongs to)
        let mut old = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(self.fail("splits/"))?;
            let Some(name) = self.relative(&meta.location) else {
                continue;
            };
            let split = match name.strip_suffix(".tail") {
                Some(stem) => format!("{stem}.split"),
                None if name.ends_with(".split") => name.clone(),
                // Not a name this code writes: left alone.
                None => continue,
            };
            if meta.last_modified.timestamp() < cutoff {
                old.push((name, split));
            }
        }
        if old.is_empty() {
            return Ok(0);
        }
        let manifest = self.manifest().await?;
        let listed: HashSet<&str> = manifest.splits.iter().map(|s| s.object.as_str()).collect();
        let mut first_err = None;
        let mut removed = 0;
        for (name, _) in old
            .iter()
            .filter(|(_, split)| !listed.contains(split.as_str()))
        {
            match self.delete(name).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(removed), Err)
    }

    /// Downloads `entry.object` whole into `dest`, checking size and sha256 against the
    /// entry: a mismatch is Error::CorruptSplit { object, reason } (never a wrong answer).
    /// Returns bytes fetched (for metrics).
    pub async fn get_split(&self, entry: &SplitEntry, dest: &Path) -> Result<u64> {
        let result = self.fetch(entry, dest).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    async fn fetch(&self, entry: &SplitEntry, dest: &Path) -> Result<u64> {
        let object = self.path(&entry.object)?;
        let fail = self.fail(&entry.object);
        let corrupt = |reason: String| Error::CorruptSplit {
            object: format!("{}/{}", self.url, entry.object),
            reason,
        };
        let got = match self.store.get(&object).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(corrupt("it is missing from the bucket".into()))
            }
            Err(e) => return Err(fail(e)),
        };
        if got.meta.size != entry.bytes {
            return Err(corrupt(format!(
                "it has {} bytes, its manifest entry {}",
                got.meta.size, entry.bytes
            )));
        }
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        let mut hasher = Sha256::new();
        let mut fetched = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(&fail)?;
            fetched += chunk.len() as u64;
            // Never write more than the entry promises, whatever the server sends.
            if fetched > entry.bytes {
                return Err(corrupt(format!(
                    "more than the {} bytes of its manifest entry arrived",
                    entry.bytes
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::io(dest, e))?;
        }
        out.sync_all().await.map_err(|e| Error::io(dest, e))?;
        if fetched != entry.bytes {
            return Err(corrupt(format!(
                "{fetched} bytes arrived, its manifest entry says {}",
                entry.bytes
            )));
        }
        let sha = format!("{:x}", hasher.finalize());
        if !sha.eq_ignore_ascii_case(&entry.sha256) {
            return Err(corrupt(format!(
                "sha256 {sha} differs from its manifest entry's {}",
                entry.sha256
            )));
        }
        Ok(fetched)
    }

    /// Bytes `range` of `object` (relative to the root), a split of `size` bytes: one
    /// ranged GET. A missing object, or one of another size, is Error::CorruptSplit.
    pub async fn get_range(&self, object: &str, size: u64, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(object)?;
        let corrupt = |reason: String| Error::CorruptSplit {
            object: format!("{}/{object}", self.url),
            reason,
        };
        let want = range.end - range.start;
        match self.store.get_range(&path, range.clone()).await {
            Ok(got) if got.len() as u64 == want => Ok(got.to_vec()),
            Ok(got) => Err(corrupt(format!(
                "{} bytes arrived for bytes {}..{}",
                got.len(),
                range.start,
                range.end
            ))),
            Err(object_store::Error::NotFound { .. }) => {
                Err(corrupt("it is missing from the bucket".into()))
            }
            Err(e) => {
                // A range past the end of a cut-short object fails as a bad range: say
                // what is wrong with the object rather than with the request.
                if let Ok(head) = self.store.head(&path).await {
                    if head.size != size {
                        return Err(corrupt(format!(
                            "it has {} bytes, its manifest entry {size}",
                            head.size
                        )));
                    }
                }
                Err(self.fail(object)(e))
            }
        }
    }

    /// Removes `object` (relative to the root); absent is fine.
    pub async fn delete(&self, object: &str) -> Result<()> {
        let path = self.path(object)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(object)(e)),
        }
    }

    /// `location`'s name relative to the root, if it is under it.
    fn relative(&self, location: &ObjectPath) -> Option<String> {
        let parts = location.prefix_match(&self.root)?;
        Some(
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// Every object under the root: (name relative to the root, bytes).
    pub async fn list_objects(&self) -> Result<Vec<(String, u64)>> {
        let fail = self.fail("");
        let mut stream = self.store.list(Some(&self.root));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(&fail)?;
            if let Some(name) = self.relative(&meta.location) {
                out.push((name, meta.size));
            }
        }
        Ok(out)
    }

    /// The raw store, for tests that damage objects behind the bucket's back.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> (Arc<dyn ObjectStore>, ObjectPath) {
        (self.store.clone(), self.root.clone())
    }
}

/// The pause before conditional write number `attempt + 1`: 10 ms doubling up to about a
/// second, spread by the clock's nanoseconds (no RNG needed for this).
fn retry_pause(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(7);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(base + nanos % base)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::process::{Child, Command, Stdio};
    use std::sync::Mutex;

    use super::*;
    use crate::metrics::{Metrics, M};
    use crate::objstore::manifest::{entry, split_object};
    use crate::objstore::split::pack;
    use crate::objstore::split::tests::{partition, tmp, START};
    use crate::objstore::Cache;
    use crate::partition::Partition;

    /// A moto_server on a free loopback port, killed when dropped (also when a test panics).
    struct Moto {
        child: Child,
        port: u16,
    }

    impl Moto {
        /// None when moto_server is not installed.
        fn start() -> Option<Moto> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = match Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => panic!("starting moto_server: {e}"),
            };
            let moto = Moto { child, port };
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "moto_server did not listen within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(moto)
        }

        fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Every stored record of a partition, as JSON, sorted.
    fn stored(p: &Partition) -> Vec<String> {
        let searcher = p.reader.searcher();
        let mut out = Vec::new();
        for seg in searcher.segment_readers() {
            let store = seg.get_store_reader(1).unwrap();
            for doc in 0..seg.max_doc() {
                let d: tantivy::TantivyDocument = store.get(doc).unwrap();
                out.push(tantivy::Document::to_json(&d, &p.index.schema()));
            }
        }
        out.sort();
        out
    }

    fn corrupt_reason(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::CorruptSplit { reason, .. }) => reason,
            other => panic!("expected a corrupt split, got {other:?}"),
        }
    }

    #[test]
    fn a_real_s3_server_keeps_the_manifest_the_splits_and_the_cache_right() {
        let Some(moto) = Moto::start() else {
            println!("skipped: the moto_server command is not installed");
            return;
        };
        reqwest::blocking::Client::new()
            .put(format!("{}/sawmill-test", moto.endpoint()))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap();
        // AWS_ENDPOINT_URL (the AWS SDKs' name) must win over a stale AWS_ENDPOINT.
        let vars = [
            ("AWS_ENDPOINT", "https://unreachable.invalid".to_string()),
            ("AWS_ENDPOINT_URL", moto.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let url: StoreUrl = "s3://sawmill-test/a/b".parse().unwrap();
        let bucket = Bucket::from_vars(vars, &url, "g0").unwrap();
        assert_eq!(bucket.describe(), "s3://sawmill-test/a/b/g0");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();

        // The manifest: absent is empty; two writers at once lose nothing.
        rt.block_on(async {
            assert_eq!(bucket.manifest().await.unwrap(), Manifest::default());
            let writers: Vec<_> = (0..2)
                .map(|t| {
                    let b = bucket.clone();
                    tokio::spawn(async move {
                        for i in 0..20i64 {
                            b.update_manifest(|m| {
                                m.splits.push(entry(&format!("t{t}-{i}"), 3600 * i, &[]));
                                Ok(true)
                            })
                            .await
                            .unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.await.unwrap();
            }
            let m = bucket.manifest().await.unwrap();
            let ids: HashSet<&str> = m.splits.iter().map(|s| s.id.as_str()).collect();
            assert_eq!((m.splits.len(), ids.len(), m.version), (40, 40, 1));
            let same = bucket.update_manifest(|_| Ok(false)).await.unwrap();
            assert_eq!(same, m);
            // The server enforces the condition: a write at a stale version is refused
            // (without this, the 40 above could come from writers that never interleaved).
            let (_, stale) = bucket.read_manifest().await.unwrap();
            bucket
                .update_manifest(|m| {
                    m.splits.pop();
                    Ok(true)
                })
                .await
                .unwrap();
            let manifest_path = bucket.manifest_path();
            let put_manifest = |mode: PutMode| {
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                bucket
                    .store
                    .put_opts(&manifest_path, PutPayload::from(b"{}".to_vec()), opts)
            };
            let refused = put_manifest(PutMode::Update(stale.unwrap())).await;
            assert!(
                matches!(refused, Err(object_store::Error::Precondition { .. })),
                "{refused:?}"
            );
            let refused = put_manifest(PutMode::Create).await;
            assert!(
                refused.is_err(),
                "creating over an existing manifest: {refused:?}"
            );
            assert_eq!(bucket.manifest().await.unwrap().splits.len(), 39);
            bucket
                .update_manifest(|m| {
                    m.splits.clear();
                    Ok(true)
                })
                .await
                .unwrap();
        });

        // Two splits of a real partition: upload, record, download.
        let root = tmp("moto");
        let p = partition(&root, &[300, 200]);
        let mut entries = Vec::new();
        for (i, meta) in p
            .index
            .searchable_segment_metas()
            .unwrap()
            .iter()
            .enumerate()
        {
            let file = root.join(format!("{i}.split"));
            let packed = pack(&p.dir, START, 3600, std::slice::from_ref(meta), &file).unwrap();
            let id = format!("{i:032x}");
            let e = SplitEntry {
                object: split_object(START, 3600, &id),
                bytes: packed.bytes,
                sha256: packed.sha256,
                tail: Some(packed.tail),
                records: meta.max_doc() as u64,
                segments: vec![meta.id().uuid_string()],
                ..entry(&id, START, &[])
            };
            rt.block_on(bucket.put_split(&file, &e)).unwrap();
            entries.push((file, e));
        }
        let splits: Vec<SplitEntry> = entries.iter().map(|(_, e)| e.clone()).collect();
        rt.block_on(async {
            bucket
                .update_manifest(|m| {
                    m.splits.extend(splits.iter().cloned());
                    Ok(true)
                })
                .await
                .unwrap();
            assert_eq!(
                bucket.manifest().await.unwrap().of_partition(START).len(),
                2
            );
            let (file, e) = &entries[0];
            let dl = root.join("dl.split");
            assert_eq!(bucket.get_split(e, &dl).await.unwrap(), e.bytes);
            assert_eq!(std::fs::read(&dl).unwrap(), std::fs::read(file).unwrap());
            let mut listed = bucket.list_objects().await.unwrap();
            listed.sort();
            let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
            let tails = splits.iter().map(|s| tail_object(&s.object));
            let tails: Vec<String> = tails.collect();
            assert_eq!(
                names,
                [
                    "manifest.json",
                    &splits[0].object,
                    &tails[0],
                    &splits[1].object,
                    &tails[1]
                ]
            );
            assert_eq!(listed[1].1, splits[0].bytes);
            // Each tail object is the split's last bytes, as the manifest entry says.
            let tail = splits[0].tail.as_ref().unwrap();
            assert_eq!(listed[2].1, tail.bytes);
            let body = std::fs::read(file).unwrap();
            let own = bucket.get_small(&tails[0], tail.bytes).await.unwrap();
            assert_eq!(
                own.as_deref(),
                Some(&body[body.len() - tail.bytes as usize..])
            );

            // The sweep removes split and tail objects the manifest does not list once
            // they are older than the grace, and nothing else.
            let (store, root) = bucket.raw();
            let orphan = split_object(START, 3600, &format!("{:032x}", 99));
            let other = "splits/notes.txt";
            for name in [orphan.clone(), tail_object(&orphan), other.into()] {
                let path = ObjectPath::parse(format!("{root}/{name}")).unwrap();
                store
                    .put(&path, PutPayload::from(vec![1u8; 10]))
                    .await
                    .unwrap();
            }
            let hour = Duration::from_secs(3600);
            assert_eq!(bucket.sweep(hour).await.unwrap(), 0, "too fresh");
            tokio::time::sleep(Duration::from_millis(1100)).await;
            assert_eq!(bucket.sweep(Duration::ZERO).await.unwrap(), 2);
            let mut after: Vec<String> = bucket
                .list_objects()
                .await
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            after.sort();
            let mut want: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
            want.push(other.into());
            want.sort();
            assert_eq!(
                after, want,
                "listed splits, their tails and foreign names stay"
            );
            store
                .delete(&ObjectPath::parse(format!("{root}/{other}")).unwrap())
                .await
                .unwrap();
        });

        // Above 16 MiB the upload goes in parts; it still arrives whole.
        let big = root.join("big.split");
        let body: Vec<u8> = (0..(MULTIPART_ABOVE as usize + (3 << 20)))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&big, &body).unwrap();
        let big_entry = SplitEntry {
            bytes: body.len() as u64,
            sha256: format!("{:x}", Sha256::digest(&body)),
            ..entry(&"b".repeat(32), START, &[])
        };
        rt.block_on(bucket.put_split(&big, &big_entry)).unwrap();
        let back = root.join("big-back.split");
        assert_eq!(
            rt.block_on(bucket.get_split(&big_entry, &back)).unwrap(),
            body.len() as u64
        );
        assert!(std::fs::read(&back).unwrap() == body);
        rt.block_on(bucket.delete(&big_entry.object)).unwrap();
        let wrong = SplitEntry {
            bytes: 5,
            ..big_entry.clone()
        };
        assert!(
            rt.block_on(bucket.put_split(&big, &wrong)).is_err(),
            "a size that disagrees is refused"
        );

        // The cache: two searches at once download once and share the partition.
        let metrics = Arc::new(Metrics::default());
        let schema = p.index.schema();
        let cache = Cache::open(
            &root.join("cache"),
            1 << 30,
            schema.clone(),
            metrics.clone(),
        )
        .unwrap();
        let both: Vec<_> = (0..2)
            .map(|_| {
                let (cache, bucket, handle, splits) = (
                    cache.clone(),
                    bucket.clone(),
                    handle.clone(),
                    splits.clone(),
                );
                std::thread::spawn(move || {
                    cache
                        .partition(&handle, &bucket, START, 3600, &splits)
                        .unwrap()
                })
            })
            .collect();
        let both: Vec<Arc<Partition>> = both.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(Arc::ptr_eq(&both[0], &both[1]));
        assert_eq!(both[0].reader.searcher().num_docs(), 500);
        let total: u64 = splits.iter().map(|s| s.bytes).sum();
        assert_eq!(
            (
                metrics.get(M::StoreCacheMisses),
                metrics.get(M::StoreBytesFetched)
            ),
            (1, total),
            "one download of both splits"
        );
        assert!(cache.bytes() > 0 && metrics.get(M::StoreCacheBytes) == cache.bytes());

        // A writable copy takes new records; the cached entry is not changed by them.
        let dest = root.join("partitions").join("p-copy");
        cache
            .materialize(&handle, &bucket, START, 3600, &splits, &dest)
            .unwrap();
        let copy = Partition::open(dest.clone(), START, 3600).unwrap();
        let mut writer = copy
            .index
            .writer_with_num_threads::<tantivy::TantivyDocument>(1, 15_000_000)
            .unwrap();
        writer
            .add_document(tantivy::TantivyDocument::new())
            .unwrap();
        writer.commit().unwrap();
        copy.reader.reload().unwrap();
        assert_eq!(copy.reader.searcher().num_docs(), 501);
        both[0].reader.reload().unwrap();
        assert_eq!(both[0].reader.searcher().num_docs(), 500);

        // Read by ranges: the same records as the download, for the tails and the chunks
        // the reads touch rather than the whole splits, fetched once; a damaged chunk fails
        // the read naming the split, never hands tantivy other bytes.
        let ranged_metrics = Arc::new(Metrics::default());
        let ranged = Cache::open(
            &root.join("cache-ranged"),
            1 << 30,
            schema.clone(),
            ranged_metrics.clone(),
        )
        .unwrap();
        let r = ranged
            .remote(
                &handle,
                &bucket,
                START,
                3600,
                &splits,
                Arc::new(|_: &Error| {}),
            )
            .unwrap()
            .expect("format 2 splits are read by ranges");
        assert!(r.remote && ranged.bytes() == 0, "nothing downloaded whole");
        let tails: u64 = splits.iter().map(|s| s.tail.as_ref().unwrap().bytes).sum();
        assert_eq!(ranged_metrics.get(M::StoreBytesFetched), tails);
        assert!(tails < total, "opening fetches the tails only");
        assert_eq!(stored(&r), stored(&both[0]), "every stored record alike");
        let fetched = ranged_metrics.get(M::StoreBytesFetched);
        // Splits this small are one chunk each, so reading every record reads them all,
        // but no byte twice.
        assert!(fetched <= total, "{fetched} bytes fetched of {total}");
        assert_eq!(stored(&r), stored(&both[0]));
        assert_eq!(
            ranged_metrics.get(M::StoreBytesFetched),
            fetched,
            "chunks read once are kept"
        );
        let again = ranged
            .remote(
                &handle,
                &bucket,
                START,
                3600,
                &splits,
                Arc::new(|_: &Error| {}),
            )
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&r, &again), "one open copy per partition");
        drop((r, again));
        let (first, entry0) = &entries[0];

        // A tail object the store refuses to read (archived to Glacier by a lifecycle
        // rule: 403 InvalidObjectState) is stood in for by the split's own last bytes.
        let frozen_start = START + 3600 * 20;
        let frozen = SplitEntry {
            object: split_object(frozen_start, 3600, &entry0.id),
            start: frozen_start,
            ..entry0.clone()
        };
        let (store, root_path) = bucket.raw();
        let at = |name: &str| ObjectPath::parse(format!("{root_path}/{name}")).unwrap();
        let body = std::fs::read(first).unwrap();
        let tail_len = entry0.tail.as_ref().unwrap().bytes as usize;
        let glacier = PutOptions {
            attributes: object_store::Attributes::from_iter([(
                object_store::Attribute::StorageClass,
                object_store::AttributeValue::from("GLACIER"),
            )]),
            ..PutOptions::default()
        };
        rt.block_on(async {
            let tail = body[body.len() - tail_len..].to_vec();
            store
                .put(&at(&frozen.object), body.clone().into())
                .await
                .unwrap();
            let tail_at = at(&tail_object(&frozen.object));
            store
                .put_opts(&tail_at, tail.into(), glacier)
                .await
                .unwrap();
            assert!(
                bucket
                    .get_small(&tail_object(&frozen.object), 1 << 20)
                    .await
                    .is_err(),
                "the store refuses to read an archived object"
            );
        });
        let f = ranged
            .remote(
                &handle,
                &bucket,
                frozen_start,
                3600,
                std::slice::from_ref(&frozen),
                Arc::new(|e: &Error| panic!("reported {e}")),
            )
            .expect("opened through the split's own last bytes")
            .unwrap();
        assert_eq!(f.reader.searcher().num_docs(), entry0.records);
        assert_eq!(stored(&f).len() as u64, entry0.records);
        drop(f);

        let mut body = std::fs::read(first).unwrap();
        let data_end = (entry0.bytes - entry0.tail.as_ref().unwrap().bytes) as usize;
        // The tail is intact, so the split opens; every chunk of data is damaged.
        for b in &mut body[..data_end] {
            *b ^= 0x5a;
        }
        let damaged_start = START + 3600 * 10;
        let damaged = SplitEntry {
            object: split_object(damaged_start, 3600, &entry0.id),
            start: damaged_start,
            ..entry0.clone()
        };
        rt.block_on(
            store.put(
                &root_path
                    .child("splits")
                    .child(format!("{damaged_start}-3600"))
                    .child(format!("{}.split", entry0.id)),
                body.into(),
            ),
        )
        .unwrap();
        let reported = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = reported.clone();
        let report = Arc::new(move |e: &Error| sink.lock().unwrap().push(e.to_string()));
        let d = ranged
            .remote(&handle, &bucket, damaged_start, 3600, &[damaged], report)
            .unwrap()
            .unwrap();
        let searcher = d.reader.searcher();
        let read = searcher.segment_readers()[0]
            .get_store_reader(1)
            .map_err(tantivy::TantivyError::from)
            .and_then(|store| store.get::<tantivy::TantivyDocument>(0));
        match read.map_err(Error::from) {
            Err(Error::CorruptSplit { object, reason }) => {
                assert!(
                    object.contains(&entry0.id) && reason.contains("checksum"),
                    "{object}: {reason}"
                );
            }
            other => panic!("a damaged chunk read as {other:?}"),
        }
        assert!(ranged_metrics.get(M::StoreCorruptSplits) >= 1);
        let reported = reported.lock().unwrap();
        assert!(
            reported.len() == 1 && reported[0].contains(&entry0.id),
            "the failed read is reported: {reported:?}"
        );

        // In use is never removed; cleared once free.
        cache.clear();
        assert!(cache.bytes() > 0, "an entry in use was removed");
        drop(both);
        cache.clear();
        assert_eq!(cache.bytes(), 0);

        // The budget: three one-split partitions in room for two; the oldest goes.
        let one = &entries[1];
        let mut parts = Vec::new();
        for k in 1..=3i64 {
            let start = START + 3600 * k;
            let id = format!("{k:032x}");
            let e = SplitEntry {
                object: split_object(start, 3600, &id),
                ..entry(&id, start, &[])
            };
            let e = SplitEntry {
                bytes: one.1.bytes,
                sha256: one.1.sha256.clone(),
                tail: one.1.tail.clone(),
                segments: one.1.segments.clone(),
                ..e
            };
            rt.block_on(bucket.put_split(&one.0, &e)).unwrap();
            parts.push(e);
        }
        let get = |e: &SplitEntry| {
            cache.partition(&handle, &bucket, e.start, 3600, std::slice::from_ref(e))
        };
        let size = {
            get(&parts[0]).unwrap();
            cache.bytes()
        };
        cache.clear();
        let small = Cache::open(
            &root.join("small"),
            size * 5 / 2,
            schema.clone(),
            metrics.clone(),
        )
        .unwrap();
        let get_small = |e: &SplitEntry| {
            small
                .partition(&handle, &bucket, e.start, 3600, std::slice::from_ref(e))
                .map(|_| ())
        };
        let misses = metrics.get(M::StoreCacheMisses);
        for e in &parts {
            get_small(e).unwrap();
            assert!(
                small.bytes() <= size * 5 / 2,
                "{} over {}",
                small.bytes(),
                size * 5 / 2
            );
        }
        get_small(&parts[2]).unwrap();
        get_small(&parts[0]).unwrap();
        assert_eq!(
            metrics.get(M::StoreCacheMisses) - misses,
            4,
            "the first partition was evicted and fetched again"
        );
        drop(small);
        // Reopening keeps the complete entries and drops leftovers.
        std::fs::create_dir_all(
            root.join("small")
                .join("p-000000000001-3600-0000000000000000.tmp"),
        )
        .unwrap();
        let reopened = Cache::open(
            &root.join("small"),
            size * 5 / 2,
            schema.clone(),
            metrics.clone(),
        )
        .unwrap();
        assert_eq!(reopened.bytes(), 2 * size);
        assert!(!root
            .join("small")
            .join("p-000000000001-3600-0000000000000000.tmp")
            .exists());
        // An entry damaged on local disk is fetched again rather than failing forever.
        let entry_dir = std::fs::read_dir(root.join("small"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .find(|d| {
                d.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("p-{:012}", parts[2].start))
            })
            .unwrap();
        std::fs::remove_file(entry_dir.join("meta.json")).unwrap();
        let misses = metrics.get(M::StoreCacheMisses);
        let again = reopened
            .partition(
                &handle,
                &bucket,
                parts[2].start,
                3600,
                std::slice::from_ref(&parts[2]),
            )
            .unwrap();
        assert_eq!(again.reader.searcher().num_docs(), one.1.records);
        assert_eq!(metrics.get(M::StoreCacheMisses), misses + 1);
        drop(again);

        // Damage in the bucket: a clear error, counted, and nothing cached.
        let (raw, prefix) = bucket.raw();
        let target = &parts[1];
        let path = ObjectPath::parse(format!("{prefix}/{}", target.object)).unwrap();
        let good = std::fs::read(&one.0).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0xff;
        rt.block_on(raw.put(&path, PutPayload::from(flipped)))
            .unwrap();
        let dl = root.join("bad.split");
        let reason = corrupt_reason(rt.block_on(bucket.get_split(target, &dl)));
        assert!(reason.contains("sha256"), "{reason}");
        assert!(!dl.exists(), "a corrupt download is not left behind");
        reopened.clear();
        let corrupt_before = metrics.get(M::StoreCorruptSplits);
        let err = reopened
            .partition(
                &handle,
                &bucket,
                target.start,
                3600,
                std::slice::from_ref(target),
            )
            .map(|_| ());
        assert!(
            err.as_ref()
                .unwrap_err()
                .to_string()
                .contains(&target.object),
            "{err:?}"
        );
        corrupt_reason(err);
        assert_eq!(metrics.get(M::StoreCorruptSplits), corrupt_before + 1);
        assert_eq!(reopened.bytes(), 0);

        rt.block_on(raw.put(&path, PutPayload::from(good[..good.len() - 10].to_vec())))
            .unwrap();
        let reason = corrupt_reason(rt.block_on(bucket.get_split(target, &dl)));
        assert!(reason.contains("bytes"), "{reason}");
        rt.block_on(bucket.delete(&target.object)).unwrap();
        rt.block_on(bucket.delete(&target.object)).unwrap();
        let reason = corrupt_reason(rt.block_on(bucket.get_split(target, &dl)));
        assert!(reason.contains("missing"), "{reason}");

        drop(moto);
        let _ = std::fs::remove_dir_all(&root);
    }
}
