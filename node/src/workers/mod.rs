//! Background tasks a node runs for the federation: delivering queued consents and withdrawals,
//! witnessing peers' logs, and spreading the manifest.

pub mod manifest_sync;
pub mod outbox;
pub mod witness;
