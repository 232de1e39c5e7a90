//! The UI's one error type and its conversions. What each error means for an HTTP answer
//! (status, page, hint) is decided in `web.rs`, the HTTP layer.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The indexer refused the request (a query that does not parse, a bad time, an unknown
    /// record): its own message, for the user.
    #[error("{message}")]
    Indexer { status: u16, message: String },
    /// No replica answered; one line per replica saying why.
    #[error("no indexer answered: {}", .attempts.join("; "))]
    Unavailable { attempts: Vec<String> },
    /// A request to the UI itself is wrong (a bad parameter).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    /// An indexer answered something that is not its API (a proxy's error page, say).
    #[error("indexer `{url}` answered with something that is not its API: {detail}")]
    BadAnswer { url: String, detail: String },
    /// The UI was started wrong (no `--indexer` URL).
    #[error("{0}")]
    Config(String),
    /// The HTTP client to the indexers could not be built (no TLS backend, say).
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("template: {0}")]
    Render(#[from] askama::Error),
    /// A state change (sign-in, sign-out) that did not come from this site's own form.
    #[error("{0}")]
    Forbidden(String),
}
