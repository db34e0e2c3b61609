//! TLS 1.3 over QUIC with Ed25519 node and staff keys pinned against the federation manifest.
//!
//! Each node (and each member of staff's CLI) presents a self-signed X.509 certificate that
//! carries its Ed25519 key. Chains and CAs play no part: the verifiers take the certificate's
//! public key and accept the peer only if that key is one the [`PeerPolicy`] allows (a node key
//! of the named agency in the manifest, or a registered staff key). The TLS handshake signature
//! proves the peer holds the key. Unknown keys are refused during the handshake. Any TLS stack
//! that can present and check a self-signed certificate interoperates.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use throughgate_protocol::keys::{PublicKey, SecretKey};

use crate::config::Limits;

/// A TLS setup failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate for our key could not be made.
    #[error("could not build this node's certificate: {0}")]
    Certificate(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Config(String),
}

/// Decides which peer keys are acceptable. Implemented by the node's trust state and by the
/// CLI's pin of its home node.
pub trait PeerPolicy: Send + Sync + fmt::Debug {
    /// Whether the server named `server_name` (an agency id) may present `key`.
    fn server_allowed(&self, server_name: &str, key: &PublicKey) -> bool;
    /// Whether a client presenting `key` may connect.
    fn client_allowed(&self, key: &PublicKey) -> bool;
}

/// A key with its self-signed certificate, ready for rustls.
#[derive(Debug)]
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TlsIdentity {
    /// Makes a self-signed certificate carrying `key`, naming `name` (an agency or person id).
    pub fn new(key: &SecretKey, name: &str) -> Result<TlsIdentity, TlsError> {
        let der = key
            .signing_key()
            .to_pkcs8_der()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let key_der = der.as_bytes().to_vec();
        let pkcs8 = PrivatePkcs8KeyDer::from(key_der.clone());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let cert = params
            .self_signed(&kp)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(TlsIdentity {
            cert: cert.der().clone(),
            key_der,
        })
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The Ed25519 public key a certificate carries, if it carries one.
pub fn ed25519_key_of(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = parsed.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return None;
    }
    PublicKey::from_slice(&spki.subject_public_key.data).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

#[derive(Debug)]
struct PinnedVerifier {
    policy: Arc<dyn PeerPolicy>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        if self.policy.server_allowed(&server_name.to_str(), &key) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        if self.policy.client_allowed(&key) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// QUIC transport settings. `streams` is the number of concurrent streams the other side may
/// open at first: a server starts every connection with the staff allowance and raises a peer
/// node's once its key is known (QUIC can raise a stream limit, never lower it). The receive
/// window bounds what QUIC itself buffers for a connection before the node reads it.
fn transport(limits: &Limits, streams: u32) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    let window = u64::try_from(limits.max_request_bytes_per_connection).unwrap_or(u64::MAX);
    let window = quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX);
    t.receive_window(window);
    if window.into_inner() < 1_250_000 {
        t.stream_receive_window(window);
    }
    let idle =
        quinn::IdleTimeout::try_from(std::time::Duration::from_millis(limits.idle_timeout_ms))
            .map_err(|e| TlsError::Config(e.to_string()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(std::time::Duration::from_millis(
        limits.idle_timeout_ms / 3,
    )));
    Ok(Arc::new(t))
}

/// The quinn server configuration: TLS 1.3 only, our ALPN, mandatory client certificates
/// checked by `policy`.
pub fn server_config(
    identity: &TlsIdentity,
    policy: Arc<dyn PeerPolicy>,
    limits: &Limits,
    migration: bool,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        policy,
        provider: provider.clone(),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain(), identity.private_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![throughgate_protocol::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(limits, limits.max_streams_per_staff_connection)?);
    // Connection attempts quinn itself queues before the node sees them, and the bytes they
    // may buffer: bounded like the handshakes the node lets run.
    cfg.max_incoming(usize::try_from(limits.max_handshakes.max(1)).unwrap_or(usize::MAX));
    cfg.incoming_buffer_size_total(16 * 1024 * 1024);
    cfg.migration(migration);
    Ok(cfg)
}

/// The quinn client configuration: TLS 1.3 only, our ALPN, our certificate, servers checked by
/// `policy` against the agency id used as server name.
pub fn client_config(
    identity: &TlsIdentity,
    policy: Arc<dyn PeerPolicy>,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with_alpn(identity, policy, limits, throughgate_protocol::ALPN)
}

/// As [`client_config`], with another ALPN (for conformance tests of ALPN refusal).
pub fn client_config_with_alpn(
    identity: &TlsIdentity,
    policy: Arc<dyn PeerPolicy>,
    limits: &Limits,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        policy,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain(), identity.private_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport(limits, limits.max_streams_per_connection)?);
    Ok(cfg)
}

/// A policy that accepts exactly one server key (a CLI pinning its home node) and no clients.
#[derive(Debug, Clone)]
pub struct PinnedServer {
    /// The home agency's id (the TLS server name).
    pub agency: String,
    /// The node keys accepted.
    pub keys: Vec<PublicKey>,
}

impl PeerPolicy for PinnedServer {
    fn server_allowed(&self, server_name: &str, key: &PublicKey) -> bool {
        server_name == self.agency && self.keys.contains(key)
    }

    fn client_allowed(&self, _key: &PublicKey) -> bool {
        false
    }
}

/// The Ed25519 key of the peer on an established connection.
pub fn peer_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(ed25519_key_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_key() {
        let k = SecretKey::generate();
        let id = TlsIdentity::new(&k, "hmp-leeds").unwrap();
        assert_eq!(ed25519_key_of(&id.cert), Some(k.public()));
        assert_eq!(ed25519_key_of(&CertificateDer::from(vec![0u8; 10])), None);
    }
}
