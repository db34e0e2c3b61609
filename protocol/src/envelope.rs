//! Signed envelopes: the one container every message travels in.
//!
//! An envelope holds the message kind, the exact CBOR bytes of the body, and one or more
//! Ed25519 signatures. Each signature covers a domain-separated string
//!
//! ```text
//! "throughgate" 0x00 "2" 0x00 kind 0x00 role 0x00 body
//! ```
//!
//! so a signature made for one message kind or signer role can never be replayed as another,
//! nor as a signature in some other protocol. Verification always runs over the body bytes that
//! arrived; bodies are never re-encoded to check a signature.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cbor::{self, DecodeError};
use crate::keys::{sig_bytes, PublicKey, SecretKey};
use crate::sigcache::SigCache;

/// The most signatures an envelope may carry.
pub const MAX_SIGNATURES: usize = 16;

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What an envelope's body is. Carried as text on the wire and part of every signature's
        /// domain.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageKind {
            $($(#[$doc])* $variant,)*
        }

        impl MessageKind {
            /// Every kind.
            pub const ALL: &'static [MessageKind] = &[$(MessageKind::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(MessageKind::$variant => $name,)*
                }
            }

            /// Looks a wire name up.
            pub fn from_name(s: &str) -> Option<MessageKind> {
                match s {
                    $($name => Some(MessageKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// A caseworker's query to a holder, signed by the caseworker and the requesting node.
    Query => "query",
    /// A holder's answer to a query, signed by the holder node.
    Response => "response",
    /// A consent artefact, signed by the recording caseworker and their node.
    Consent => "consent",
    /// Delivery of a consent artefact to one holder or grantee, with that holder's identifier.
    ConsentGrant => "consent_grant",
    /// Withdrawal of a consent, signed by the recording caseworker and their node.
    ConsentRevoke => "consent_revoke",
    /// A signed acknowledgement of a grant or revocation.
    Ack => "ack",
    /// A protocol error answer.
    Error => "error",
    /// A staff credential, signed by the issuing agency node.
    Credential => "credential",
    /// The federation manifest, signed by governance keys.
    Manifest => "manifest",
    /// A request from a member of staff's CLI to their home node.
    ClientRequest => "client_request",
    /// The home node's answer to a client request.
    ClientResponse => "client_response",
    /// A checkpoint offered to a witness.
    WitnessRequest => "witness_request",
    /// A witness's cosignature or refusal.
    WitnessResponse => "witness_response",
    /// A DPO's federated audit request.
    AuditQuery => "audit_query",
    /// The entries a node's log holds about a passport.
    AuditAnswer => "audit_answer",
    /// An exchange of trusted manifests between nodes.
    ManifestSync => "manifest_sync",
    /// Withdrawal of a staff credential, announced to every member.
    CredentialRevoke => "credential_revoke",
    /// Acknowledgement of a credential revocation.
    CredentialAck => "credential_ack",
    /// The home node's signed account of one passport assembly, carried in bundles.
    Assembly => "assembly",
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MessageKind::from_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown message kind {:?}",
                s.chars().take(40).collect::<String>()
            ))
        })
    }
}

/// In what capacity a key signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignerRole {
    /// An agency node's key.
    Node,
    /// A member of staff's personal key (caseworker, DPO, operator).
    Person,
    /// A federation governance key.
    Governance,
}

impl SignerRole {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignerRole::Node => "node",
            SignerRole::Person => "person",
            SignerRole::Governance => "governance",
        }
    }
}

impl fmt::Display for SignerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signature on an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The capacity the key signed in.
    pub role: SignerRole,
    /// The signing key.
    pub key: PublicKey,
    /// The Ed25519 signature over the domain-separated signing input.
    #[serde(with = "sig_bytes")]
    pub sig: [u8; 64],
}

/// A signed message: its kind, its exact body bytes, and its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The message kind.
    pub kind: MessageKind,
    /// The CBOR-encoded body, exactly as signed.
    #[serde(with = "crate::keys::vec_bytes")]
    pub body: Vec<u8>,
    /// The signatures, in the order they were added; at most [`MAX_SIGNATURES`], wherever the
    /// envelope is decoded (on its own, or nested in another message or a bundle).
    #[serde(deserialize_with = "bounded_sigs")]
    pub sigs: Vec<Signature>,
}

