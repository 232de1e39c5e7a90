//! TLS for Sawmill's servers and clients (rustls with the `ring` provider).
//!
//! - [`ServerTls`]: a listener's certificate and key, and for mTLS the CA its clients'
//!   certificates must chain to, read from PEM files and read again on [`ServerTls::reload`]
//!   (SIGHUP): new connections get the new certificate, connections open keep theirs.
//! - [`ClientTls`]: what a client trusts (`--ca-file`, or the system's roots) and the
//!   certificate it presents (`--client-cert/--client-key`), turned into the rustls
//!   configuration of a `reqwest` client by [`ClientTls::configure`].
//!
//! Replicas found through DNS are asked at their addresses (`https://10.0.0.5:7280`), but
//! their certificates name the DNS name the operator gave (`tasks.indexer-g0`): discovery
//! tells [`remember_name`] which name an address was found under, and the client's verifier
//! accepts a certificate valid for that name when it is not valid for the address itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a failed handshake was a certificate refused (a client without one under mTLS,
/// or with one from another CA): worth a warning, unlike a port scan or a peer that left.
pub fn is_certificate_refusal(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

/// The files a TLS listener is configured from.
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, every client must present a certificate that chains to one in this PEM file.
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS configuration, replaced whole by a reload.
pub struct ServerTls {
    files: ServerTlsFiles,
    /// The application protocols offered (ALPN): `http/1.1` for HTTP, none for syslog.
    alpn: Vec<Vec<u8>>,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// An HTTP/1.1 listener's TLS. Reads the files; any problem is an error naming the file.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>> {
        ServerTls::load_with(files, vec![b"http/1.1".to_vec()])
    }

    /// A syslog listener's TLS (RFC 5425): no application protocol is negotiated.
    pub fn load_syslog(files: ServerTlsFiles) -> Result<Arc<ServerTls>> {
        ServerTls::load_with(files, Vec::new())
    }

    fn load_with(files: ServerTlsFiles, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerTls>> {
        let config = server_config(&files, &alpn)?;
        Ok(Arc::new(ServerTls {
            files,
            alpn,
            config: RwLock::new(Arc::new(config)),
        }))
    }

    /// Reads the files again. On an error the configuration in use stays, so a half-written
    /// certificate never takes a listener down.
    pub fn reload(&self) -> Result<()> {
        let config = Arc::new(server_config(&self.files, &self.alpn)?);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The configuration in use, for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

fn server_config(files: &ServerTlsFiles, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls(&files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = read_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| Error::tls(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        Error::tls(
            &files.key,
            format!("the key does not fit the certificate or cannot be used: {e}"),
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// What a client trusts and presents.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// Trust only the CAs in this PEM file (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Present this certificate chain (PEM) to servers that ask for one.
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM).
    pub key: Option<PathBuf>,
    /// Trust exactly the leaf certificate in this PEM file, read again at each handshake:
    /// how `sawmill up`'s own shipper and UI reach its indexer, whatever CA signed it.
    pub pin: Option<PathBuf>,
}

impl ClientTls {
    /// A rustls client configuration: the roots, the client certificate if any, and a
    /// verifier that also accepts the DNS name an address was discovered under.
    pub fn config(&self) -> Result<rustls::ClientConfig> {
        let check = match (&self.pin, &self.ca_file) {
            (Some(pinned), _) => {
                read_certs(pinned)?;
                Check::Pinned(pinned.clone())
            }
            (None, Some(ca)) => Check::Web(Some(web_pki(read_roots(ca)?, ca)?)),
            // A machine (a container) with no CA certificates still speaks plain HTTP: an
            // https URL is then refused at its handshake, saying why.
            (None, None) => match system_roots() {
                roots if roots.is_empty() => Check::Web(None),
                roots => Check::Web(Some(web_pki(roots, Path::new("the system's roots"))?)),
            },
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::tls(Path::new("rustls"), e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                algorithms: provider().signature_verification_algorithms,
                check,
            }));
        let mut config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| {
                    Error::tls(key, format!("the key does not fit the certificate: {e}"))
                })?,
            (Some(f), None) | (None, Some(f)) => {
                return Err(Error::tls(
                    f,
                    "a client certificate needs both --client-cert and --client-key",
                ))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// `builder` with this TLS configuration (https URLs only; http ones stay plain).
    pub fn configure(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        Ok(builder.use_preconfigured_tls(self.config()?))
    }
}

/// The system's trusted roots; unreadable ones are logged and left out.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "A system CA certificate could not be read; it is not trusted.");
    }
    let mut roots = RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(found.certs);
    if bad > 0 {
        tracing::warn!(
            certificates = bad,
            "System CA certificates rustls cannot use are not trusted."
        );
    }
    roots
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::tls(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::tls(path, e))?;
    if certs.is_empty() {
        return Err(Error::tls(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::tls(path, e))
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| Error::tls(path, format!("not a CA certificate rustls can use: {e}")))?;
    }
    Ok(roots)
}

/// The DNS names discovery found addresses under, by name: each resolution replaces its
/// name's addresses, so the map follows the membership (tasks come and go) and stays as
/// large as what discovery lists.
fn names() -> &'static RwLock<HashMap<String, Vec<IpAddr>>> {
    static NAMES: OnceLock<RwLock<HashMap<String, Vec<IpAddr>>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// Records that the DNS name `name` lists `ips` now: a certificate valid for `name` is then
/// accepted from those addresses. Only names the operator gave come here (for SRV records,
/// the service's domain, never a target an answer names: RFC 6125 §6.2.1).
pub fn remember_name(name: &str, ips: &[IpAddr]) {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    names()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, ips.to_vec());
}

/// The names `ip` was found under.
fn names_of(ip: IpAddr) -> Vec<String> {
    names()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, ips)| ips.contains(&ip))
        .map(|(name, _)| name.clone())
        .collect()
}

fn web_pki(roots: RootCertStore, from: &Path) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::tls(from, e))
}

/// The client's verifier: which certificates it accepts, and the provider's algorithms for
/// the handshake's signatures.
#[derive(Debug)]
struct Verifier {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    check: Check,
}

/// Which server certificates a client accepts.
#[derive(Debug)]
enum Check {
    /// The web PKI's verdict over these roots, where for an address the names it was found
    /// under also count; none when no CA is trusted at all.
    Web(Option<Arc<WebPkiServerVerifier>>),
    /// Exactly the leaf certificate of a file (this process's own listener's), read again
    /// at each handshake.
    Pinned(PathBuf),
}

impl Verifier {
    fn pinned(
        file: &Path,
        end_entity: &CertificateDer<'_>,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let pinned = read_certs(file).map_err(|e| rustls::Error::General(e.to_string()))?;
        if pinned
            .first()
            .is_some_and(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn discovered(
        web: &WebPkiServerVerifier,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let first = web.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let wrong_name = matches!(
            first,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        );
        let ServerName::IpAddress(ip) = server_name else {
            return first;
        };
        if !wrong_name {
            return first;
        }
        for name in names_of(IpAddr::from(*ip)) {
            let Ok(name) = ServerName::try_from(name) else {
                continue;
            };
            if let Ok(ok) = web.verify_server_cert(end_entity, intermediates, &name, ocsp, now) {
                return Ok(ok);
            }
        }
        first
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::Pinned(file) => Verifier::pinned(file, end_entity),
            Check::Web(Some(web)) => {
                Verifier::discovered(web, end_entity, intermediates, server_name, ocsp, now)
            }
            Check::Web(None) => Err(rustls::Error::General(
                "no CA is trusted: this system has no CA certificates; pass --ca-file".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
