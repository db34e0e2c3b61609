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
pub use response::{Outcome, RefusalReason, Response, Withheld};
pub use witness::{WitnessOutcome, WitnessRequest, WitnessResponse};
