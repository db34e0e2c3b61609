//! The protocol crate's fuzz targets on stable Rust, for CI: every file of each target's seed
//! corpus (`protocol/fuzz/seeds/<target>/`) and regression folder (`protocol/fuzz/regressions/<target>/`),
//! both in git, and of its cargo-fuzz corpus if one exists locally (`$TG_FUZZ_CORPUS/<target>/`,
//! default `protocol/fuzz/corpus/<target>/`, not in git) is run through the same target
//! function the cargo-fuzz target calls (`protocol/fuzz/targets.rs`), followed by a bounded,
//! deterministic random-mutation run (`TG_FUZZ_REPLAY_ITERS` inputs per target, default
//! below). Every decoder must return an error, never panic; panics are caught so each failing
//! input is reported and saved under the test's temporary folder.
//!
//! The seed corpus is generated from the protocol vectors:
//!
//! ```sh
//! cargo test -p throughgate-protocol --test fuzz_replay -- --ignored regenerate_seed_corpus
//! ```
//!
//! See `docs/testing.md` for running the real fuzzers.
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
    include!("../fuzz/replay.rs");
}

use replay::{fuzz_dir, DEFAULT_ITERS, SEED};

/// Largest mutated input.
const MAX_LEN: usize = 256 * 1024;

// Mutated inputs per target (the whole file takes a few seconds in a debug build).
replay::fuzz_tests! {
    max_len: MAX_LEN;
    frame: DEFAULT_ITERS,
    envelope: DEFAULT_ITERS,
    body_query: DEFAULT_ITERS,
    body_response: DEFAULT_ITERS,
    body_consent: DEFAULT_ITERS,
    body_consent_grant: DEFAULT_ITERS,
    body_consent_revoke: DEFAULT_ITERS,
    body_ack: DEFAULT_ITERS,
    body_error: DEFAULT_ITERS,
    body_credential: DEFAULT_ITERS,
    body_manifest: DEFAULT_ITERS,
    body_client_request: DEFAULT_ITERS,
    body_client_response: DEFAULT_ITERS,
    body_witness_request: DEFAULT_ITERS,
    body_witness_response: DEFAULT_ITERS,
    body_audit_query: DEFAULT_ITERS,
    body_audit_answer: DEFAULT_ITERS,
    body_manifest_sync: DEFAULT_ITERS,
    body_credential_revoke: DEFAULT_ITERS,
    body_credential_ack: DEFAULT_ITERS,
    manifest_verify: DEFAULT_ITERS,
    checkpoint: DEFAULT_ITERS,
    note: DEFAULT_ITERS,
    cosignature: DEFAULT_ITERS,
    receipt: DEFAULT_ITERS,
    bundle: DEFAULT_ITERS,
    identifier: DEFAULT_ITERS,
}

/// Every target has a cargo-fuzz target file and a `[[bin]]` entry in the fuzz crate.
#[test]
fn every_target_has_a_cargo_fuzz_target() {
    replay::assert_cargo_fuzz_targets(targets::TARGETS);
}

