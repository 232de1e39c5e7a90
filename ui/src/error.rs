//! The UI's one error type, and the one place where errors become HTTP statuses and pages.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

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
    #[error("template: {0}")]
    Render(#[from] askama::Error),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Indexer { status, .. } => match *status {
                404 => StatusCode::NOT_FOUND,
                413 => StatusCode::PAYLOAD_TOO_LARGE,
                429 => StatusCode::TOO_MANY_REQUESTS,
                504 => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            },
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
            Error::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the person in front of the page can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::Indexer { status: 404, .. } | Error::NotFound(_) => {
                "The record or page may have been removed by retention, or the link is from another installation. Go back to Discover and search again."
            }
            Error::Indexer { .. } => {
                "Fix the query or the time range and search again. Examples: `service:api AND severity:err`, `\"exact phrase\"`, `start=now-1h`."
            }
            Error::BadRequest(_) => "Check the link's parameters, or start again from Discover.",
            Error::Unavailable { .. } => {
                "Start an indexer (`sawmill indexer` or `sawmill up`) or check the --indexer URLs this UI was given; this page retries when reloaded."
            }
            Error::BadAnswer { .. } => {
                "Check that the --indexer URL points at a Sawmill indexer and not at another service."
            }
            Error::Render(_) => "This is a bug in the UI; the server log has the details.",
        }
    }

    /// The message shown to the user: 5xx details stay in the server's log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Render(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "Page failed.");
        }
        let page = crate::pages::ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("error"),
            message: self.public_message(),
            hint: self.hint(),
        };
        match askama::Template::render(&page) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "Error page failed to render.");
                (status, self.public_message()).into_response()
            }
        }
    }
}
