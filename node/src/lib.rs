//! Throughgate agency node: owns all I/O. The QUIC endpoint, storage behind one narrow trait,
//! the holder's query handling (consent and policy), the requester's fan-out, the consent
//! outbox, and the client API the `tg` CLI talks to.
//!
//! # Layout
//!
//! | Area | Modules |
//! |---|---|
//! | a running node | [`state`] (what every task shares), [`node`] (start-up, shutdown, housekeeping), [`config`], [`clock`], [`keyring`] |
//! | the wire | [`server`] (accept loop and dispatch), [`tls`] (pinning), [`transport`] (framing), [`peers`] and [`dial`] (outgoing connections), [`ratelimit`], [`budget`] |
//! | [`peer`]: answering other members | [`peer::holder`] (a query's decision), [`peer::consent_in`] (receiving consents) |
//! | [`requester`]: the home node's side | [`requester::fanout`] (a passport's queries), [`requester::consent_out`] (recording consents) |
//! | [`staff_api`]: what `tg` talks to | [`staff_api::dispatch`] (authentication and routing), [`staff_api::audit`], [`staff_api::import`], [`staff_api::records`], [`staff_api::backup`], [`staff_api::rotation`], [`staff_api::status`] |
//! | [`workers`]: background tasks | [`workers::outbox`] (delivery), [`workers::witness`] (witnessing peers' logs, alarms), [`workers::manifest_sync`] (spreading the manifest) |
//! | shared components | [`trust`] (manifest and staff keys, peers' signatures), [`staff`] (credential issue and withdrawal), [`consent`] (the register's rules), [`consent_gate`] (decisions against status changes), [`policy`] (minimisation), [`queue`] (the delivery queue, which wakes its worker), [`records_writer`] (imports, syncs and deletions one at a time) |
//! | storage | [`store`] (the narrow trait: memory, sled, PostgreSQL), [`db`] (typed access: the key layout), [`audit`] (the log and its writer), [`source`] (live record sources), [`backup`], [`import`] (record file formats) |
//! | operators and files | [`observe`] (metrics and health endpoints), [`metrics`], [`keyfile`], [`private`] (0600/0700 files) |
//! | the CLI's side | [`client`] (the staff API's client library) |
//!
//! The four areas use the shared components and infrastructure, and [`state`]; nothing below
//! them uses an area except [`node`] (which starts the workers) and [`server`] (which dispatches
//! to the handlers). Between areas: a staff operation starts a requester's action (assembling,
//! recording, revoking) or a worker's (resetting a witness baseline, spreading a manifest); the
//! requester's fan-out checks receipts against what [`workers::witness`] witnessed; and the
//! outbox delivers to its own node through the same [`peer::consent_in`] handlers a peer uses. The demo agencies, synthetic data, local
//! federation and benchmark are in the `throughgate-testkit` crate, not here.

pub mod audit;
pub mod backup;
pub mod budget;
pub mod client;
pub mod clock;
pub mod config;
pub mod consent;
pub mod consent_gate;
pub mod db;
pub mod dial;
pub mod import;
pub mod keyfile;
pub mod keyring;
pub mod metrics;
pub mod node;
pub mod observe;
pub mod peer;
pub mod peers;
pub mod policy;
pub mod private;
pub mod queue;
pub mod ratelimit;
pub mod records_writer;
pub mod requester;
pub mod server;
pub mod source;
pub mod staff;
pub mod staff_api;
pub mod state;
pub mod store;
pub mod tls;
pub mod transport;
pub mod trust;
pub mod workers;

#[cfg(test)]
mod testing;