/// Decodes a signature list, refusing more than [`MAX_SIGNATURES`] before reading them all.
fn bounded_sigs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Signature>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Signature>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {MAX_SIGNATURES} signatures")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<Signature>()? {
                if out.len() == MAX_SIGNATURES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_SIGNATURES} signatures"
                    )));
                }
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// Why an envelope's signatures or kind are not acceptable.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The envelope holds a different kind of message than expected.
    #[error("expected a {expected} message, got {got}")]
    WrongKind {
        expected: MessageKind,
        got: MessageKind,
    },
    /// No signature by the required key in the required role.
    #[error("no {role} signature by key {key_fingerprint}")]
    MissingSignature {
        role: SignerRole,
        /// Fingerprint of the key required.
        key_fingerprint: String,
    },
    /// A signature is present but does not verify over the body.
    #[error("the {role} signature by key {key_fingerprint} does not verify")]
    BadSignature {
        /// The role of the failing signature.
        role: SignerRole,
        /// Fingerprint of the signing key.
        key_fingerprint: String,
    },
    /// No signature in this role at all.
    #[error("no {0} signature")]
    NoSignatureInRole(SignerRole),
    /// Signed in this role, but only by keys other than those expected.
    #[error(
        "the {role} signature is by key {key_fingerprint}, which is not one of the keys expected"
    )]
    UnexpectedSigner {
        role: SignerRole,
        /// Fingerprint of the key that signed.
        key_fingerprint: String,
    },
    /// More signatures than allowed.
    #[error("{0} signatures, over the limit of {MAX_SIGNATURES}")]
    TooManySignatures(usize),
    /// Fewer valid distinct governance signatures than the threshold.
    #[error("{valid} valid signatures from distinct listed keys; {threshold} required")]
    BelowThreshold { valid: usize, threshold: usize },
}

/// Builds the exact bytes a signature covers.
pub fn signing_input(kind: MessageKind, role: SignerRole, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 48);
    v.extend_from_slice(crate::PROTOCOL_NAME.as_bytes());
    v.push(0);
    v.extend_from_slice(crate::PROTOCOL_VERSION.to_string().as_bytes());
    v.push(0);
    v.extend_from_slice(kind.as_str().as_bytes());
    v.push(0);
    v.extend_from_slice(role.as_str().as_bytes());
    v.push(0);
    v.extend_from_slice(body);
    v
}

/// A message body type: fixes its kind and the largest body accepted.
pub trait Message: Serialize + serde::de::DeserializeOwned {
    /// The envelope kind this body travels under.
    const KIND: MessageKind;
    /// The largest encoded body accepted for this message.
    const MAX_BODY: usize;
}

impl Envelope {
    /// Encodes `body` and signs it with each `(role, key)` in turn.
    pub fn seal<M: Message>(body: &M, signers: &[(SignerRole, &SecretKey)]) -> Envelope {
        let bytes = cbor::to_vec(body);
        Envelope::seal_bytes(M::KIND, bytes, signers)
    }

    /// Signs already-encoded body bytes.
    pub fn seal_bytes(
        kind: MessageKind,
        body: Vec<u8>,
        signers: &[(SignerRole, &SecretKey)],
    ) -> Envelope {
        let mut env = Envelope {
            kind,
            body,
            sigs: Vec::with_capacity(signers.len()),
        };
        for (role, key) in signers {
            env.add_signature(*role, key);
        }
        env
    }

    /// Adds one more signature over the same body bytes (e.g. a node countersigning a query).
    pub fn add_signature(&mut self, role: SignerRole, key: &SecretKey) {
        let sig = key.sign(&signing_input(self.kind, role, &self.body));
        self.push_signature(role, key, sig);
    }

    /// [`Envelope::add_signature`], remembering the new signature in `cache` as verified (see
    /// [`SigCache::sign`]): the signer then need not verify it when the envelope comes back.
    pub fn add_signature_remembered(
        &mut self,
        role: SignerRole,
        key: &SecretKey,
        cache: &SigCache,
    ) {
        let sig = cache.sign(key, &signing_input(self.kind, role, &self.body));
        self.push_signature(role, key, sig);
    }

    fn push_signature(&mut self, role: SignerRole, key: &SecretKey, sig: [u8; 64]) {
        self.sigs.push(Signature {
            role,
            key: key.public(),
            sig,
        });
    }

