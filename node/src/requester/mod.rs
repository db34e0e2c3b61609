//! The home node's side of a passport: fanning a caseworker's query out to the holders, recording
//! and revoking consents, and queueing their delivery.

pub mod consent_out;
pub mod fanout;
