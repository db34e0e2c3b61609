//! Throughgate's harness: what the demo, the benchmark and the tests build on, kept out of the
//! node library so that nothing a node runs in production is demo or benchmark code.
//!
//! # Layout
//!
//! | Module | What it holds |
//! |---|---|
//! | [`agencies`] | the six demo agencies, as data |
//! | [`synth`] | the seeded synthetic-data generator: people and their records at each demo agency |
//! | [`localfed`] | a federation of demo agencies on loopback in one process (`tg demo`, the tests) |
//! | [`mod@bench`] | the machinery and measurements behind `tg bench` |
//! | [`livesource`] | a demo agency's records in a PostgreSQL database of its own, with the mapping a live `postgres` source reads them through |
//! | [`pgcluster`] | a throwaway PostgreSQL cluster from the system's own binaries, for tests and the benchmark |
//!
//! The harness drives nodes only through the node library's public API. The node modules it uses
//! are imported at this crate's root, so `crate::config` here is the node's `config` module.

pub mod agencies;
pub mod bench;
pub mod livesource;
pub mod localfed;
pub mod pgcluster;
pub mod synth;

use throughgate_node::{
    audit, client, clock, config, db, keyfile, node, policy, staff, store, workers,
};
