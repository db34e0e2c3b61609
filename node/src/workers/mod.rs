//! Background tasks a node runs for the federation: delivering queued consents and withdrawals,
//! witnessing peers' logs, and spreading the manifest.
//!
//! Each worker starts from the node state and hands each step a context borrowing only the
//! parts it uses ([`outbox::Courier`], [`witness::Witness`], [`witness::Offering`],
//! [`manifest_sync::Manifests`]).

pub mod manifest_sync;
pub mod outbox;
pub mod witness;
