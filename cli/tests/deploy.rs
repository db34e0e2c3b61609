//! The example node configs in `deploy/agencies/` parse as the node reads them, pass its range
//! checks, and match the demo agency they are named after (`deploy/check.sh` checks the rest of
//! `deploy/`, with tools `cargo test` does not need).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;

use throughgate_node::config::NodeConfig;
use throughgate_testkit::agencies::demo_agencies;

#[test]
fn every_example_agency_config_is_a_valid_node_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agencies");
    let mut seen = Vec::new();
    let mut ports = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        assert_eq!(cfg.agency.as_str(), stem, "{}", path.display());
        let demo = demo_agencies()
            .iter()
            .find(|a| a.id == stem)
            .unwrap_or_else(|| panic!("{stem} is not a demo agency"));
        assert_eq!(cfg.id_scheme, demo.scheme, "{}", path.display());
        let state = format!("/var/lib/throughgate/{stem}");
        for p in [&cfg.key_file, &cfg.next_key_file, &cfg.data_dir] {
            assert!(
                p.starts_with(&state),
                "{}: {} is outside the unit's StateDirectory {state}",
                path.display(),
                p.display()
            );
        }
        let metrics = cfg.metrics_listen.expect("metrics_listen is set");
        assert!(
            metrics.ip().is_loopback(),
            "{}: metrics off loopback",
            path.display()
        );
        ports.push(cfg.listen.port());
        seen.push(stem);
    }
    seen.sort();
    let mut all: Vec<&str> = demo_agencies().iter().map(|a| a.id).collect();
    all.sort_unstable();
    assert_eq!(seen, all, "one config per demo agency");
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        6,
        "each agency has its own port, so several fit on one host"
    );
}
