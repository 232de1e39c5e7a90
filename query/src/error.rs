//! The query crate's one error type. What each means for an HTTP answer is decided in one
//! place, `server.rs`'s `IntoResponse`.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An indexer refused the request (a query that does not parse, a bad time, a search
    /// past its timeout): its own status and message, which every group would give.
    #[error("{message}")]
    Indexer { status: u16, message: String },
    /// No group answered: one line per replica asked, saying why.
    #[error("no indexer answered: {}", .attempts.join("; "))]
    Unavailable { attempts: Vec<String> },
    /// Discovery has found no group yet.
    #[error("no indexer group is known yet: {0}")]
    NoGroups(String),
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Too many requests already being fanned out; try again shortly.
    #[error("{0}")]
    Busy(String),
    /// An indexer answered something that is not its API.
    #[error("indexer `{url}` answered with something that is not its API: {detail}")]
    BadAnswer { url: String, detail: String },
    /// Started wrong (no `--indexer`).
    #[error("{0}")]
    Config(String),
    /// The HTTP client to the indexers could not be built.
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}
