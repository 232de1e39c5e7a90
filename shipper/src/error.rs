//! The shipper's errors: [`Error`] for starting and running it, [`DeliveryError`] for a
//! batch a replica did not take. Every conversion is here.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound: the address is taken, not ours, or not allowed.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// What would have been served: `syslog on udp`, `metrics`, …
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// A setting that cannot work, with what to do instead.
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bind(what: &'static str, addr: impl std::fmt::Display, source: std::io::Error) -> Error {
        Error::Bind {
            what,
            addr: addr.to_string(),
            source,
        }
    }
}

/// Why a replica did not take a batch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
    /// It answered that it never will (a 4xx other than 408 and 429): sending the same
    /// body again cannot help, so the batch is given up for that replica.
    #[error("refused with {status}: {message}")]
    Refused { status: u16, message: String },
    /// Not this time (no connection, a certificate that does not verify, a timeout, 401,
    /// 403, 408, 429, 5xx): sent again after a backoff.
    #[error("{0}")]
    Retryable(String),
}

impl From<reqwest::Error> for DeliveryError {
    fn from(e: reqwest::Error) -> DeliveryError {
        DeliveryError::Retryable(sawmill_http::describe(&e))
    }
}

impl DeliveryError {
    /// What an answer with a status other than success means for the batch.
    /// 401 and 403 are retried: a token that is missing or not yet listed is the
    /// operator's to fix (and a reload's to pick up), not a reason to give records up.
    pub fn from_status(status: reqwest::StatusCode, body: String) -> DeliveryError {
        match status.as_u16() {
            401 | 403 => {
                let body: String = body.trim().chars().take(200).collect();
                DeliveryError::Retryable(format!(
                    "{status}: {body} (check --token-file against the indexer's --ingest-token-file)"
                ))
            }
            408 | 429 => DeliveryError::Retryable(status.to_string()),
            _ if status.is_client_error() => DeliveryError::Refused {
                status: status.as_u16(),
                message: body,
            },
            _ => DeliveryError::Retryable(status.to_string()),
        }
    }
}
