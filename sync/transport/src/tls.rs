//! rustls and quinn configuration for mutual TLS between nodes: TLS 1.3 only, the `ring`
//! provider, ALPN `yiciban/1`, client certificates required and checked against the county CA
//! and its revocation list on both sides.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use thiserror::Error;

use crate::identity::{IdentityError, NodeIdentity, peer_identity};

/// Keep-alive on idle links: well under the idle timeout, so NAT bindings stay open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("QUIC crypto: {0}")]
    Quic(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
}

/// What a node needs to speak mutual TLS: the county CA, its own certificate and key, and the
/// current revocation list(s).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub crls_der: Vec<Vec<u8>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_cert_pem.as_bytes()) {
            roots.add(cert.map_err(|e| TlsError::Pem(e.to_string()))?)?;
        }
        Ok(Arc::new(roots))
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))
    }

    fn crls(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.crls_der
            .iter()
            .map(|d| CertificateRevocationListDer::from(d.clone()))
            .collect()
    }

    /// The rustls server side: client certificates required, checked against CA and CRLs.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .with_crls(self.crls())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain()?, self.key()?)?;
        config.alpn_protocols = vec![yiciban_sync::PROTOCOL.as_bytes().to_vec()];
        Ok(config)
    }

    /// The rustls client side: presents this node's certificate, checks the server's.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
            .with_crls(self.crls())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain()?, self.key()?)?;
        config.alpn_protocols = vec![yiciban_sync::PROTOCOL.as_bytes().to_vec()];
        Ok(config)
    }

    pub fn quinn_server(&self) -> Result<quinn::ServerConfig, TlsError> {
        self.quinn_server_observed(None)
    }

    /// [`TlsMaterial::quinn_server`] that tells `refused` about every client certificate it
    /// refuses (revoked, another CA, expired): the identity the certificate claims, if it
    /// carries one (unverified: for the operator's eyes only), and the reason.
    pub fn quinn_server_observed(
        &self,
        refused: Option<RefusalObserver>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let mut config = self.server_config()?;
        if let Some(observer) = refused {
            let inner = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
                .with_crls(self.crls())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            config = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_client_cert_verifier(Arc::new(ObservedVerifier { inner, observer }))
                .with_single_cert(self.chain()?, self.key()?)?;
            config.alpn_protocols = vec![yiciban_sync::PROTOCOL.as_bytes().to_vec()];
        }
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport()));
        Ok(server)
    }

    pub fn quinn_client(&self) -> Result<quinn::ClientConfig, TlsError> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(self.client_config()?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport()));
        Ok(client)
    }
}

/// Called with the identity a refused client certificate claims (not verified) and why.
pub type RefusalObserver = Arc<dyn Fn(Option<NodeIdentity>, String) + Send + Sync>;

/// The WebPKI client verifier, reporting each refusal to an observer.
struct ObservedVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    observer: RefusalObserver,
}

impl std::fmt::Debug for ObservedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedVerifier").finish_non_exhaustive()
    }
}

impl rustls::server::danger::ClientCertVerifier for ObservedVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &verdict {
            (self.observer)(peer_identity(end_entity).ok(), e.to_string());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // No path MTU probing: datagrams stay at QUIC's 1,200 bytes, which every path carries
    // (PPPoE, mobile, VPN). Probing sent 1,326-, 1,389-, 1,420- and 1,452-byte padded
    // datagrams each way on every connection, 11 KB of the 20 KB a small resync used at the
    // relay; the bigger datagrams save under 1% of headers, so they pay back only past
    // ~1.3 MB in one session, and villages reconnect often over metered links.
    t.mtu_discovery_config(None);
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// The verified identity of the peer on an established connection.
/// The leaf certificate (DER) a connection's peer presented, as the TLS layer verified it.
pub fn connection_cert(conn: &quinn::Connection) -> Result<Vec<u8>, TlsError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate)?;
    Ok(certs.first().ok_or(TlsError::NoPeerCertificate)?.to_vec())
}

pub fn connection_identity(conn: &quinn::Connection) -> Result<NodeIdentity, TlsError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate)?;
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    Ok(peer_identity(leaf)?)
}
