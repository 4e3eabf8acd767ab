//! TLS: mutual authentication between peers, and the certificate loading
//! the application reuses for its own client API.
//!
//! **Why rustls, with ring.** rustls is memory-safe, has no OpenSSL to
//! link or patch, and its verification (rustls-webpki) is strict by
//! default: no expired, wrongly used or unchained certificates. Of its two
//! crypto providers, ring builds with a C compiler alone, whereas aws-lc-rs
//! needs cmake (and nasm on some targets), which a plain build machine
//! lacks. The provider is passed explicitly to every configuration
//! ([`provider`]), never installed process-wide, so nothing depends on
//! which provider another crate in the binary enabled.
//!
//! **What a peer must show.** With TLS on, both ends of every peer
//! connection present a certificate and verify the other's:
//!
//! - it must chain to the cluster CA (`--tls-ca`): a certificate from
//!   another CA, an expired one, or none at all is refused during the
//!   handshake;
//! - it must carry the DNS name [`peer_name`]`(id)` (`raft-node-<id>`) of
//!   the node it speaks for. The dialer checks that its peer's certificate
//!   names the node it meant to reach; the listener checks that the
//!   certificate of a connecting node names the node its handshake frame
//!   claims to be. So a node cannot pass itself off as another, and a
//!   client certificate of the same CA (which names no node) is refused
//!   on the peer port.
//!
//! The dialed address (IP or host name) is deliberately *not* the name
//! checked: addresses are looked up again at every reconnect and change
//! when a container comes back with a new IP, while a node's id does not.
//! The name is an identity, never resolved.
//!
//! **Reloading.** [`TlsCerts`] holds the current certificate, key and CA
//! behind a lock; the rustls configurations built from it
//! ([`TlsCerts::server_config`], [`TlsCerts::client_config`]) resolve
//! certificates and verify peers through it at every handshake, so a
//! [`TlsCerts::reload`] (the server calls it on SIGHUP) takes effect for
//! every new connection, without rebuilding anything, while connections
//! already open keep the session they negotiated. A reload that fails
//! (unreadable file, key not matching the certificate, certificate not
//! from the CA or not naming this node) changes nothing.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use raft_core::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Largest certificate, key or CA file read, in bytes: a chain of a few
/// certificates is a few KiB, so this only stops a wrong path (a log, a
/// device) from being read into memory.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// The DNS name a node's certificate must carry to speak for node `id` on
/// the peer transport (see the module docs).
pub fn peer_name(id: NodeId) -> String {
    format!("raft-node-{id}")
}

/// The crypto provider of every configuration built here: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a node's certificate, private key and CA are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, this node's certificate first.
    pub cert: PathBuf,
    /// The private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) that peers' and clients' certificates must
    /// chain to.
    pub ca: PathBuf,
}

/// Why certificates could not be loaded (at start or on reload). Every
/// variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the {what} {}: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file is larger than [`PEM_FILE_BYTES_MAX`].
    #[error("the {what} {} is {bytes} bytes; a PEM file is at most {PEM_FILE_BYTES_MAX}", .path.display())]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        bytes: u64,
    },
    /// The file holds no PEM object of the expected kind, or a damaged one.
    #[error("the {what} {}: {detail}", .path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    /// The private key is not the certificate's.
    #[error("the key {} does not belong to the certificate {}: {detail}", .key.display(), .cert.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    /// The certificate does not verify against the CA (another CA,
    /// expired, not yet valid, or not usable for both server and client
    /// authentication).
    #[error("the certificate {} does not verify against the CA {}: {detail}", .cert.display(), .ca.display())]
    NotFromCa {
        cert: PathBuf,
        ca: PathBuf,
        detail: String,
    },
    /// The certificate does not carry the node's name, so peers would
    /// refuse it.
    #[error("the certificate {} does not name {name} (a DNS name peers check)", .path.display())]
    Identity { path: PathBuf, name: String },
    /// rustls refused to build a configuration from the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Reads a PEM file of at most [`PEM_FILE_BYTES_MAX`] bytes.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_path_buf(),
            bytes: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        // The file grew between the two calls.
        return Err(TlsError::TooLarge {
            what,
            path: path.to_path_buf(),
            bytes: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Every certificate in a PEM file, in order; at least one.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            detail: "no CERTIFICATE in it".into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem("private key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY in it (PKCS#8, RSA or EC)".into()
            }
            other => other.to_string(),
        },
    })
}

