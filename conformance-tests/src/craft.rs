//! Building the messages the suite sends: valid queries, consents, grants and revocations as a
//! member agency and its caseworker would make them, and the deliberately broken variants the
//! cases need (wrong domains, malleated signatures, non-canonical encodings, raw CBOR).

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use throughgate_protocol::category::Category;
use throughgate_protocol::consent::{
    Collection, CollectionMethod, Consent, ConsentGrant, ConsentRevocation, HolderScope,
};
use throughgate_protocol::envelope::{signing_input, Envelope, MessageKind, SignerRole};
use throughgate_protocol::identifiers::{commitment, SubjectIdentifier, SALT_LEN};
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, QueryId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{HolderRequest, Query};

use crate::case::Ctx;
use crate::identity::Actor;
use crate::now;

/// 16 fresh random bytes.
pub fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// A fresh commitment salt.
pub fn salt() -> [u8; SALT_LEN] {
    let mut s = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// A valid query from `actor`'s caseworker to the target, issued now, living 60 seconds.
pub fn query(
    ctx: &Ctx,
    actor: &Actor,
    passport: PassportId,
    consent: Option<ConsentId>,
    categories: Vec<Category>,
) -> Query {
    let t = now();
    Query {
        query_id: QueryId::random(),
        passport_id: passport,
        consent_id: consent,
        purpose: ctx.purpose,
        requests: vec![HolderRequest {
            holder: ctx.target().agency.clone(),
            categories,
        }],
        requester: actor.agency().clone(),
        caseworker: actor.cw.person.clone(),
        credential: actor.cw.credential.clone(),
        issued_at: t,
        expires_at: t.plus_secs(60),
        nonce: nonce(),
    }
}

/// A query without consent for a fresh passport, asking the target's categories.
pub fn unconsented_query(ctx: &Ctx, actor: &Actor) -> Query {
    query(
        ctx,
        actor,
        PassportId::random(),
        None,
        ctx.categories.clone(),
    )
}

/// Signs a query as `actor`'s caseworker (role person), then countersigns as its node.
pub fn seal_query(actor: &Actor, q: &Query) -> Envelope {
    Envelope::seal(
        q,
        &[
            (SignerRole::Person, &actor.cw.key),
            (SignerRole::Node, actor.node_key()),
        ],
    )
}

/// Signs `body` bytes of `kind` with `key`, but over the signing input of `sign_kind` and
/// `sign_role`, and labels the signature `label_role`: a signature made for another domain.
pub fn foreign_signature(
    env: &mut Envelope,
    key: &SecretKey,
    sign_kind: MessageKind,
    sign_role: SignerRole,
    label_role: SignerRole,
) {
    let sig = key.sign(&signing_input(sign_kind, sign_role, &env.body));
    env.sigs.push(throughgate_protocol::envelope::Signature {
        role: label_role,
        key: key.public(),
        sig,
    });
}

/// The Ed25519 group order L, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// Malleates a signature: replaces its scalar S by S + L, which a lax verifier accepts and a
/// strict one refuses.
pub fn malleate(sig: &mut [u8; 64]) {
    let mut carry = 0u16;
    for (i, l) in ED25519_L.iter().enumerate() {
        if let Some(b) = sig.get_mut(32 + i) {
            let sum = u16::from(*b) + u16::from(*l) + carry;
            *b = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
    }
}

/// Re-encodes a CBOR map whose header is a definite-length map of fewer than 24 entries as an
/// indefinite-length map: the same data in an encoding receivers must refuse (SPEC section 4).
pub fn indefinite_map(body: &[u8]) -> Option<Vec<u8>> {
    let (&first, rest) = body.split_first()?;
    if !(0xa0..=0xb7).contains(&first) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0xbf);
    out.extend_from_slice(rest);
    out.push(0xff);
    Some(out)
}

/// Re-encodes a CBOR map with its keys in reverse order: the same data in a different (valid,
/// non-canonical) encoding that receivers must accept (SPEC section 4: keys in any order).
pub fn reordered_map(body: &[u8]) -> Option<Vec<u8>> {
    edit_map(body, |entries| entries.reverse())
}

/// A signature with arbitrary field values (any role text, any key bytes).
#[derive(Debug, Clone, Serialize)]
pub struct RawSignature {
    /// The role, as text.
    pub role: String,
    /// The key bytes (not necessarily a valid key).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The signature bytes.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

impl From<&throughgate_protocol::envelope::Signature> for RawSignature {
    fn from(s: &throughgate_protocol::envelope::Signature) -> RawSignature {
        RawSignature {
            role: s.role.as_str().to_owned(),
            key: s.key.as_bytes().to_vec(),
            sig: s.sig.to_vec(),
        }
    }
}

/// An envelope-shaped CBOR map with arbitrary field values, for kinds, keys and bodies the
/// typed envelope cannot express.
#[derive(Debug, Clone, Serialize)]
pub struct RawEnvelope {
    /// The kind, as text.
    pub kind: String,
    /// The body bytes.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The signatures.
    pub sigs: Vec<RawSignature>,
}

impl From<&Envelope> for RawEnvelope {
    fn from(e: &Envelope) -> RawEnvelope {
        RawEnvelope {
            kind: e.kind.as_str().to_owned(),
            body: e.body.clone(),
            sigs: e.sigs.iter().map(RawSignature::from).collect(),
        }
    }
}

/// Rewrites a CBOR map (of any encoding) with its entries transformed by `edit`: reorder,
/// duplicate, replace. `None` if `bytes` is not a map.
pub fn edit_map(
    bytes: &[u8],
    edit: impl FnOnce(&mut Vec<(ciborium::Value, ciborium::Value)>),
) -> Option<Vec<u8>> {
    let mut v: ciborium::Value = ciborium::de::from_reader(bytes).ok()?;
    let ciborium::Value::Map(entries) = &mut v else {
        return None;
    };
    edit(entries);
    Some(cbor(&v))
}

/// CBOR-encodes any value.
pub fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    throughgate_protocol::cbor::to_vec(v)
}

/// One frame: 4-byte big-endian length, then `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    throughgate_protocol::frame::encode(payload)
}

