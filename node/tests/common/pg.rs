//! A throwaway PostgreSQL cluster for a test, or a skip where the machine has no PostgreSQL.

use throughgate_testkit::pgcluster::TempCluster;

/// Whether this run is CI's, where a missing PostgreSQL fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A started cluster (fsync off), or `None` after printing `SKIP: <reason>` when this machine
/// has no PostgreSQL server binaries. Under CI a missing PostgreSQL fails the test; a cluster
/// that exists but fails to start always does.
pub fn cluster(test: &str) -> Option<TempCluster> {
    match TempCluster::start(false) {
        Ok(c) => Some(c),
        Err(e) if e.is_missing_postgres() && !in_ci() => {
            // Straight to stderr: the harness captures print! and eprint! of passing tests.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP: {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: cannot start a PostgreSQL cluster: {e}"),
    }
}
