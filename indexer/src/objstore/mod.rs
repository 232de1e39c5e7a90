//! History on object storage: sealed partitions kept as immutable *splits* in an
//! S3-compatible bucket, and searched from there through a bounded local cache.
//!
//! - `split` packs a partition's tantivy segments into one object (the raw segment files,
//!   a JSON footer, its length and a magic) and unpacks one back into an index directory.
//! - `manifest` is the group's list of splits (`PREFIX/GROUP/manifest.json`), changed only
//!   by conditional writes so replicas never lose each other's updates.
//! - `bucket` talks S3 (object_store's `AmazonS3`, configured from the standard AWS
//!   environment): the manifest, uploads verified by size, downloads verified by size and
//!   sha256.
//! - `remote` reads a partition's splits by ranges without downloading them: a GET of
//!   each split's tail to open it, then only the checked chunks a search touches.
//! - `cache` assembles a partition from its splits on local disk, under a byte budget,
//!   and opens it as a [`crate::partition::Partition`] searches read like any other; until
//!   a partition is downloaded, it hands out the copy read by ranges.
//!
//! In the bucket, group `G` owns `PREFIX/G/manifest.json`,
//! `PREFIX/G/splits/START-SPAN/ID.split` and its tail `PREFIX/G/splits/START-SPAN/ID.tail`;
//! `manifest` and `split` define the formats.

mod bucket;
mod cache;
mod manifest;
mod remote;
mod split;

use std::fmt;
use std::str::FromStr;

pub use bucket::Bucket;
pub use cache::Cache;
pub use manifest::{split_object, Manifest, Placement, SplitEntry};
pub use remote::RangeReadError;
pub use split::pack;

/// Where a group's history lives: `s3://BUCKET` or `s3://BUCKET/PREFIX` (`--object-store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    pub bucket: String,
    /// Path segments joined by `/`, without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl FromStr for StoreUrl {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<StoreUrl> {
        let bad = |why: &str| crate::Error::BadRequest(format!("object store `{s}`: {why}"));
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("use the form s3://BUCKET or s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules (3 to 63 of lowercase letters, digits, dots and
        // hyphens, starting and ending with a letter or digit), so a typo fails at start
        // rather than on the first upload.
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(3..=63).contains(&bucket.len())
            || !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            || !edge_ok(bucket.chars().next())
            || !edge_ok(bucket.chars().last())
        {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, dots or hyphens",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.contains('?') || prefix.contains('#') {
            return Err(bad("query strings and fragments are not allowed"));
        }
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(bad("the prefix has an empty, `.` or `..` segment"));
        }
        Ok(StoreUrl {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_print_back() {
        for (text, bucket, prefix, printed) in [
            ("s3://logs", "logs", "", "s3://logs"),
            ("s3://logs/", "logs", "", "s3://logs"),
            ("s3://my.logs-1/a", "my.logs-1", "a", "s3://my.logs-1/a"),
            ("s3://logs/a/b/c/", "logs", "a/b/c", "s3://logs/a/b/c"),
        ] {
            let url: StoreUrl = text.parse().unwrap();
            assert_eq!(
                (url.bucket.as_str(), url.prefix.as_str()),
                (bucket, prefix),
                "{text}"
            );
            assert_eq!(url.to_string(), printed);
            assert_eq!(url.to_string().parse::<StoreUrl>().unwrap(), url);
        }
    }

    /// A corrupt split's answer names the object (502), unlike other 5xx answers that
    /// say only "internal error"; an unreachable store is 503 with its reason.
    #[test]
    fn store_errors_answer_with_their_own_statuses() {
        use axum::response::IntoResponse;
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (err, status, shown) in [
            (
                crate::Error::CorruptSplit {
                    object: "s3://b/g/splits/1-3600/x.split".into(),
                    reason: "sha256 differs".into(),
                },
                502,
                "s3://b/g/splits/1-3600/x.split",
            ),
            (
                crate::Error::Store {
                    what: "s3://b/g/manifest.json".into(),
                    message: "connection refused".into(),
                },
                503,
                "connection refused",
            ),
        ] {
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            let body = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains(shown), "{body}");
        }
    }

    #[test]
    fn bad_store_urls_are_refused_with_a_reason() {
        for (text, why) in [
            ("logs", "s3://BUCKET"),
            ("https://logs", "s3://BUCKET"),
            ("s3://", "bucket name"),
            ("s3://ab", "bucket name"),
            ("s3://Logs", "bucket name"),
            ("s3://logs_1", "bucket name"),
            ("s3://-logs", "bucket name"),
            ("s3://logs/a//b", "empty"),
            ("s3://logs/../b", "`..`"),
            ("s3://logs/a?x=1", "query"),
        ] {
            let err = text.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
    }
}
