//! The HTTP face: routes, thin handlers (parse, call the page's function, render), the
//! static script and style, the security headers every answer carries, and the one place
//! where an [`Error`] becomes an HTTP status and an error page.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::Stream;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::pages::{self, Chrome};
use crate::signin::{self, SignIn};
use crate::url::{Tz, View};

/// No inline script or style anywhere, so this policy can forbid both: a payload that
/// slipped into markup could still not run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const APP_JS: &str = include_str!("../static/app.js");
const APP_CSS: &str = include_str!("../static/app.css");

#[derive(Clone)]
pub struct AppState {
    pub client: Client,
}

/// The UI's routes over `client`'s replicas; with `signin`, only for signed-in browsers.
pub fn router(client: Client, signin: Option<SignIn>) -> Router {
    let pages = Router::new()
        .route("/", get(discover))
        .route("/rows", get(rows))
        .route("/trace/{id}", get(request))
        .route("/context/{id}", get(context))
        .route("/record/{id}", get(record))
        .route("/tail", get(tail))
        .route("/tail/stream", get(tail_stream))
        .route("/export", get(export))
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .fallback(not_found)
        .with_state(AppState { client });
    let pages = match signin {
        None => pages,
        Some(s) => Router::new()
            .route("/signin", get(signin::page).post(signin::submit))
            .route("/signout", post(signin::sign_out))
            // A sign-in form is a few hundred bytes; waiting checks must not hold megabytes.
            .layer(axum::extract::DefaultBodyLimit::max(16 << 10))
            .with_state(s.clone())
            .merge(pages)
            .layer(axum::middleware::from_fn_with_state(s, signin::guard)),
    };
    // Open to the orchestrator's health check, signed in or not: it says only that the UI
    // serves (its indexers' state is on every page's banner).
    pages
        .route("/healthz", get(sawmill_http::serving))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// What a page's chrome needs from its request: its URI and who is signed in.
pub struct Viewer {
    uri: Uri,
    session: Option<crate::signin::Session>,
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, Infallible> {
        Ok(Viewer {
            uri: parts.uri.clone(),
            session: parts.extensions.get::<crate::signin::Session>().cloned(),
        })
    }
}

/// Query-string parameters whose rejection is the UI's own 400 page.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| Error::BadRequest(e.body_text()))
    }
}

fn html<T: Template>(page: &T) -> Result<Html<String>> {
    Ok(Html(page.render()?))
}

/// A refused query is still a page (with the message inline), answered as the client
/// error it is.
fn html_refused_or_ok<T: Template>(page: &T, refused: bool) -> Result<Response> {
    let body = html(page)?;
    Ok(if refused {
        (StatusCode::BAD_REQUEST, body).into_response()
    } else {
        body.into_response()
    })
}

async fn discover(
    State(s): State<AppState>,
    viewer: Viewer,
    Params(view): Params<View>,
) -> Result<Response> {
    let chrome = Chrome::new(&s.client, view.tz, &viewer.uri, "discover").signed_in(viewer.session);
    let page = pages::discover::page(&s.client, view, chrome).await?;
    html_refused_or_ok(&page, page.error.is_some())
}

async fn rows(State(s): State<AppState>, Params(view): Params<View>) -> Result<Html<String>> {
    html(&pages::discover::rows_fragment(&s.client, &view).await?)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TzOnly {
    #[serde(default)]
    tz: Tz,
}

async fn request(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Params(p): Params<TzOnly>,
) -> Result<Html<String>> {
    let chrome = Chrome::new(&s.client, p.tz, &viewer.uri, "").signed_in(viewer.session);
    html(&pages::request::page(&s.client, &id, p.tz, chrome).await?)
}

async fn context(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Params(p): Params<pages::context::ContextParams>,
) -> Result<Html<String>> {
    let chrome = Chrome::new(&s.client, p.tz, &viewer.uri, "").signed_in(viewer.session);
    html(&pages::context::page(&s.client, &id, p, chrome).await?)
}

async fn record(
    State(s): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Params(p): Params<pages::record::RecordParams>,
) -> Result<Html<String>> {
    let chrome = Chrome::new(&s.client, p.tz, &viewer.uri, "").signed_in(viewer.session);
    html(&pages::record::page(&s.client, &id, p, chrome).await?)
}

async fn tail(
    State(s): State<AppState>,
    viewer: Viewer,
    Params(p): Params<pages::tail::TailParams>,
) -> Result<Response> {
    let chrome = Chrome::new(&s.client, p.tz, &viewer.uri, "tail").signed_in(viewer.session);
    let page = pages::tail::page(&s.client, p, chrome).await?;
    html_refused_or_ok(&page, page.error.is_some())
}

async fn tail_stream(
    State(s): State<AppState>,
    Params(p): Params<pages::tail::TailParams>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let stream = pages::tail::stream(&s.client, p).await?;
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn export(
    State(s): State<AppState>,
    Params(p): Params<pages::export::ExportParams>,
) -> Result<Response> {
    let e = pages::export::export(&s.client, p).await?;
    Ok((
        [
            (header::CONTENT_TYPE, e.content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", e.filename),
            ),
        ],
        e.body,
    )
        .into_response())
}

async fn not_found(uri: Uri) -> Error {
    Error::NotFound(format!("page `{}`", uri.path()))
}

/// The error page: the status, what went wrong and what to do about it.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: &'static str,
    message: String,
    hint: &'static str,
}

/// The status an error answers with.
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Indexer { status, .. } => match *status {
            404 => StatusCode::NOT_FOUND,
            413 => StatusCode::PAYLOAD_TOO_LARGE,
            429 => StatusCode::TOO_MANY_REQUESTS,
            504 => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        },
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
        Error::Config(_) | Error::HttpClient(_) | Error::Render(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// What the person in front of the page can do about it.
fn hint_of(e: &Error) -> &'static str {
    match e {
        Error::Indexer { status: 404, .. } | Error::NotFound(_) => {
            "The record or page may have been removed by retention, or the link is from another installation. Go back to Discover and search again."
        }
        Error::Indexer { .. } => {
            "Fix the query or the time range and search again. Examples: `service:api AND severity:err`, `\"exact phrase\"`, `start=now-1h`."
        }
        Error::BadRequest(_) => "Check the link's parameters, or start again from Discover.",
        Error::Forbidden(_) => "Open the page again from this site and submit its form.",
        Error::Unavailable { .. } => {
            "Start an indexer (`sawmill indexer` or `sawmill up`) or check the --indexer URLs this UI was given; this page retries when reloaded."
        }
        Error::BadAnswer { .. } => {
            "Check that the --indexer URL points at a Sawmill indexer and not at another service."
        }
        Error::Config(_) | Error::HttpClient(_) | Error::Render(_) => {
            "This is a bug in the UI; the server log has the details."
        }
    }
}

/// Every error answer: its status and the error page. A 5xx of the UI's own says only
/// "internal error" to the browser and logs the detail.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "Page failed.");
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("error"),
            message,
            hint: hint_of(&self),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "Error page failed to render.");
                (status, page.message).into_response()
            }
        }
    }
}
