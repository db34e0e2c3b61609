//! Throughgate wire protocol, version 2.
//!
//! A sans-IO library: identifiers and domain types, CBOR encoding with size limits, signed
//! envelopes, length-prefixed framing, the message bodies, and the pure checks a node runs on
//! them (credentials, freshness, consent). Nothing here touches a socket, a file or a clock:
//! callers pass the current time in. The specification lives in `protocol/SPEC.md`, with CDDL in
//! `protocol/throughgate.cddl` and test vectors in `protocol/vectors/`.

pub mod assembly;
pub mod audit;
pub mod bundle;
pub mod category;
pub mod cbor;
pub mod checkpoint;
pub mod consent;
pub mod consent_check;
pub mod credential;
pub mod envelope;
pub mod frame;
pub mod identifiers;
pub mod ids;
pub mod keys;
pub mod manifest;
pub mod merkle;
pub mod messages;
pub mod note;
pub mod query_check;
pub mod record;
pub mod sigcache;
pub mod time;
pub mod witness;

pub use category::{Category, Purpose};
pub use envelope::{Envelope, MessageKind, SignerRole};
pub use ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId, RecordId};
pub use keys::{PublicKey, SecretKey};

/// The protocol's name, used in every signature's domain-separation prefix.
pub const PROTOCOL_NAME: &str = "throughgate";
/// The protocol's version number, used in the ALPN and in signature domains.
pub const PROTOCOL_VERSION: u32 = 2;
/// The QUIC ALPN identifier this protocol version negotiates.
pub const ALPN: &[u8] = b"throughgate/2";