/// The mutator is deterministic for a seed (so a CI failure reproduces locally).
#[test]
fn mutation_runs_are_deterministic() {
    let corpus = vec![b"hello world".to_vec(), vec![0xa3, 0x01, 0x02]];
    let run = || {
        let mut rng = replay::Rng::new(SEED);
        (0..100)
            .map(|i| replay::mutate(&mut rng, &corpus[i % 2], &corpus, 1024))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// A target that panics is reported with the failing input saved, not hidden.
#[test]
fn panics_are_caught_and_reported() {
    fn picky(data: &[u8]) {
        assert!(!data.starts_with(b"boom"), "picky target exploded");
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-replay-self-test");
    let corpus = tmp.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("bad"), b"boom!").unwrap();
    std::fs::write(corpus.join("good"), b"fine").unwrap();
    let out = replay::replay_and_mutate(
        "picky",
        picky,
        &[corpus],
        0,
        SEED,
        MAX_LEN,
        &tmp.join("failures"),
    );
    assert_eq!(out.files, 2);
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    assert!(out.failures[0].contains("picky target exploded"));
    assert_eq!(
        std::fs::read(tmp.join("failures/picky-0")).unwrap(),
        b"boom!"
    );
}

// ---------------------------------------------------------------------------------------------
// Seed corpus generation from the protocol vectors.

fn vectors() -> Vec<(String, serde_json::Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/messages");
    let mut out = Vec::new();
    let mut areas: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    areas.sort();
    for area in areas {
        let mut files: Vec<_> = std::fs::read_dir(&area)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            out.push((v["id"].as_str().unwrap().replace('/', "-"), v));
        }
    }
    out
}

fn hex_field(v: &serde_json::Value, field: &str) -> Option<Vec<u8>> {
    v[field].as_str().and_then(|s| hex::decode(s).ok())
}

/// Regenerates `protocol/fuzz/seeds/` from `protocol/vectors/messages/`. Deterministic: run it
/// after regenerating the vectors, and review the diff.
#[test]
#[ignore = "writes protocol/fuzz/seeds; run on purpose after the vectors change"]
fn regenerate_seed_corpus() {
    use throughgate_protocol::audit::Receipt;
    use throughgate_protocol::envelope::Envelope;
    use throughgate_protocol::messages::{Response, WitnessRequest, WitnessResponse};

    let seeds = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let mut checkpoints: Vec<(String, String)> = Vec::new();
    let mut cosig_lines: Vec<(String, String)> = Vec::new();
    for (id, v) in vectors() {
        let kind = v["kind"].as_str().unwrap_or_default();
        let bytes = hex_field(&v, "hex");
        match (kind, &bytes) {
            ("frame", Some(b)) => {
                put("frame", &id, &[&[0xff][..], b].concat());
                put(
                    "frame",
                    &format!("{id}-bytewise"),
                    &[&[0x07][..], b].concat(),
                );
            }
            ("identifier", _) => {
                let scheme = v["scheme"].as_str().unwrap_or_default();
                let index = throughgate_protocol::identifiers::IdScheme::ALL
                    .iter()
                    .position(|s| s.as_str() == scheme)
                    .unwrap_or(0);
                let input = v["input"].as_str().unwrap_or_default();
                put(
                    "identifier",
                    &id,
                    &[&[index as u8][..], input.as_bytes()].concat(),
                );
            }
            ("receipt", Some(b)) => {
                put("receipt", &id, b);
                if let Ok(r) = throughgate_protocol::cbor::from_slice::<Receipt>("r", b, 1 << 22) {
                    checkpoints.push((id.clone(), r.checkpoint));
                }
            }
            ("bundle", Some(b)) => put("bundle", &id, b),
            (_, Some(b)) => {
                if kind == "manifest" {
                    put("manifest_verify", &id, b);
                }
                // Envelopes: the envelope target, and each body to its own target.
                let Ok(env) = Envelope::from_bytes(b, 1 << 22) else {
                    put("envelope", &id, b);
                    continue;
                };
                put("envelope", &id, b);
                put(
                    "frame",
                    &format!("{id}-framed"),
                    &[&[0xff][..], &throughgate_protocol::frame::encode(b)].concat(),
                );
                put(&format!("body_{}", env.kind.as_str()), &id, &env.body);
                if let Ok(r) = env.open::<Response>() {
                    put(
                        "receipt",
                        &id,
                        &throughgate_protocol::cbor::to_vec(&r.receipt),
                    );
                    checkpoints.push((id.clone(), r.receipt.checkpoint));
                }
                if let Ok(w) = env.open::<WitnessRequest>() {
                    checkpoints.push((id.clone(), w.checkpoint));
                }
                if let Ok(w) = env.open::<WitnessResponse>() {
                    if let Some(line) = w.cosignature {
                        cosig_lines.push((id.clone(), line));
                    }
                }
                if let Some(m) = hex_field(&v, "manifest_hex") {
                    put("manifest_verify", &format!("{id}-manifest"), &m);
                }
                if let Some(q) = hex_field(&v, "query_hex") {
                    put("envelope", &format!("{id}-query"), &q);
                }
            }
            _ => {}
        }
    }
    // Checkpoints and notes: the signed checkpoints the vectors carry, their bare texts, and a
    // cosigned checkpoint (log signature plus hmp-leeds' cosignature).
    checkpoints.sort();
    checkpoints.dedup_by(|a, b| a.1 == b.1);
    for (id, cp) in &checkpoints {
        put("checkpoint", id, cp.as_bytes());
        put("note", id, cp.as_bytes());
        if let Some((text, _)) = cp.split_once("\n\n") {
            put(
                "checkpoint",
                &format!("{id}-text"),
                format!("{text}\n").as_bytes(),
            );
        }
    }
    let fx = targets::fixture();
    let nhs_vkey = throughgate_protocol::note::VerifierKey::ed25519(
        &throughgate_protocol::audit::origin(&fx.nhs),
        fx.nhs_key,
    )
    .unwrap();
    put(
        "note",
        "verifier-key-nhs-wy",
        nhs_vkey.to_string().as_bytes(),
    );
    for (id, line) in &cosig_lines {
        put("cosignature", &format!("{id}-line"), line.as_bytes());
        for (cid, cp) in &checkpoints {
            if cp.starts_with(targets::CHECKPOINT_TEXT) {
                let cosigned = format!("{cp}{line}");
                put(
                    "cosignature",
                    &format!("{cid}-cosigned"),
                    cosigned.as_bytes(),
                );
                put(
                    "checkpoint",
                    &format!("{cid}-cosigned"),
                    cosigned.as_bytes(),
                );
                put("note", &format!("{cid}-cosigned"), cosigned.as_bytes());
            }
        }
    }
    for (name, _) in targets::TARGETS {
        assert!(
            seeds.join(name).is_dir(),
            "the vectors gave no seed for {name}"
        );
    }
}
