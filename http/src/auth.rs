//! Tokens: who may write (ingest) and who may read (search, metrics) a server, and the
//! token a client sends.
//!
//! Tokens live in files, one per line (blank lines and `#` comments skipped), never on the
//! command line where `ps` shows them. A request carries one as `Authorization: Bearer
//! TOKEN`, or as the password of Basic credentials (any user name), which is what Vector,
//! Filebeat, rsyslog's omelasticsearch and Grafana send. Tokens are kept as SHA-256 digests
//! and compared in constant time; a file is read again on SIGHUP, so a token is rotated by
//! listing old and new, reloading, moving the clients, then dropping the old one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use sawmill_record::api;

use crate::{Error, Result};

/// What a route needs: the contract says, per path ([`api::token_for`]).
pub use sawmill_record::api::Token as Need;

fn name(need: Need) -> &'static str {
    match need {
        Need::None => "none",
        Need::Ingest => "ingest",
        Need::Read => "read",
        Need::Either => "ingest or read",
    }
}

/// The tokens of one file.
pub struct Tokens {
    file: PathBuf,
    digests: RwLock<Vec<[u8; 32]>>,
}

impl Tokens {
    /// Reads `file`; one with no token is an error (it would refuse every request).
    pub fn load(file: &Path) -> Result<Arc<Tokens>> {
        let digests = read_tokens(file)?;
        Ok(Arc::new(Tokens {
            file: file.to_path_buf(),
            digests: RwLock::new(digests),
        }))
    }

    /// Reads the file again; on an error the tokens in use stay.
    pub fn reload(&self) -> Result<()> {
        let digests = read_tokens(&self.file)?;
        *self.digests.write().unwrap_or_else(|e| e.into_inner()) = digests;
        Ok(())
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in constant
    /// time over digests of equal length, so the time taken says nothing about any of them.
    fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let digests = self.digests.read().unwrap_or_else(|e| e.into_inner());
        let mut found = subtle::Choice::from(0);
        for d in digests.iter() {
            found |= d.ct_eq(&digest);
        }
        found.into()
    }
}

fn read_tokens(file: &Path) -> Result<Vec<[u8; 32]>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Tokens {
        file: file.to_path_buf(),
        why: e.to_string(),
    })?;
    let digests: Vec<[u8; 32]> = lines(&text)
        .map(|t| Sha256::digest(t.as_bytes()).into())
        .collect();
    if digests.is_empty() {
        return Err(Error::Tokens {
            file: file.to_path_buf(),
            why: "it holds no token (one per line; `#` starts a comment)".into(),
        });
    }
    Ok(digests)
}

/// The tokens of a file's text: trimmed lines, but blank ones and `#` comments.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Who may do what on one server: without a file for a kind of route, that kind is open.
/// Cloning shares the tokens and the counts.
#[derive(Clone, Default)]
pub struct Access {
    pub ingest: Option<Arc<Tokens>>,
    pub read: Option<Arc<Tokens>>,
    refused: Arc<[AtomicU64; 2]>,
}

impl Access {
    pub fn new(ingest: Option<Arc<Tokens>>, read: Option<Arc<Tokens>>) -> Access {
        Access {
            ingest,
            read,
            refused: Arc::default(),
        }
    }

    /// Whether any route needs a token.
    pub fn any(&self) -> bool {
        self.ingest.is_some() || self.read.is_some()
    }

    /// Reads every token file again; one that cannot be read keeps its tokens and does not
    /// stop the other from being read (the first error is returned).
    pub fn reload(&self) -> Result<()> {
        let mut first = None;
        for t in [&self.ingest, &self.read].into_iter().flatten() {
            if let Err(e) = t.reload() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Whether the request's credentials give what `need` asks.
    pub fn allows(&self, need: Need, headers: &HeaderMap) -> bool {
        let tokens = match need {
            Need::None => return true,
            Need::Ingest => &self.ingest,
            Need::Read => &self.read,
            Need::Either => {
                return self.allows(Need::Ingest, headers) || self.allows(Need::Read, headers)
            }
        };
        let Some(tokens) = tokens else {
            return true;
        };
        presented(headers).is_some_and(|t| tokens.accepts(&t))
    }

    /// Requests refused for want of a valid token: (ingest, read).
    pub fn refused(&self) -> (u64, u64) {
        (self.refused[0].load(Relaxed), self.refused[1].load(Relaxed))
    }

    /// The Prometheus lines of the refusal counts, named `{prefix}_requests_unauthorized_total`.
    pub fn render_metrics(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write as _;
        let (ingest, read) = self.refused();
        let _ = writeln!(
            out,
            "# HELP {prefix}_requests_unauthorized_total Requests refused with 401: no valid token for the route.\n# TYPE {prefix}_requests_unauthorized_total counter\n{prefix}_requests_unauthorized_total{{need=\"ingest\"}} {ingest}\n{prefix}_requests_unauthorized_total{{need=\"read\"}} {read}"
        );
    }

    /// `router`, with every request checked against what its route needs.
    pub fn guard(self, router: Router) -> Router {
        if !self.any() {
            return router;
        }
        router.layer(axum::middleware::from_fn_with_state(self, guard))
    }
}

async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    let need = api::token_for(req.uri().path());
    if access.allows(need, req.headers()) {
        return next.run(req).await;
    }
    access.refused[usize::from(need != Need::Ingest)].fetch_add(1, Relaxed);
    unauthorized(need)
}

/// 401, saying which token the route needs and how to send it.
fn unauthorized(need: Need) -> Response {
    let body = serde_json::json!({
        "error": format!(
            "this route needs {} token: send `Authorization: Bearer TOKEN` (or Basic credentials with the token as the password)",
            match need {
                Need::Ingest => "an ingest",
                Need::Read => "a read",
                _ => "an ingest or a read",
            }
        ),
        "status": 401,
        "need": name(need),
    });
    let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sawmill\", Basic realm=\"sawmill\""),
    );
    resp
}

