//! Message bodies exchanged between nodes, and between a CLI and its home node.

mod ack;
mod client;
mod error;
mod query;
mod response;

pub use ack::{Ack, AckOutcome, AckSubject};
pub use client::{
    ClientOp, ClientRequest, ClientResponse, ConsentDelivery, ConsentSummary, DeliveryState,
    HolderResult, HolderStatus, HolderSubject, ImportFormat, ImportReport, ImportRowError,
    NodeStatus, StaffSummary,
};
pub use error::{ErrorBody, ErrorCode};
pub use query::{query_digest, HolderRequest, Query};
pub use response::{Outcome, RefusalReason, Response, Withheld};
