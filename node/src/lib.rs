//! Throughgate agency node: owns all I/O. The QUIC endpoint, storage behind one narrow trait,
//! the holder's query handling (consent and policy), the requester's fan-out, the consent
//! outbox, and the client API the `tg` CLI talks to.

pub mod agencies;
pub mod audit;
pub mod audit_api;
pub mod backup;
pub mod backup_api;
pub mod bench;
pub mod budget;
pub mod client;
pub mod client_api;
pub mod clock;
pub mod config;
pub mod consent_in;
pub mod consent_out;
pub mod db;
pub mod fanout;
pub mod holder;
pub mod import;
pub mod import_api;
pub mod keyfile;
pub mod keyring;
pub mod localfed;
pub mod manifest_sync;
pub mod metrics;
pub mod node;
pub mod observe;
pub mod outbox;
pub mod peers;
pub mod pgcluster;
pub mod policy;
pub mod private;
pub mod ratelimit;
pub mod records_api;
pub mod rotation;
pub mod server;
pub mod source;
pub mod staff;
pub mod store;
pub mod synth;
pub mod tls;
pub mod transport;
pub mod trust;