/// The trust anchors of a CA file: every certificate in it.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA certificate", path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            what: "CA certificate",
            path: path.to_path_buf(),
            detail: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

/// A certificate and key from files, checked to belong together.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs("certificate", cert)?;
    let der = load_key(key)?;
    let mismatch = |detail: String| TlsError::KeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        detail,
    };
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| mismatch(format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive is let through:
        // the handshake then fails with the peer's error instead.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(mismatch(e.to_string())),
    }
    Ok(Arc::new(certified))
}

/// A static client configuration (no reloading): trusts the CAs in `ca`,
/// and presents `cert_key` when a server asks for a client certificate.
/// For command-line clients; servers verify names as usual (the host of
/// the URL).
pub fn client_config_from_files(
    ca: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match cert_key {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certified = load_certified_key(cert, key, &provider)?;
            Ok(builder.with_client_cert_resolver(Arc::new(Fixed(certified))))
        }
    }
}

/// One certificate for every handshake.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What one load of the files produced.
struct Material {
    key: Arc<CertifiedKey>,
    /// Checks server certificates (the name asked for, the CA, the
    /// serverAuth usage).
    server_verifier: Arc<WebPkiServerVerifier>,
    /// Checks client certificates (the CA, the clientAuth usage); a
    /// certificate is mandatory.
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// A node's certificate, key and CA, reloadable (see the module docs).
pub struct TlsCerts {
    files: TlsFiles,
    /// The name the certificate must carry (`raft-node-<id>` for a node).
    identity: Option<String>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
}

impl fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCerts")
            .field("files", &self.files)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl TlsCerts {
    /// Loads and checks the files: the key belongs to the certificate, the
    /// certificate chains to the CA and is valid now for both server and
    /// client authentication, and, if `identity` is given, it carries that
    /// DNS name.
    pub fn load(files: TlsFiles, identity: Option<String>) -> Result<Arc<TlsCerts>, TlsError> {
        let provider = provider();
        let material = load_material(&files, identity.as_deref(), &provider)?;
        Ok(Arc::new(TlsCerts {
            files,
            identity,
            provider,
            current: RwLock::new(Arc::new(material)),
        }))
    }

    /// Loads the files again and, if every check of [`load`](Self::load)
    /// passes, uses them for every new connection. On error nothing
    /// changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = load_material(&self.files, self.identity.as_deref(), &self.provider)?;
        // Only this assignment happens under the lock: poisoning cannot
        // leave it half-done.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
        Ok(())
    }

