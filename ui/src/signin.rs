//! Sign-in: who may see the UI when it serves more than this machine.
//!
//! - Users come from `--users-file` (lines `name:HASH`, argon2 or bcrypt hashes; `sawmill
//!   hash-password` makes argon2id ones), read again on SIGHUP.
//! - A signed-in browser holds a random session id in a cookie (`HttpOnly`, `SameSite=Strict`,
//!   `Secure` under TLS); sessions live in memory (a restart signs everyone out), expire after
//!   [`SESSION_TTL`], and at most [`MAX_SESSIONS`] are kept.
//! - Sign-in and sign-out are the only requests that change state. Both carry a token that
//!   must match a cookie (the double-submit pattern), and a request a browser marks as
//!   cross-site (`Sec-Fetch-Site`) is refused, so another site cannot sign a visitor in or
//!   out.
//! - Failed sign-ins are bounded per client address ([`FAILURES_PER_MINUTE`]), and password
//!   checks (tens of MB of memory each, for argon2) run a few at a time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use askama::Template;
use axum::extract::{ConnectInfo, Form, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::error::{Error, Result};

/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; past it, the one closest to expiry is dropped.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins one address may make in a minute; past it, 429 until the minute ends.
pub const FAILURES_PER_MINUTE: u32 = 10;
/// Addresses whose failures are remembered at once.
const MAX_TRACKED_ADDRESSES: usize = 100_000;
/// Password checks running at once (argon2's default costs 19 MiB each).
const CONCURRENT_CHECKS: usize = 4;

const SESSION_COOKIE: &str = "sawmill_session";
const CSRF_COOKIE: &str = "sawmill_csrf";

/// Reads a password and gives the argon2id hash `--users-file` takes after `name:`.
pub fn hash_password(password: &str) -> std::result::Result<String, String> {
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The users of `--users-file`.
pub struct Users {
    file: PathBuf,
    hashes: RwLock<HashMap<String, String>>,
}

impl Users {
    /// Reads `file`: every line `name:HASH` (blank lines and `#` comments skipped); a line
    /// that is not is an error naming it, as is a file with no user.
    pub fn load(file: &Path) -> Result<Arc<Users>> {
        Ok(Arc::new(Users {
            file: file.to_path_buf(),
            hashes: RwLock::new(read_users(file)?),
        }))
    }

    /// Reads the file again; on an error the users in use stay.
    pub fn reload(&self) -> Result<()> {
        let users = read_users(&self.file)?;
        *self.hashes.write().unwrap_or_else(|e| e.into_inner()) = users;
        Ok(())
    }

    /// `name`'s hash now, if `name` is listed.
    fn hash_of(&self, name: &str) -> Option<String> {
        self.hashes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Whether `password` is `name`'s: the hash it was checked against, so a session can
    /// end when the user is removed or the password changed. An unknown name costs a check
    /// too, so the time taken does not say which names exist.
    fn check(&self, name: &str, password: &str) -> Option<String> {
        match self.hash_of(name) {
            Some(h) => verify(&h, password).then_some(h),
            None => {
                let _ = verify(dummy_hash(), password);
                None
            }
        }
    }
}

fn read_users(file: &Path) -> Result<HashMap<String, String>> {
    let bad = |why: String| Error::Config(format!("users file `{}`: {why}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("line {} is not `name:HASH`", i + 1)))?;
        if name.is_empty() || !is_known_hash(hash) {
            return Err(bad(format!(
                "line {}: `{name}` needs an argon2 or bcrypt hash (make one with `sawmill hash-password`)",
                i + 1
            )));
        }
        users.insert(name.to_string(), hash.to_string());
    }
    if users.is_empty() {
        return Err(bad("no user in it".into()));
    }
    Ok(users)
}

fn is_known_hash(hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash).is_ok();
    }
    matches!(hash.get(..4), Some("$2a$" | "$2b$" | "$2y$")) && hash.len() == 60
}

fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// A hash to check unknown names against, made once.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// A signed-in browser.
#[derive(Clone)]
pub struct Session {
    pub user: String,
    /// The token its sign-out form carries.
    pub csrf: String,
    /// The user's hash at sign-in: a session ends once the users file no longer says it.
    hash: String,
    expires: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the hash.
        f.debug_struct("Session").field("user", &self.user).finish()
    }
}

/// Sign-in state: users, sessions and failures. Cloning shares it.
#[derive(Clone)]
pub struct SignIn {
    users: Arc<Users>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Sign-ins per address (an IPv6 /64) in the current minute: counted when they start,
    /// given back when they succeed, so attempts made at once cannot pass the bound.
    failures: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
    checks: Arc<tokio::sync::Semaphore>,
    /// Cookies get `Secure` (the UI serves HTTPS).
    secure: bool,
}

impl SignIn {
    pub fn new(users: Arc<Users>, secure: bool) -> SignIn {
        SignIn {
            users,
            sessions: Arc::default(),
            failures: Arc::default(),
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
            secure,
        }
    }

    pub fn users(&self) -> &Arc<Users> {
        &self.users
    }

    /// The session a request's cookie names, if it is live and its user still signs in
    /// with the same password.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, &self.cookie_name(SESSION_COOKIE))?;
        let mut sessions = lock(&self.sessions);
        let s = sessions.get(&id)?;
        let live = s.expires > Instant::now()
            && self
                .users
                .hash_of(&s.user)
                .is_some_and(|h| same(&h, &s.hash));
        if !live {
            sessions.remove(&id);
            return None;
        }
        Some(s.clone())
    }

    fn open_session(&self, user: &str, hash: String) -> (String, Session) {
        let id = random_token();
        let session = Session {
            user: user.to_string(),
            csrf: random_token(),
            hash,
            expires: Instant::now() + SESSION_TTL,
        };
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), session.clone());
        (id, session)
    }

    /// Counts an attempt from `ip` before its password is checked, or says how long until
    /// it may try again. Counting first means attempts sent at once cannot all pass the
    /// check before any has failed; [`SignIn::succeeded`] gives the count back.
    fn attempt(&self, ip: IpAddr) -> std::result::Result<(), Duration> {
        let key = bucket(ip);
        let mut failures = lock(&self.failures);
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(60));
        }
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&key) {
            // Every tracked address failed this minute: a newcomer waits rather than grow
            // the map or go uncounted.
            return Err(Duration::from_secs(60));
        }
        let entry = failures.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        if entry.1 >= FAILURES_PER_MINUTE {
            return Err(Duration::from_secs(60).saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    /// A sign-in that succeeded does not count against its address.
    fn succeeded(&self, ip: IpAddr) {
        if let Some(e) = lock(&self.failures).get_mut(&bucket(ip)) {
            e.1 = e.1.saturating_sub(1);
        }
    }

    /// Under TLS cookies take the `__Host-` prefix: a browser then keeps them to this exact
    /// host over HTTPS, so a sibling subdomain cannot plant a token cookie.
    fn cookie_name(&self, name: &str) -> String {
        if self.secure {
            format!("__Host-{name}")
        } else {
            name.to_string()
        }
    }

    fn cookie(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.cookie_name(name),
            max_age.as_secs()
        ))
        .expect("cookie values are hex")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 32 random bytes, hex.
fn random_token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A cookie's value.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The address a failure counts against: an IPv6 client may hold a whole /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Compares in constant time: the tokens are secrets.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Paths a browser that is not signed in may fetch.
fn is_open(path: &str) -> bool {
    matches!(path, "/signin" | "/favicon.ico") || path.starts_with("/static/")
}

/// Requests a script makes (a redirect to a page would be read as data): 401 instead.
fn is_data(path: &str) -> bool {
    matches!(path, "/rows" | "/tail/stream" | "/export")
}

/// Lets signed-in requests through, with their [`Session`] as an extension; sends others to
/// the sign-in page.
pub async fn guard(State(s): State<SignIn>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_open(path) {
        return next.run(req).await;
    }
    if let Some(session) = s.session(req.headers()) {
        req.extensions_mut().insert(session);
        return next.run(req).await;
    }
    if is_data(path) {
        return (StatusCode::UNAUTHORIZED, "sign in first: /signin").into_response();
    }
    let here = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let to = format!(
        "/signin?next={}",
        percent_encoding::utf8_percent_encode(&here, percent_encoding::NON_ALPHANUMERIC)
    );
    Redirect::to(&to).into_response()
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    csrf: String,
    next: String,
    user: String,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct Return {
    #[serde(default)]
    next: Option<String>,
}

/// Where to go after signing in: a path on this site only, never another host. Browsers
/// drop tabs and newlines from a URL (`/\t/evil.example` is `//evil.example`) and read `\`
/// as `/`, so only printable ASCII without `\` is followed, and only a path.
fn safe_next(next: Option<&str>) -> String {
    let on_site = |n: &str| {
        n.starts_with('/')
            && !n.starts_with("//")
            && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
            && n.parse::<axum::http::Uri>()
                .is_ok_and(|u| u.scheme().is_none() && u.authority().is_none())
    };
    match next {
        Some(n) if on_site(n) => n.into(),
        _ => "/".into(),
    }
}

/// The sign-in form, with a fresh token in the form and in a cookie.
pub async fn page(State(s): State<SignIn>, Query(q): Query<Return>) -> Result<Response> {
    form(
        &s,
        safe_next(q.next.as_deref()),
        String::new(),
        None,
        StatusCode::OK,
    )
}

fn form(
    s: &SignIn,
    next: String,
    user: String,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response> {
    let csrf = random_token();
    let html = SignInPage {
        csrf: csrf.clone(),
        next,
        user,
        error,
    }
    .render()?;
    let mut resp = (status, Html(html)).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        s.cookie(CSRF_COOKIE, &csrf, Duration::from_secs(3600)),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(serde::Deserialize)]
pub struct Credentials {
    user: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// Refuses a state change another site asked for: the browser says it is cross-site, or
/// the form's token does not match the cookie only this site could have set.
fn cross_site(headers: &HeaderMap, form_token: &str, cookie_token: Option<&str>) -> bool {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("same-origin");
    if !matches!(site, "same-origin" | "none") {
        return true;
    }
    !cookie_token.is_some_and(|c| !c.is_empty() && same(c, form_token))
}

/// Checks the credentials: a session and a redirect on success, the form again otherwise.
pub async fn submit(
    State(s): State<SignIn>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(c): Form<Credentials>,
) -> Result<Response> {
    let next = safe_next(c.next.as_deref());
    let token_cookie = cookie(&headers, &s.cookie_name(CSRF_COOKIE));
    if cross_site(&headers, &c.csrf, token_cookie.as_deref()) {
        return Err(Error::Forbidden(
            "the sign-in form expired or came from another site: load the sign-in page again"
                .into(),
        ));
    }
    if let Err(wait) = s.attempt(peer.ip()) {
        tracing::debug!(address = %peer.ip(), "Too many failed sign-ins; refusing for a while.");
        let mut resp = form(
            &s,
            next,
            c.user,
            Some(format!(
                "Too many failed sign-ins from your address: try again in {} s.",
                wait.as_secs() + 1
            )),
            StatusCode::TOO_MANY_REQUESTS,
        )?;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
        return Ok(resp);
    }
    // Each check runs on a blocking thread and holds one of a few permits: argon2 takes
    // tens of MB per check, so checks sent at once wait here rather than all run.
    let checked = match s.checks.acquire().await {
        Ok(_permit) => {
            let (users, user, password) = (s.users.clone(), c.user.clone(), c.password);
            tokio::task::spawn_blocking(move || users.check(&user, &password))
                .await
                .unwrap_or(None)
        }
        Err(_) => None,
    };
    let shown: String = c.user.chars().take(64).collect();
    let Some(hash) = checked else {
        tracing::info!(user = %shown, address = %peer.ip(), "Sign-in failed.");
        return form(
            &s,
            next,
            c.user,
            Some("Wrong user name or password.".into()),
            StatusCode::UNAUTHORIZED,
        );
    };
    s.succeeded(peer.ip());
    tracing::info!(user = %shown, address = %peer.ip(), "Signed in.");
    let (id, _) = s.open_session(&c.user, hash);
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        s.cookie(SESSION_COOKIE, &id, SESSION_TTL),
    );
    h.append(
        header::SET_COOKIE,
        s.cookie(CSRF_COOKIE, "", Duration::ZERO),
    );
    Ok(resp)
}

#[derive(serde::Deserialize)]
pub struct SignOut {
    csrf: String,
}

/// Ends the session, if the form is this session's own.
pub async fn sign_out(
    State(s): State<SignIn>,
    headers: HeaderMap,
    Form(f): Form<SignOut>,
) -> Result<Response> {
    let id = cookie(&headers, &s.cookie_name(SESSION_COOKIE));
    let session = s.session(&headers);
    if cross_site(&headers, &f.csrf, session.as_ref().map(|s| s.csrf.as_str())) {
        return Err(Error::Forbidden(
            "sign-out must come from this site's own form".into(),
        ));
    }
    if let Some(id) = id {
        lock(&s.sessions).remove(&id);
    }
    if let Some(session) = session {
        tracing::info!(user = %session.user, "Signed out.");
    }
    let mut resp = Redirect::to("/signin").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        s.cookie(SESSION_COOKIE, "", Duration::ZERO),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_made_here_verifies_and_bcrypt_ones_are_taken() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct hors"));
        // `htpasswd -nbB alice secret` (Apache's bcrypt).
        let b = "$2y$05$2bC9hx4i9DfqLQVdBqw7iOOwvyhqkpl7pMeXFxnPNDwn1tXbf4F2W";
        assert!(is_known_hash(b));
        assert!(hash_password("").is_err());
    }

    #[test]
    fn only_paths_on_this_site_are_followed_after_sign_in() {
        for (given, want) in [
            (Some("/?q=err"), "/?q=err"),
            (Some("//evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/\t/evil.example"), "/"),
            (Some("/\n/evil.example"), "/"),
            (Some("/ok path"), "/"),
            (None, "/"),
        ] {
            assert_eq!(safe_next(given), want, "{given:?}");
        }
    }

    #[test]
    fn a_session_ends_when_its_user_is_removed_or_the_password_changes() {
        let dir = std::env::temp_dir().join(format!("sawmill-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        let first = hash_password("pw").unwrap();
        std::fs::write(&f, format!("alice:{first}\nbob:{first}\n")).unwrap();
        let s = SignIn::new(Users::load(&f).unwrap(), true);
        let (id, _) = s.open_session("alice", s.users().check("alice", "pw").unwrap());
        let mut h = HeaderMap::new();
        let c = format!("other=1; __Host-sawmill_session={id}");
        h.insert(header::COOKIE, HeaderValue::from_str(&c).unwrap());
        assert_eq!(s.session(&h).map(|x| x.user), Some("alice".into()));
        // A new password for alice: her session ends.
        let second = hash_password("new").unwrap();
        std::fs::write(&f, format!("alice:{second}\nbob:{first}\n")).unwrap();
        s.users().reload().unwrap();
        assert!(s.session(&h).is_none());
        // Removed: bob's session ends too.
        let (id, _) = s.open_session("bob", s.users().check("bob", "pw").unwrap());
        let c = format!("__Host-sawmill_session={id}");
        h.insert(header::COOKIE, HeaderValue::from_str(&c).unwrap());
        assert!(s.session(&h).is_some());
        std::fs::write(&f, format!("alice:{second}\n")).unwrap();
        s.users().reload().unwrap();
        assert!(s.session(&h).is_none());
    }

    #[test]
    fn cross_site_or_tokenless_forms_are_refused() {
        let mut h = HeaderMap::new();
        assert!(!cross_site(&h, "t", Some("t")));
        assert!(cross_site(&h, "t", Some("u")));
        assert!(cross_site(&h, "", Some("")));
        assert!(cross_site(&h, "t", None));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h, "t", Some("t")));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&h, "t", Some("t")));
    }

    #[test]
    fn failures_are_limited_per_address_per_minute() {
        let dir = std::env::temp_dir().join(format!("sawmill-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        std::fs::write(&f, format!("alice:{}\n", hash_password("pw").unwrap())).unwrap();
        let s = SignIn::new(Users::load(&f).unwrap(), false);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        // A success gives its attempt back; failures (attempts not given back) add up.
        s.attempt(a).unwrap();
        s.succeeded(a);
        for _ in 0..FAILURES_PER_MINUTE {
            s.attempt(a).unwrap();
        }
        assert!(s.attempt(a).is_err());
        assert!(s.attempt(b).is_ok(), "another address is not limited");
        // One IPv6 client holds a whole /64: its addresses count as one.
        let (c, d): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        for _ in 0..FAILURES_PER_MINUTE {
            s.attempt(c).unwrap();
        }
        assert!(s.attempt(d).is_err());
        std::fs::write(&f, "alice\n").unwrap();
        assert!(s.users().reload().is_err(), "a bad line is refused");
        assert!(
            s.users().check("alice", "pw").is_some(),
            "and the users in use stay"
        );
        assert!(s.users().check("bob", "pw").is_none());
    }
}