    /// Encodes the whole envelope as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// Decodes an envelope, refusing more than `max` bytes and more than [`MAX_SIGNATURES`].
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Envelope, DecodeError> {
        let env: Envelope = cbor::from_slice("envelope", bytes, max)?;
        if env.sigs.len() > MAX_SIGNATURES {
            return Err(DecodeError::Invalid {
                what: "envelope",
                detail: format!(
                    "{} signatures, over the limit of {MAX_SIGNATURES}",
                    env.sigs.len()
                ),
            });
        }
        Ok(env)
    }

    /// Checks the kind and decodes the body as `M`, within `M::MAX_BODY`.
    pub fn open<M: Message>(&self) -> Result<M, OpenError> {
        if self.kind != M::KIND {
            return Err(OpenError::Verify(VerifyError::WrongKind {
                expected: M::KIND,
                got: self.kind,
            }));
        }
        cbor::from_slice(M::KIND.as_str(), &self.body, M::MAX_BODY).map_err(OpenError::Decode)
    }

    /// Verifies that `key` signed this envelope in `role`.
    pub fn verify_by(&self, role: SignerRole, key: &PublicKey) -> Result<(), VerifyError> {
        self.verify_by_cached(role, key, None)
    }

    /// [`Envelope::verify_by`], remembering successes in `cache` (for envelopes seen again and
    /// again, such as credentials).
    pub fn verify_by_cached(
        &self,
        role: SignerRole,
        key: &PublicKey,
        cache: Option<&SigCache>,
    ) -> Result<(), VerifyError> {
        let mut found = false;
        for sig in self.sigs.iter().filter(|s| s.role == role && &s.key == key) {
            found = true;
            let input = signing_input(self.kind, role, &self.body);
            if crate::sigcache::verify_strict(cache, key, &input, &sig.sig) {
                return Ok(());
            }
        }
        if found {
            Err(VerifyError::BadSignature {
                role,
                key_fingerprint: key.fingerprint(),
            })
        } else {
            Err(VerifyError::MissingSignature {
                role,
                key_fingerprint: key.fingerprint(),
            })
        }
    }

    /// Verifies that one of `keys` signed in `role`; returns the key that did.
    pub fn verify_by_any(
        &self,
        role: SignerRole,
        keys: &[PublicKey],
    ) -> Result<PublicKey, VerifyError> {
        self.verify_by_any_cached(role, keys, None)
    }