/// The token a request carries: a Bearer token, or Basic credentials' password.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// The token a client sends: the first token of its file, read again on reload.
#[derive(Default)]
pub struct ClientToken {
    file: Option<PathBuf>,
    header: RwLock<Option<HeaderValue>>,
}

impl ClientToken {
    /// No token: requests go without credentials.
    pub fn none() -> Arc<ClientToken> {
        Arc::default()
    }

    /// The first token of `file`, if one is given; none otherwise.
    pub fn load_if(file: Option<&Path>) -> Result<Arc<ClientToken>> {
        file.map_or_else(|| Ok(ClientToken::none()), ClientToken::load)
    }

    /// The first token of `file`.
    pub fn load(file: &Path) -> Result<Arc<ClientToken>> {
        let header = read_client_token(file)?;
        Ok(Arc::new(ClientToken {
            file: Some(file.to_path_buf()),
            header: RwLock::new(Some(header)),
        }))
    }

    /// Reads the file again; on an error the token in use stays.
    pub fn reload(&self) -> Result<()> {
        if let Some(f) = &self.file {
            let h = read_client_token(f)?;
            *self.header.write().unwrap_or_else(|e| e.into_inner()) = Some(h);
        }
        Ok(())
    }

    /// Whether requests carry a token.
    pub fn is_set(&self) -> bool {
        self.file.is_some()
    }

    /// `req` with the token, if there is one.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &*self.header.read().unwrap_or_else(|e| e.into_inner()) {
            Some(h) => req.header(header::AUTHORIZATION, h.clone()),
            None => req,
        }
    }
}

fn read_client_token(file: &Path) -> Result<HeaderValue> {
    let err = |why: String| Error::Tokens {
        file: file.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let token = lines(&text)
        .next()
        .ok_or_else(|| err("it holds no token".into()))?;
    let mut h = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| err("the token holds characters a header cannot carry".into()))?;
    // Kept out of any debug output of the request.
    h.set_sensitive(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    fn tokens(text: &str) -> Arc<Tokens> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("sawmill-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(N.fetch_add(1, Relaxed).to_string());
        std::fs::write(&f, text).unwrap();
        Tokens::load(&f).unwrap()
    }

    #[test]
    fn bearer_and_basic_passwords_are_accepted_and_nothing_else() {
        let access = Access::new(Some(tokens("# ingest\nabc\n\n  def  \n")), None);
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        for ok in [
            "Bearer abc",
            "bearer def",
            "BEARER  abc",
            &basic("vector:abc"),
            &basic(":def"),
        ] {
            assert!(access.allows(Need::Ingest, &headers(ok)), "{ok}");
        }
        for bad in [
            "Bearer ab",
            "Bearer abcd",
            "Bearer # ingest",
            "abc",
            "Token abc",
            &basic("abc"),
            &basic("abc:x"),
            "Basic !!!",
        ] {
            assert!(!access.allows(Need::Ingest, &headers(bad)), "{bad}");
        }
        assert!(!access.allows(Need::Ingest, &HeaderMap::new()));
        // No read file: reading is open; health always is.
        assert!(access.allows(Need::Read, &HeaderMap::new()));
        assert!(access.allows(Need::None, &HeaderMap::new()));
    }

    #[test]
    fn a_file_without_tokens_is_an_error_and_a_reload_keeps_the_old_tokens_on_one() {
        let t = tokens("old\n");
        assert!(Tokens::load(&t.file().with_file_name("missing")).is_err());
        std::fs::write(t.file(), "# nothing\n\n").unwrap();
        let e = t.reload().unwrap_err();
        assert!(e.to_string().contains("no token"), "{e}");
        assert!(t.accepts(b"old"));
        std::fs::write(t.file(), "old\nnew\n").unwrap();
        t.reload().unwrap();
        assert!(t.accepts(b"old") && t.accepts(b"new"));
    }
}