    /// The files the certificates are loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The name the certificate must carry, if any.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    fn current(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A server configuration presenting the current certificate. With
    /// `client_auth`, a client must present a certificate from the CA
    /// (the peer transport; the client API with `--tls-client-auth`).
    pub fn server_config(self: &Arc<Self>, client_auth: bool) -> Result<ServerConfig, TlsError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if client_auth {
            builder.with_client_cert_verifier(Arc::new(Live(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        Ok(builder.with_cert_resolver(Arc::new(Live(self.clone()))))
    }

    /// A client configuration that verifies servers against the current CA
    /// and presents the current certificate when asked for one.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, TlsError> {
        Ok(ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            // Delegates to rustls' own WebPKI verifier of the current CA.
            .with_custom_certificate_verifier(Arc::new(Live(self.clone())))
            .with_client_cert_resolver(Arc::new(Live(self.clone()))))
    }
}

fn load_material(
    files: &TlsFiles,
    identity: Option<&str>,
    provider: &Arc<CryptoProvider>,
) -> Result<Material, TlsError> {
    let key = load_certified_key(&files.cert, &files.key, provider)?;
    let roots = Arc::new(load_roots(&files.ca)?);
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The certificate must be one the peers will accept: refusing it here
    // gives one clear startup (or reload) error instead of a cluster whose
    // connections all fail.
    let chain = &key.cert;
    let (end_entity, intermediates) = chain.split_first().ok_or_else(|| TlsError::Pem {
        what: "certificate",
        path: files.cert.clone(),
        detail: "no CERTIFICATE in it".into(),
    })?;
    let now = UnixTime::now();
    let not_from_ca = |e: rustls::Error| TlsError::NotFromCa {
        cert: files.cert.clone(),
        ca: files.ca.clone(),
        detail: e.to_string(),
    };
    client_verifier
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(not_from_ca)?;
    if let Some(name) = identity {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| TlsError::Config(format!("`{name}` is not a DNS name: {e}")))?;
        server_verifier
            .verify_server_cert(end_entity, intermediates, &server_name, &[], now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                ) => TlsError::Identity {
                    path: files.cert.clone(),
                    name: name.to_string(),
                },
                other => not_from_ca(other),
            })?;
    }
    Ok(Material {
        key,
        server_verifier,
        client_verifier,
    })
}

/// The rustls hooks that read [`TlsCerts`] at every handshake.
#[derive(Debug)]
struct Live(Arc<TlsCerts>);

impl ResolvesServerCert for Live {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

impl ResolvesClientCert for Live {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for Live {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}

impl ClientCertVerifier for Live {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the CA can change on reload and the hints would have to be
    /// borrowed from `self`. An empty list tells clients to send whatever
    /// certificate they have, which is what ours do.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().client_verifier.supported_verify_schemes()
    }
}

/// Mutual TLS of the peer transport (see the module docs): the acceptor
/// requires a client certificate from the CA, the connector presents this
/// node's certificate and checks the dialed node's name.
#[derive(Clone)]
pub struct PeerTls {
    certs: Arc<TlsCerts>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// The peer transport's TLS over `certs`, whose identity must be the
    /// node's [`peer_name`] (checked by [`crate::TcpConfig::validate`]).
    pub fn new(certs: Arc<TlsCerts>) -> Result<PeerTls, TlsError> {
        let server = certs.server_config(true)?;
        let client = certs.client_config()?;
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            certs,
        })
    }

    /// The certificates (to reload them).
    pub fn certs(&self) -> &Arc<TlsCerts> {
        &self.certs
    }
}

/// Whether `cert` carries [`peer_name`]`(id)`.
pub(crate) fn names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(name) = ServerName::try_from(peer_name(id)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|ee| ee.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

/// The rustls error inside an I/O error from a TLS stream, if any, also
/// when I/O errors wrap each other (as HTTP clients' connectors do).
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    let mut inner = e.get_ref()?;
    loop {
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        inner = inner.downcast_ref::<io::Error>()?.get_ref()?;
    }
}

/// A short, stable reason for a failed handshake, for metrics labels:
/// `untrusted_certificate` (the other side's certificate failed
/// verification here), `no_certificate` (it sent none), `refused_by_peer`
/// (the other side sent an alert: it refused ours), `not_tls` (it does not
/// speak TLS), `timeout`, or `handshake_failed`.
pub fn handshake_reason(e: &io::Error) -> &'static str {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(_)) => "untrusted_certificate",
        Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
        Some(rustls::Error::AlertReceived(_)) => "refused_by_peer",
        Some(rustls::Error::InvalidMessage(_)) => "not_tls",
        _ if e.kind() == io::ErrorKind::TimedOut => "timeout",
        _ => "handshake_failed",
    }
}

/// The first byte of every TLS connection (a handshake record).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;