    /// [`Envelope::verify_by_any`], remembering successes in `cache`.
    pub fn verify_by_any_cached(
        &self,
        role: SignerRole,
        keys: &[PublicKey],
        cache: Option<&SigCache>,
    ) -> Result<PublicKey, VerifyError> {
        let mut last = VerifyError::NoSignatureInRole(role);
        for s in self.sigs.iter().filter(|s| s.role == role) {
            if !keys.contains(&s.key) {
                if matches!(last, VerifyError::NoSignatureInRole(_)) {
                    last = VerifyError::UnexpectedSigner {
                        role,
                        key_fingerprint: s.key.fingerprint(),
                    };
                }
                continue;
            }
            match self.verify_by_cached(role, &s.key, cache) {
                Ok(()) => return Ok(s.key),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Counts valid signatures in `role` by distinct keys from `keys`, and requires `threshold`.
    pub fn verify_threshold(
        &self,
        role: SignerRole,
        keys: &[PublicKey],
        threshold: usize,
    ) -> Result<usize, VerifyError> {
        if self.sigs.len() > MAX_SIGNATURES {
            return Err(VerifyError::TooManySignatures(self.sigs.len()));
        }
        let mut counted: Vec<PublicKey> = Vec::new();
        for s in self.sigs.iter().filter(|s| s.role == role) {
            if keys.contains(&s.key)
                && !counted.contains(&s.key)
                && s.key
                    .verify_strict(&signing_input(self.kind, role, &self.body), &s.sig)
            {
                counted.push(s.key);
            }
        }
        if threshold == 0 || counted.len() < threshold {
            return Err(VerifyError::BelowThreshold {
                valid: counted.len(),
                threshold,
            });
        }
        Ok(counted.len())
    }

    /// The keys that signed in `role` (unverified; use the `verify_*` methods to check).
    pub fn signers(&self, role: SignerRole) -> impl Iterator<Item = &PublicKey> {
        self.sigs
            .iter()
            .filter(move |s| s.role == role)
            .map(|s| &s.key)
    }
}

/// Why an envelope could not be opened as a given message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Wrong kind or bad signature.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The body does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ErrorBody;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    #[test]
    fn signatures_are_domain_separated_by_kind_and_role() {
        let k = key(1);
        let env = Envelope::seal_bytes(
            MessageKind::Query,
            b"body".to_vec(),
            &[(SignerRole::Person, &k)],
        );
        assert!(env.verify_by(SignerRole::Person, &k.public()).is_ok());
        // Same signature relabelled as a node signature: refused.
        let mut relabelled = env.clone();
        if let Some(s) = relabelled.sigs.first_mut() {
            s.role = SignerRole::Node;
        }
        assert!(matches!(
            relabelled.verify_by(SignerRole::Node, &k.public()),
            Err(VerifyError::BadSignature { .. })
        ));
        // Same signature moved onto another kind: refused.
        let mut other_kind = env.clone();
        other_kind.kind = MessageKind::Response;
        assert!(other_kind
            .verify_by(SignerRole::Person, &k.public())
            .is_err());
        // One flipped body byte: refused.
        let mut flipped = env;
        if let Some(b) = flipped.body.first_mut() {
            *b ^= 1;
        }
        assert!(flipped.verify_by(SignerRole::Person, &k.public()).is_err());
    }

    #[test]
    fn a_remembered_signature_is_the_one_add_signature_makes_and_a_cache_hit() {
        let k = key(2);
        let cache = SigCache::new(8);
        let mut remembered = Envelope::seal_bytes(MessageKind::Query, b"body".to_vec(), &[]);
        remembered.add_signature_remembered(SignerRole::Person, &k, &cache);
        let plain = Envelope::seal_bytes(
            MessageKind::Query,
            b"body".to_vec(),
            &[(SignerRole::Person, &k)],
        );
        assert_eq!(remembered, plain, "same bytes as an ordinary signature");
        remembered
            .verify_by_cached(SignerRole::Person, &k.public(), Some(&cache))
            .unwrap();
        assert_eq!(
            cache.len(),
            1,
            "verified from the cache, not remembered twice"
        );
        let other_role = remembered.verify_by_cached(SignerRole::Node, &k.public(), Some(&cache));
        assert!(other_role.is_err(), "the role is still checked");
    }

    #[test]
    fn threshold_counts_distinct_listed_keys_only() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut env = Envelope::seal_bytes(
            MessageKind::Manifest,
            b"m".to_vec(),
            &[(SignerRole::Governance, &a)],
        );
        env.add_signature(SignerRole::Governance, &a);
        env.add_signature(SignerRole::Governance, &c);
        let listed = [a.public(), b.public()];
        assert!(env
            .verify_threshold(SignerRole::Governance, &listed, 2)
            .is_err());
        env.add_signature(SignerRole::Governance, &b);
        assert_eq!(
            env.verify_threshold(SignerRole::Governance, &listed, 2),
            Ok(2)
        );
        assert!(env
            .verify_threshold(SignerRole::Governance, &listed, 0)
            .is_err());
    }

    #[test]
    fn open_checks_kind_and_round_trips() {
        let k = key(4);
        let body = ErrorBody {
            code: crate::messages::ErrorCode::Malformed,
            message: "x".into(),
        };
        let env = Envelope::seal(&body, &[(SignerRole::Node, &k)]);
        let decoded = Envelope::from_bytes(&env.to_bytes(), 1 << 20).unwrap();
        assert_eq!(decoded, env);
        assert_eq!(decoded.open::<ErrorBody>().unwrap(), body);
        let mut wrong = decoded;
        wrong.kind = MessageKind::Ack;
        assert!(matches!(
            wrong.open::<ErrorBody>(),
            Err(OpenError::Verify(VerifyError::WrongKind { .. }))
        ));
    }

    #[test]
    fn unknown_kind_is_a_decode_error() {
        #[derive(Serialize)]
        struct Raw<'a> {
            kind: &'a str,
            #[serde(with = "serde_bytes")]
            body: &'a [u8],
            sigs: Vec<Signature>,
        }
        let raw = cbor::to_vec(&Raw {
            kind: "gossip",
            body: b"",
            sigs: vec![],
        });
        let err = Envelope::from_bytes(&raw, 1024).unwrap_err();
        assert!(err.to_string().contains("unknown message kind"), "{err}");
    }
}
