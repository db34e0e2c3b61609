//! Message bodies exchanged between nodes, and between a CLI and its home node.

mod ack;
mod audit_query;
mod client;
mod error;
mod manifest_sync;
mod query;
mod response;
mod witness;

pub use ack::{Ack, AckOutcome, AckSubject};
pub use audit_query::{AuditAnswer, AuditQuery, LoggedEntry};
pub use client::{
    AuditFilter, AuditSource, AuditVerification, CheckpointStatus, ClientOp, ClientRequest,
    ClientResponse, ConsentDelivery, ConsentFilter, ConsentSummary, Cosignature, DeletionReport,
    DeliveryState, HolderResult, HolderStatus, HolderSubject, ImportFormat, ImportReport,
    ImportRowError, IndexedEntry, KindCount, NodeStatus, RedactedRange, StaffSummary, SyncReport,
    SyncRequest, Witnessed,
};
pub use error::{ErrorBody, ErrorCode};
pub use manifest_sync::ManifestSync;
pub use query::{query_digest, HolderRequest, Query};
pub use response::{
    Outcome, RefusalReason, RequesterView, Response, Withheld, WitnessedCheckpoint,
};
pub use witness::{WitnessOutcome, WitnessRequest, WitnessResponse};

/// The largest body accepted for an envelope of `kind` (section 5.4): a receiver refuses a
/// larger one as `too_large` before decoding it.
pub fn max_body(kind: crate::envelope::MessageKind) -> usize {
    use crate::envelope::{Message, MessageKind as K};
    match kind {
        K::Query => Query::MAX_BODY,
        K::Response => Response::MAX_BODY,
        K::Consent => crate::consent::Consent::MAX_BODY,
        K::ConsentGrant => crate::consent::ConsentGrant::MAX_BODY,
        K::ConsentRevoke => crate::consent::ConsentRevocation::MAX_BODY,
        K::Ack => Ack::MAX_BODY,
        K::Error => ErrorBody::MAX_BODY,
        K::Credential => crate::credential::Credential::MAX_BODY,
        K::Manifest => crate::manifest::Manifest::MAX_BODY,
        K::ClientRequest => ClientRequest::MAX_BODY,
        K::ClientResponse => ClientResponse::MAX_BODY,
        K::WitnessRequest => WitnessRequest::MAX_BODY,
        K::WitnessResponse => WitnessResponse::MAX_BODY,
        K::AuditQuery => AuditQuery::MAX_BODY,
        K::AuditAnswer => AuditAnswer::MAX_BODY,
        K::ManifestSync => ManifestSync::MAX_BODY,
        K::CredentialRevoke => crate::credential::CredentialRevocation::MAX_BODY,
        K::CredentialAck => crate::credential::CredentialAck::MAX_BODY,
        K::Assembly => crate::assembly::AssemblyStatement::MAX_BODY,
    }
}