/// A consent before signing, with the salt and identifier its target commitment was made
/// with.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The artefact body.
    pub consent: Consent,
    /// The salt of the target's commitment.
    pub salt: [u8; SALT_LEN],
    /// The identifier committed to.
    pub subject: SubjectIdentifier,
}

/// A consent recorded by `actor` for a fresh passport: the target as holder of `subject`
/// (covering the target's categories), `actor` as grantee, the run's purpose, valid from a
/// minute ago for an hour.
pub fn draft(ctx: &Ctx, actor: &Actor, subject: &SubjectIdentifier) -> Draft {
    let t = now();
    let s = salt();
    let target = ctx.target().agency.clone();
    let consent = Consent {
        consent_id: ConsentId::random(),
        passport_id: PassportId::random(),
        purpose: ctx.purpose,
        purpose_text: ctx.purpose.describe().to_owned(),
        holders: vec![HolderScope {
            subject_commitment: commitment(&target, subject, &s),
            agency: target,
            categories: ctx.categories.clone(),
        }],
        grantees: vec![actor.agency().clone()],
        valid_from: t.minus_secs(60),
        valid_until: t.plus_secs(3600),
        records_from: None,
        records_until: None,
        legal_basis: "UK GDPR Art. 6(1)(e); Art. 9(2)(h)".into(),
        jurisdiction: "England and Wales".into(),
        collection: Collection {
            method: CollectionMethod::SignedPaperForm,
            reference: "TG-CONFORMANCE".into(),
        },
        privacy_notice_sha256: Sha256::digest(b"throughgate conformance privacy notice").into(),
        recorded_by: actor.agency().clone(),
        recorded_by_person: actor.cw.person.clone(),
        recorded_at: t,
        supersedes: None,
        credential: actor.cw.credential.clone(),
    };
    Draft {
        consent,
        salt: s,
        subject: subject.clone(),
    }
}

/// Re-computes the target's commitment after a draft's holder scope was changed.
pub fn recommit(ctx: &Ctx, d: &mut Draft) {
    let target = ctx.target().agency.clone();
    for h in d.consent.holders.iter_mut().filter(|h| h.agency == target) {
        h.subject_commitment = commitment(&target, &d.subject, &d.salt);
    }
}

/// Signs a consent as `actor`'s caseworker and node.
pub fn seal_consent(actor: &Actor, c: &Consent) -> Envelope {
    Envelope::seal(
        c,
        &[
            (SignerRole::Person, &actor.cw.key),
            (SignerRole::Node, actor.node_key()),
        ],
    )
}

/// A grant of `consent` to `recipient`, sealed by `sender`'s node.
pub fn grant(
    sender: &Actor,
    consent: Envelope,
    recipient: &AgencyId,
    subject: Option<SubjectIdentifier>,
    salt: Option<[u8; SALT_LEN]>,
) -> Envelope {
    Envelope::seal(
        &ConsentGrant {
            consent,
            recipient: recipient.clone(),
            subject,
            salt,
        },
        &[(SignerRole::Node, sender.node_key())],
    )
}

/// The target's grant of a draft, signed and sent by `actor`.
pub fn grant_draft(ctx: &Ctx, actor: &Actor, d: &Draft) -> Envelope {
    grant(
        actor,
        seal_consent(actor, &d.consent),
        &ctx.target().agency,
        Some(d.subject.clone()),
        Some(d.salt),
    )
}

/// A revocation of `consent` by `actor` (caseworker and node signatures).
pub fn revocation(actor: &Actor, consent: &Consent) -> Envelope {
    let rev = ConsentRevocation {
        consent_id: consent.consent_id.clone(),
        passport_id: consent.passport_id.clone(),
        revoked_by: actor.agency().clone(),
        revoked_by_person: actor.cw.person.clone(),
        revoked_at: now(),
        reason: "withdrawn by the person (conformance suite)".into(),
        credential: actor.cw.credential.clone(),
    };
    Envelope::seal(
        &rev,
        &[
            (SignerRole::Person, &actor.cw.key),
            (SignerRole::Node, actor.node_key()),
        ],
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn malleated_signatures_fail_strict_verification() {
        let k = SecretKey::generate();
        let mut env = Envelope::seal_bytes(
            MessageKind::Query,
            b"body".to_vec(),
            &[(SignerRole::Node, &k)],
        );
        assert!(env.verify_by(SignerRole::Node, &k.public()).is_ok());
        malleate(&mut env.sigs[0].sig);
        assert!(env.verify_by(SignerRole::Node, &k.public()).is_err());
    }

    #[test]
    fn reordered_maps_decode_to_the_same_value_and_indefinite_ones_are_refused() {
        #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
        struct T {
            a: u32,
            b: String,
        }
        let v = T {
            a: 7,
            b: "x".into(),
        };
        let bytes = cbor(&v);
        let alt = reordered_map(&bytes).unwrap();
        assert_ne!(alt, bytes);
        let back: T = throughgate_protocol::cbor::from_slice("t", &alt, 100).unwrap();
        assert_eq!(back, v);
        let indefinite = indefinite_map(&bytes).unwrap();
        assert!(throughgate_protocol::cbor::from_slice::<T>("t", &indefinite, 100).is_err());
    }
}
