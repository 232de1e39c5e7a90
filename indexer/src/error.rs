//! The indexer's one error type: every conversion into it, and the one place where errors
//! become HTTP statuses and the contract's error body.

use std::any::Any;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sawmill_record::api::ErrorBody;

use crate::objstore::RangeReadError;
use crate::times::span_text;

pub type Result<T> = std::result::Result<T, Error>;

/// `Clone`, so one failed group write of the log answers every request in the group with
/// the same error (the I/O and tantivy causes are shared, not copied).
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong: a bad parameter, a bad time, an unknown field.
    #[error("{0}")]
    BadRequest(String),
    #[error("query `{query}` does not parse: {message}")]
    BadQuery { query: String, message: String },
    #[error("the request body did not arrive within {} s (the limit set by --body-timeout)", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    #[error("{what} exceeds the limit of {limit} bytes (raise it with --max-body-bytes)")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("unsupported content encoding `{0}`: send gzip, zstd or an uncompressed body")]
    UnsupportedEncoding(String),
    #[error("the request body could not be decompressed: {0}")]
    BadEncoding(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A repair key list over its fixed limit (a peer of this build never sends one).
    #[error("the key list exceeds the limit of {0} bytes")]
    KeysTooLarge(usize),
    /// The request was meant for another replica (a peer's address now reaches this one).
    #[error("{0}")]
    Conflict(String),
    #[error("data directory `{path}` is in use by another indexer (pid {pid}): stop it, or give this one another --data")]
    Locked { path: PathBuf, pid: String },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        source: Arc<io::Error>,
    },
    #[error("the disk holding `{path}` is full: free space or lower --retention / --max-disk")]
    DiskFull { path: PathBuf },
    #[error("tantivy: {0}")]
    Tantivy(Arc<tantivy::TantivyError>),
    #[error("the indexer is shutting down")]
    ShuttingDown,
    /// A bug: a search thread or blocking task panicked. The thread lives on; the client
    /// gets a 500.
    #[error("a task panicked: {0}")]
    Panicked(String),
    #[error("too many searches at once: {running} running and {queued} waiting, the most --max-concurrent-searches and --search-queue allow; retry shortly")]
    Busy { running: usize, queued: usize },
    #[error("the search waited {} for a free search slot (--search-queue-timeout) while other searches ran; retry shortly", span_text(*.waited))]
    QueueTimeout { waited: Duration },
    #[error("the search ran longer than --search-timeout ({}) and was stopped: narrow the query or the time range", span_text(*.timeout))]
    SearchTimeout { timeout: Duration },
    /// A peer's repair answer was missing or wrong (only in logs: peers are asked, never
    /// answered with this).
    #[error("{0}")]
    Peer(String),
    /// Nobody waits for the answer any more; never sent.
    #[error("the search was cancelled: the client went away")]
    Cancelled,
    /// The object store could not be reached or refused a request; local ingest and
    /// search go on, and uploads are retried.
    #[error("object store `{what}`: {message}")]
    Store { what: String, message: String },
    /// A split in the object store does not match its manifest entry (size, checksum or
    /// format): searches that need it fail rather than answer wrongly.
    #[error("split `{object}` in the object store is corrupt: {reason}")]
    CorruptSplit { object: String, reason: String },
    /// Opening one more partition read by ranges would hold more memory than
    /// `--cache-memory` allows (every cold partition a search reaches stays open until it
    /// ends).
    #[error("the search reaches more of the object store's history than --cache-memory ({limit} bytes) holds open at once: its split tails need {needed} more bytes while searches hold {held}; narrow the time range, or retry when other searches end")]
    ColdMemory { needed: u64, held: u64, limit: u64 },
}

impl Error {
    /// Wraps an I/O error with the path it concerns, singling out a full disk.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return Error::DiskFull { path };
        }
        Error::Io {
            path,
            source: Arc::new(source),
        }
    }

    /// A caught panic, with its message when it has one.
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Error {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::Panicked(what)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::BadQuery { .. } | Error::BadEncoding(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::TooLarge { .. } | Error::KeysTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Error::ShuttingDown
            | Error::QueueTimeout { .. }
            | Error::Cancelled
            | Error::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::CorruptSplit { .. } => StatusCode::BAD_GATEWAY,
            Error::Busy { .. } | Error::ColdMemory { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::SearchTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Locked { .. }
            | Error::Io { .. }
            | Error::Tantivy(_)
            | Error::Panicked(_)
            | Error::Peer(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        // A split read by ranges that failed under tantivy: say what happened to which
        // split (502 corrupt, 503 unreachable), not "an I/O error" (500).
        if let Some(r) = range_read_error(&e) {
            return r.to_error();
        }
        Error::Tantivy(Arc::new(e))
    }
}

/// The [`RangeReadError`] inside a tantivy error, if a ranged read caused it.
fn range_read_error(e: &tantivy::TantivyError) -> Option<&RangeReadError> {
    use tantivy::directory::error::OpenReadError;
    use tantivy::TantivyError;
    let io = match e {
        TantivyError::IoError(io) => io.as_ref(),
        TantivyError::OpenReadError(OpenReadError::IoError { io_error, .. }) => io_error.as_ref(),
        _ => return None,
    };
    io.get_ref()?.downcast_ref::<RangeReadError>()
}

/// The one way a blocking task that did not finish becomes an error: a panic is a bug
/// (500); a task cancelled because the runtime is stopping means the indexer is.
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        match e.try_into_panic() {
            Ok(payload) => Error::from_panic(payload),
            Err(_) => Error::ShuttingDown,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // 5xx details are for the operator's log, not for whoever sent the request; those
        // below say what the client can do about them (a corrupt split names the object, so
        // the answer says which part of the history is unreadable).
        let message = if status.is_server_error()
            && !matches!(
                status,
                StatusCode::INSUFFICIENT_STORAGE
                    | StatusCode::GATEWAY_TIMEOUT
                    | StatusCode::BAD_GATEWAY
            ) {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                self.to_string()
            } else {
                tracing::error!(error = %self, "Request failed.");
                "internal error".to_string()
            }
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            error: message,
            status: status.as_u16(),
        };
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may never come: the connection cannot carry another request.
            headers.insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        // Slots free up as searches end: a second is a fair first guess for a retry.
        if matches!(self, Error::Busy { .. } | Error::QueueTimeout { .. }) {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}
