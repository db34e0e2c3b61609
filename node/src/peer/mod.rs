//! Answering other members: a query's decision and its minimisation, consents received, and the
//! gate ([`crate::consent_gate`]) that orders decisions against consent status changes.
//!
//! Each handler takes a context that borrows only the parts of the node it uses
//! ([`holder::Holder`], [`consent_in::ConsentIn`]); the dispatcher builds it from the node state.

pub mod consent_in;
pub mod holder;
