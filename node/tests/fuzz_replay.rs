//! The node crate's fuzz targets on stable Rust, for CI: every file of each target's seed
//! corpus (`node/fuzz/seeds/<target>/`) and regression folder (`node/fuzz/regressions/<target>/`),
//! both in git, and of its cargo-fuzz corpus if one exists locally (`$TG_FUZZ_CORPUS/<target>/`,
//! default `node/fuzz/corpus/<target>/`, not in git) is run through the same target
//! function the cargo-fuzz target calls (`node/fuzz/targets.rs`), then a bounded,
//! deterministic random-mutation run (`TG_FUZZ_REPLAY_ITERS` inputs per target, default
//! below). Parsers must return an error, never panic; panics are caught so each failing input
//! is reported and saved under the test's temporary folder.
//!
//! The seed corpus is generated from the synthetic records, the deploy configs and policies:
//!
//! ```sh
//! cargo test -p throughgate-node --test fuzz_replay -- --ignored regenerate_seed_corpus
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;

#[allow(dead_code)]
mod targets {
    include!("../fuzz/targets.rs");
}

#[allow(dead_code)]
mod replay {
    include!("../../protocol/fuzz/replay.rs");
}

use replay::{fuzz_dir, DEFAULT_ITERS};

/// Largest mutated input.
const MAX_LEN: usize = 64 * 1024;

replay::fuzz_tests! {
    max_len: MAX_LEN;
    import_csv: DEFAULT_ITERS,
    import_jsonl: DEFAULT_ITERS,
    config: DEFAULT_ITERS,
    policy: DEFAULT_ITERS,
}

/// Every target has a cargo-fuzz target file and a `[[bin]]` entry in the fuzz crate.
#[test]
fn every_target_has_a_cargo_fuzz_target() {
    replay::assert_cargo_fuzz_targets(targets::TARGETS);
}

/// Regenerates `node/fuzz/seeds/`: small exports of synthetic records for every demo agency
/// (CSV and JSON Lines), a few hand-made edge cases, the deploy node configs and policies.
#[test]
#[ignore = "writes node/fuzz/seeds; run on purpose"]
fn regenerate_seed_corpus() {
    use throughgate_node::import::{export, ImportFormat};
    use throughgate_protocol::identifiers::IdScheme;
    use throughgate_protocol::time::Date;
    use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

    let seeds = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let config = SynthConfig::new(7, 6, Date::from_ymd(2026, 9, 1).unwrap());
    let population = generate_population(&config);
    for agency in throughgate_testkit::agencies::demo_agencies() {
        let records = records_for(agency.id, &population, &config).unwrap();
        let records: Vec<_> = records.into_iter().take(6).collect();
        if records.is_empty() {
            continue;
        }
        let ctl = IdScheme::ALL
            .iter()
            .position(|s| *s == agency.scheme)
            .unwrap() as u8;
        for (target, format) in [
            ("import_csv", ImportFormat::Csv),
            ("import_jsonl", ImportFormat::Json),
        ] {
            let mut bytes = vec![ctl];
            export(&records, format, &mut bytes).unwrap();
            put(target, agency.id, &bytes);
            let mut tight = bytes.clone();
            tight[0] |= 0x80;
            put(target, &format!("{}-tight-limits", agency.id), &tight);
        }
    }
    let nhs = IdScheme::ALL
        .iter()
        .position(|s| *s == IdScheme::NhsNumber)
        .unwrap() as u8;
    let csv_cases: &[(&str, &str)] = &[
        (
            "bom-crlf-reordered",
            "\u{feff}subject,record_id,category,kind,about,recorded_at,source_system,field.status\r\n\
             943 476 5919,r1,health,gp_registration,2026-01-02,2026-01-02T09:30:00Z,SystmOne,registered\r\n\r\n",
        ),
        (
            "quoted-fields",
            "record_id,subject,category,kind,about,recorded_at,source_system,field.note,field.practice\n\
             r2,9434765919,health,gp_registration,2026-01-02,2026-01-02T09:30:00+01:00,\"Syst,mOne\",\"a \"\"quoted\"\" note\",\n",
        ),
        (
            "errors",
            "record_id,subject,category\nr1,123,unknown\nr1,,health\n",
        ),
    ];
    for (name, text) in csv_cases {
        put("import_csv", name, &[&[nhs][..], text.as_bytes()].concat());
    }
    let jsonl_cases: &[(&str, &str)] = &[
        (
            "nulls-and-blank-lines",
            "{\"record_id\":\"r1\",\"subject\":\"943-476-5919\",\"category\":\"health\",\"kind\":\"gp_registration\",\"fields\":{\"status\":null,\"practice\":\"\"},\"about\":\"2026-01-02\",\"recorded_at\":\"2026-01-02T09:30:00Z\",\"source_system\":\"SystmOne\"}\n\n",
        ),
        (
            "no-fields",
            "{\"record_id\":\"r2\",\"subject\":\"9434765919\",\"category\":\"health\",\"kind\":\"gp_registration\",\"about\":\"2026-01-02\",\"recorded_at\":\"2026-01-02T09:30:00Z\",\"source_system\":\"S\"}\n",
        ),
        ("not-json", "{\"record_id\": [1, 2\n[]\nnull\n"),
    ];
    for (name, text) in jsonl_cases {
        put(
            "import_jsonl",
            name,
            &[&[nhs][..], text.as_bytes()].concat(),
        );
    }
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for (sub, target) in [("agencies", "config"), ("policies", "policy")] {
        let mut files: Vec<_> = std::fs::read_dir(deploy.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            put(target, &name, &std::fs::read(&f).unwrap());
        }
    }
    put(
        "config",
        "minimal",
        b"agency = \"hmp-leeds\"\nlisten = \"127.0.0.1:4701\"\nkey_file = \"node.key\"\ndata_dir = \"data\"\nid_scheme = \"noms_number\"\n",
    );
    put(
        "config",
        "retention",
        b"agency = \"dwp\"\nlisten = \"[::1]:4704\"\nkey_file = \"k\"\ndata_dir = \"d\"\nid_scheme = \"ni_number\"\n[retention]\nrecords_days = 30\naudit_days = 400\n",
    );
    put(
        "policy",
        "risk-to-justice",
        b"[[release]]\npurpose = \"resettlement\"\nto = [\"sector:justice\", \"nhs-wy\"]\ncategories = [\"risk\", \"health\"]\nfields = { risk_assessment = [\"level\"], gp_registration = [\"status\"] }\n",
    );
    for (name, _) in targets::TARGETS {
        assert!(seeds.join(name).is_dir(), "no seed for {name}");
    }
}
