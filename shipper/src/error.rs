//! The shipper's one error type.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("indexer `{url}` answered {status}: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error("indexer `{url}` is unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
}
