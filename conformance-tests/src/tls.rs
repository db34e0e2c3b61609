//! The suite's own TLS for QUIC, written from SPEC section 2.1 on top of rustls (ring provider)
//! and sharing no code with any node: a self-signed certificate carrying the suite's Ed25519
//! key, and a server verifier that accepts the target only if it presents the pinned key under
//! the agency id used as server name. TLS 1.3 only, Ed25519 handshake signatures only.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use throughgate_protocol::keys::{PublicKey, SecretKey};

/// Idle timeout of the suite's connections (SPEC 2.1 reference value); keep-alives at a third.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the suite's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate for a key could not be made.
    #[error("could not make a certificate for the suite's key: {0}")]
    Certificate(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// A key with its self-signed certificate (SPEC 2.1: only the Ed25519 key in it counts).
#[derive(Debug)]
pub struct CertifiedKey {
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl CertifiedKey {
    /// A self-signed certificate carrying `key`, naming `name` in its subject alternative name.
    pub fn new(key: &SecretKey, name: &str) -> Result<CertifiedKey, TlsError> {
        let der = key
            .signing_key()
            .to_pkcs8_der()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let key_der = der.as_bytes().to_vec();
        let pkcs8 = PrivatePkcs8KeyDer::from(key_der.clone());
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let cert = params
            .self_signed(&pair)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(CertifiedKey {
            cert: cert.der().clone(),
            key_der,
        })
    }

    /// The certificate chain to present (the one self-signed certificate).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The Ed25519 key an X.509 certificate's SubjectPublicKeyInfo carries (OID 1.3.101.112), if
/// it carries one.
pub fn ed25519_key_of(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = parsed.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return None;
    }
    PublicKey::from_slice(&spki.subject_public_key.data).ok()
}

/// The Ed25519 key the other end of an established connection presented.
pub fn peer_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(ed25519_key_of)
}

/// The crypto provider the suite uses: rustls with ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a server only if it is named `agency` and presents `key` (SPEC 2.1: the target's id
/// as server name, its manifest node key pinned), and only Ed25519 TLS 1.3 signatures.
#[derive(Debug)]
pub struct PinnedTarget {
    agency: String,
    key: PublicKey,
    provider: Arc<CryptoProvider>,
}

impl PinnedTarget {
    /// A verifier pinning `key` for the server named `agency`.
    pub fn new(agency: &str, key: PublicKey) -> PinnedTarget {
        PinnedTarget {
            agency: agency.to_owned(),
            key,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedTarget {
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
        if server_name.to_str() == self.agency && key == self.key {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
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
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// QUIC transport settings of the suite's connections: no streams opened by the target
/// (requests are always the suite's), the reference idle timeout and keep-alives.
pub fn transport() -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    let idle =
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(|e| TlsError::Config(e.to_string()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(IDLE_TIMEOUT / 3));
    Ok(Arc::new(t))
}

/// A QUIC client configuration for a TLS client configuration whose ALPN is already set.
pub fn quic_client(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport()?);
    Ok(cfg)
}

/// A client configuration presenting `identity`, offering only `alpn`, and accepting the server
/// only as `verifier` says. TLS 1.3 only.
pub fn client_config(
    identity: &CertifiedKey,
    verifier: Arc<dyn ServerCertVerifier>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain(), identity.private_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    quic_client(tls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::SocketAddr;

    fn check(v: &PinnedTarget, cert: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(&cert.cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn certificate_carries_the_key() {
        let k = SecretKey::generate();
        let c = CertifiedKey::new(&k, "tg-conformance").unwrap();
        assert_eq!(ed25519_key_of(&c.cert), Some(k.public()));
        assert_eq!(ed25519_key_of(&CertificateDer::from(vec![0u8; 10])), None);
    }

    #[test]
    fn verifier_accepts_only_the_pinned_key_under_the_target_name() {
        let pinned = SecretKey::generate();
        let v = PinnedTarget::new("hmp-leeds", pinned.public());
        let good = CertifiedKey::new(&pinned, "hmp-leeds").unwrap();
        assert!(check(&v, &good, "hmp-leeds").is_ok());
        let other = CertifiedKey::new(&SecretKey::generate(), "hmp-leeds").unwrap();
        assert!(matches!(
            check(&v, &other, "hmp-leeds"),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
            ))
        ));
        assert!(
            check(&v, &good, "hmp-york").is_err(),
            "the pinned key under another server name is refused"
        );
        // A certificate without an Ed25519 key (ECDSA P-256) is refused as badly encoded.
        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["hmp-leeds".to_owned()])
            .unwrap()
            .self_signed(&ecdsa)
            .unwrap();
        let name = ServerName::try_from("hmp-leeds".to_owned()).unwrap();
        assert!(matches!(
            v.verify_server_cert(cert.der(), &[], &name, &[], UnixTime::now()),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding
            ))
        ));
    }

    /// A loopback QUIC server presenting `server_key`, accepting any client certificate.
    fn server(server_key: &SecretKey) -> quinn::Endpoint {
        let id = CertifiedKey::new(server_key, "hmp-leeds").unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(id.chain(), id.private_key())
            .unwrap();
        tls.alpn_protocols = vec![throughgate_protocol::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
        quinn::Endpoint::server(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
    }

    async fn connect(server: &quinn::Endpoint, pinned: PublicKey) -> Result<PublicKey, String> {
        let me = CertifiedKey::new(&SecretKey::generate(), "tg-conformance").unwrap();
        let cfg = client_config(
            &me,
            Arc::new(PinnedTarget::new("hmp-leeds", pinned)),
            throughgate_protocol::ALPN,
        )
        .unwrap();
        let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let accept = server.accept();
        let addr = server.local_addr().unwrap();
        let dial = async {
            let conn = client
                .connect_with(cfg, addr, "hmp-leeds")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            peer_key(&conn).ok_or_else(|| "no peer key".to_owned())
        };
        let serve = async {
            if let Some(incoming) = accept.await {
                // The handshake fails on the server too when the client refuses it.
                let _ = incoming.await;
            }
        };
        let (out, ()) = tokio::join!(dial, serve);
        client.close(0u32.into(), b"done");
        out
    }

    #[tokio::test]
    async fn a_server_presenting_another_key_is_refused() {
        let pinned = SecretKey::generate();
        let impostor = SecretKey::generate();
        let bad = server(&impostor);
        let err = connect(&bad, pinned.public()).await.unwrap_err();
        assert!(
            err.to_lowercase().contains("certificate") || err.contains("0x12"),
            "refused at the handshake for its certificate: {err}"
        );
        let good = server(&pinned);
        assert_eq!(
            connect(&good, pinned.public()).await.unwrap(),
            pinned.public()
        );
    }
}
