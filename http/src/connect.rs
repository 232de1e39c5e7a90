//! How a client reaches Sawmill's servers: the TLS it verifies them with and the token it
//! sends. The shipper, `query`, the UI and indexers asking their peers all build their
//! HTTP client here, so each speaks https the same way.

use std::sync::Arc;

use crate::auth::ClientToken;
use crate::tls::ClientTls;
use crate::{Error, Result};

/// A client's TLS and token. Cloning shares the token, so a reload reaches every clone.
#[derive(Clone, Default)]
pub struct Connect {
    pub tls: ClientTls,
    pub token: Arc<ClientToken>,
}

impl Connect {
    /// The client `builder` makes, verifying https servers as configured. Plain `http://`
    /// URLs stay plain: a URL's scheme is what the operator chose, never a fallback.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
        self.tls
            .configure(builder)?
            .build()
            .map_err(|e| Error::Client(e.to_string()))
    }

    /// `req` with the token, if there is one.
    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.token.apply(req)
    }

    /// Reads the token file again.
    pub fn reload(&self) -> Result<()> {
        self.token.reload()
    }
}

/// A transport error in a few words, with its root cause ("cannot connect (invalid peer
/// certificate: UnknownIssuer)"): reqwest's own message says only "error sending request".
pub fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = e.source();
    while let Some(inner) = src {
        if inner.source().is_none() {
            s.push_str(&format!(" ({inner})"));
        }
        src = inner.source();
    }
    s
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Connect")
            .field("tls", &self.tls)
            .field("token", &self.token.is_set())
            .finish()
    }
}
