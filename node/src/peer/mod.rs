//! Answering other members: a query's decision and its minimisation, consents received, and the
//! gate ([`crate::consent_gate`]) that orders decisions against consent status changes.

pub mod consent_in;
pub mod holder;
