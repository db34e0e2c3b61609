//! Throughgate agency node: owns all I/O. The QUIC endpoint, storage behind one narrow trait,
//! the holder's query handling (consent and policy), the requester's fan-out, the consent
//! outbox, and the client API the `tg` CLI talks to.
//!
//! # Layout
//!
//! | Area | Modules |
//! |---|---|
//! | a running node | [`state`] (what every task shares), [`node`] (start-up, shutdown), [`config`], [`clock`], [`keyring`] |
//! | between nodes | [`server`] (accept loop and dispatch), [`tls`] (pinning), [`transport`] (framing), [`peers`] (outgoing connections), [`trust`] (manifest and staff keys, peers' signatures), [`ratelimit`], [`budget`] |
//! | the holder | [`holder`] (a query's decision), [`policy`] (minimisation), [`consent_in`] (receiving consents), [`consent_gate`] (decisions against status changes) |
//! | the requester | [`fanout`] (a passport's queries), [`consent_out`] (recording consents), [`queue`] (queueing, which wakes the worker), [`outbox`] (delivery) |
//! | the staff API | [`client_api`], [`audit_api`], [`import_api`], [`records_api`], [`backup_api`], [`staff`] (credential issue and withdrawal) |
//! | the federation's upkeep | [`manifest_sync`], [`rotation`], [`audit`] (the log and its writer), [`witness`] (witnessing peers' logs, alarms) |
//! | storage | [`store`] (the narrow trait: memory, sled, PostgreSQL), [`db`] (typed access: the key layout), [`backup`], [`import`] (record file formats) |
//! | operators and files | [`observe`] (metrics and health endpoints), [`metrics`], [`keyfile`], [`private`] (0600/0700 files) |
//! | the CLI's side | [`client`] (the staff API's client library) |
//!
//! The demo agencies, synthetic data, local federation and benchmark are in the
//! `throughgate-testkit` crate, not here.

pub mod audit;
pub mod audit_api;
pub mod backup;
pub mod backup_api;
pub mod budget;
pub mod client;
pub mod client_api;
pub mod clock;
pub mod config;
pub mod consent_gate;
pub mod consent_in;
pub mod consent_out;
pub mod db;
pub mod dial;
pub mod fanout;
pub mod holder;
pub mod import;
pub mod import_api;
pub mod keyfile;
pub mod keyring;
pub mod manifest_sync;
pub mod metrics;
pub mod node;
pub mod observe;
pub mod outbox;
pub mod peers;
pub mod policy;
pub mod private;
pub mod queue;
pub mod ratelimit;
pub mod records_api;
pub mod rotation;
pub mod server;
pub mod source;
pub mod staff;
pub mod state;
pub mod store;
pub mod tls;
pub mod transport;
pub mod trust;
pub mod witness;
