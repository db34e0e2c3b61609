//! The `tg` binary as people use it: the demo, offline bundle verification, exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::{assert_success, tg};
use throughgate_testkit::bench::{ClientVerify, SignatureBudget};

#[test]
fn the_demo_runs_end_to_end_and_its_bundle_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = tg()
        .args(["demo", "--people", "80", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "RESETTLEMENT PASSPORT",
        "FINANCE AND ID",
        "from hmp-leeds (HMP Leeds)",
        "from nhs-wy (NHS West Yorkshire)",
        "no_consent",
        // Every answer carries its log's checkpoint cosigned by the manifest's quorum.
        "Witnessed: 6 of 6 responses",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
    let bundle = dir.path().join("passport.tgp");
    let manifest = dir.path().join("manifest.tgm");
    let ok = tg()
        .args(["passport", "verify"])
        .arg(&bundle)
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let verified = String::from_utf8_lossy(&ok.stdout);
    assert!(verified.starts_with("OK:"), "{verified}");
    assert!(
        verified.contains("Witnessed: 6 of 6 responses"),
        "offline verification does not say what was witnessed: {verified}"
    );
    let json = tg()
        .args(["--json", "passport", "verify"])
        .arg(&bundle)
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["witnessed"], true, "{json}");
    for a in json["agencies"].as_array().unwrap() {
        assert_eq!(a["witness"]["status"], "witnessed", "{a}");
    }

    // Flip one byte in the middle of the file: verification must fail with exit code 5.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mut failures = 0;
    for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() * 2 / 3] {
        bytes[at] ^= 0x20;
        let tampered = dir.path().join(format!("tampered-{at}.tgp"));
        std::fs::write(&tampered, &bytes).unwrap();
        bytes[at] ^= 0x20;
        let r = tg()
            .args(["passport", "verify"])
            .arg(&tampered)
            .arg("--manifest")
            .arg(&manifest)
            .output()
            .unwrap();
        assert_eq!(
            r.status.code(),
            Some(5),
            "tampering at byte {at} went unnoticed: {}",
            String::from_utf8_lossy(&r.stdout)
        );
        failures += 1;
    }
    assert_eq!(failures, 3);

    results_edits_are_caught(dir.path(), &bundle, &manifest);
    judged_later_the_expired_manifest_is_reported(&bundle, &manifest);
}

/// Every edit of a saved bundle's results list (drop, duplicate, reorder, relabel, strip) makes
/// `tg passport verify` fail with exit code 5, naming the signed assembly statement.
fn results_edits_are_caught(
    dir: &std::path::Path,
    bundle: &std::path::Path,
    manifest: &std::path::Path,
) {
    use throughgate_protocol::bundle::PassportBundle;
    use throughgate_protocol::messages::HolderStatus;
    let original = PassportBundle::from_bytes(&std::fs::read(bundle).unwrap()).unwrap();
    assert!(original.results.len() >= 2, "the demo asks several holders");
    let answered = original
        .results
        .iter()
        .position(|r| r.status == HolderStatus::Answered)
        .expect("the demo passport has an answered result");
    let mut edits: Vec<(&str, PassportBundle)> = Vec::new();
    let mut b = original.clone();
    b.results.pop();
    edits.push(("dropped", b));
    let mut b = original.clone();
    b.results.clear();
    edits.push(("emptied", b));
    let mut b = original.clone();
    b.results[1] = b.results[0].clone();
    edits.push(("duplicated", b));
    let mut b = original.clone();
    b.results.swap(0, 1);
    edits.push(("reordered", b));
    let mut b = original.clone();
    b.results[answered].status = HolderStatus::Unreachable;
    edits.push(("relabelled", b));
    let mut b = original.clone();
    b.results[answered].status = HolderStatus::TimedOut;
    b.results[answered].response = None;
    edits.push(("stripped", b));
    for (name, edited) in edits {
        let path = dir.join(format!("results-{name}.tgp"));
        std::fs::write(&path, edited.to_bytes()).unwrap();
        let r = tg()
            .args(["passport", "verify"])
            .arg(&path)
            .arg("--manifest")
            .arg(manifest)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(
            r.status.code(),
            Some(5),
            "results {name}: {}{err}",
            String::from_utf8_lossy(&r.stdout)
        );
        assert!(err.contains("assembly statement"), "results {name}: {err}");
    }
}

/// Judged after the manifest's expiry (`--at`), a bundle assembled while it was valid still
/// verifies, and the output says the manifest has expired since; judged before the assembly it
/// is refused.
fn judged_later_the_expired_manifest_is_reported(
    bundle: &std::path::Path,
    manifest: &std::path::Path,
) {
    let later = tg()
        .args(["passport", "verify"])
        .arg(bundle)
        .arg("--manifest")
        .arg(manifest)
        .args(["--at", "2200-01-01"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&later.stdout);
    assert_eq!(
        later.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&later.stderr)
    );
    assert!(out.starts_with("OK:"), "{out}");
    assert!(out.contains("expired at"), "{out}");
    let json = tg()
        .args(["--json", "passport", "verify"])
        .arg(bundle)
        .arg("--manifest")
        .arg(manifest)
        .args(["--at", "2200-01-01"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(j["manifest_expired_since"].is_string(), "{j}");
    assert!(j["assembled_at"].is_string(), "{j}");
    let now = tg()
        .args(["--json", "passport", "verify"])
        .arg(bundle)
        .arg("--manifest")
        .arg(manifest)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&now.stdout).unwrap();
    assert!(j["manifest_expired_since"].is_null(), "{j}");
    let before = tg()
        .args(["passport", "verify"])
        .arg(bundle)
        .arg("--manifest")
        .arg(manifest)
        .args(["--at", "2001-01-01"])
        .output()
        .unwrap();
    assert_eq!(before.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("before the assembly"),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
}

#[test]
fn help_lists_exit_codes_and_commands() {
    let out = tg().arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in ["demo", "node", "consent", "passport", "Exit codes"] {
        assert!(s.contains(needle), "{needle}");
    }
}

#[test]
fn a_missing_profile_gives_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = tg()
        .current_dir(dir.path())
        .args(["consent", "list"])
        .env_remove("TG_PROFILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("profile.toml"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// True if `v` holds a list of 8 or more small integers (bytes rendered as numbers).
fn has_byte_list(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(a) => {
            (a.len() >= 8 && a.iter().all(|x| x.as_u64().is_some_and(|n| n < 256)))
                || a.iter().any(has_byte_list)
        }
        serde_json::Value::Object(o) => o.values().any(has_byte_list),
        _ => false,
    }
}

#[test]
fn the_demo_with_json_prints_one_document_with_bytes_as_hex() {
    let out = tg()
        .args(["demo", "--people", "60", "--json"])
        .output()
        .unwrap();
    assert_success(&out);
    // The narration goes to stderr; stdout is exactly one JSON document.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(String::from_utf8_lossy(&out.stderr).contains("[1] Starting six agency nodes"));
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(6));
    assert_eq!(doc["consent"]["acknowledged_by"], 6);
    let disclosed = doc["passport"]["agencies"].as_array().unwrap();
    assert_eq!(disclosed.len(), 6);
    assert!(disclosed.iter().all(|a| a["outcome"] == "disclosed"));
    let refused = doc["without_consent"]["agencies"].as_array().unwrap();
    assert!(refused
        .iter()
        .all(|a| a["outcome"] == "refused" && a["reason"] == "no_consent"));
    assert!(!has_byte_list(&doc), "bytes rendered as number lists");
}

#[test]
fn logs_never_name_the_person_even_at_debug_level() {
    let out = tg()
        .args(["demo", "--people", "60", "--log", "debug"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The passport (stdout) names the person on its second line: "Given Family, born ...".
    let line = stdout
        .lines()
        .skip_while(|l| !l.starts_with("RESETTLEMENT PASSPORT"))
        .nth(1)
        .unwrap();
    let name = line.split(',').next().unwrap().trim();
    assert!(name.split_whitespace().count() >= 2, "{line}");
    assert!(
        stderr.contains("query answered"),
        "debug logs were not captured"
    );
    for part in name.split_whitespace() {
        assert!(!stderr.contains(part), "the logs name the person ({part})");
    }
}

#[test]
fn a_passphrase_protected_key_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cw.key");
    let made = tg()
        .args(["key", "generate", "--passphrase", "--out"])
        .arg(&key)
        .env("TG_PASSPHRASE", "a long enough passphrase")
        .output()
        .unwrap();
    assert_success(&made);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            && !text.contains("BEGIN PRIVATE KEY")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let public = String::from_utf8_lossy(&made.stdout)
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let shown = tg()
        .args(["key", "show"])
        .arg(&key)
        .env("TG_PASSPHRASE", "a long enough passphrase")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&public));
    let wrong = tg()
        .args(["key", "show"])
        .arg(&key)
        .env("TG_PASSPHRASE", "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("passphrase is wrong"));
    // An empty TG_PASSPHRASE never opens a key.
    let empty = tg()
        .args(["key", "show"])
        .arg(&key)
        .env("TG_PASSPHRASE", "")
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("the one given is empty"));
}

/// TG_PASSPHRASE obeys the rules a typed passphrase does: an empty or short one is refused and
/// nothing is written.
#[test]
fn a_passphrase_from_the_environment_follows_the_typed_rules() {
    let dir = tempfile::tempdir().unwrap();
    for (pass, says) in [
        ("", "the passphrase is empty"),
        ("elevenchars", "has 11 characters; use at least 12"),
    ] {
        let key = dir.path().join("cw.key");
        let out = tg()
            .args(["key", "generate", "--passphrase", "--out"])
            .arg(&key)
            .env("TG_PASSPHRASE", pass)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{pass:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{pass:?}: {stderr}");
        assert!(!key.exists(), "{pass:?}: a key was written");
    }
}

#[test]
fn records_generate_never_overwrites_and_keeps_an_identical_people_file() {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.csv");
    let run = |agency: &str, seed: &str, out: &std::path::Path| {
        tg().args(["records", "generate", "--agency", agency, "--people", "3"])
            .args(["--seed", seed, "--out"])
            .arg(out)
            .arg("--people-out")
            .arg(&people)
            .output()
            .unwrap()
    };
    // The same seed at two agencies: the second run finds the same people file and keeps it.
    let prison = dir.path().join("prison.csv");
    assert_success(&run("hmp-leeds", "7", &prison));
    let listed = std::fs::read_to_string(&people).unwrap();
    assert!(listed.lines().count() > 1);
    let nhs = dir.path().join("nhs.csv");
    assert_success(&run("nhs-wy", "7", &nhs));
    assert_eq!(std::fs::read_to_string(&people).unwrap(), listed);

    // Another seed would list other people: refused, and its records file is not written.
    let other = dir.path().join("other.csv");
    let refused = run("dwp", "8", &other);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("choose another --people-out"), "{err}");
    assert!(!other.exists());
    assert_eq!(std::fs::read_to_string(&people).unwrap(), listed);

    // An existing records file is never replaced.
    let records = std::fs::read_to_string(&prison).unwrap();
    let again = run("hmp-leeds", "7", &prison);
    assert!(String::from_utf8_lossy(&again.stderr).contains("choose another --out"));
    assert_eq!(std::fs::read_to_string(&prison).unwrap(), records);
}

#[test]
fn bench_json_has_the_fields_the_issue_names_no_errors_and_counts_within_the_budget() {
    let out = tg()
        .args([
            "bench",
            "--holders",
            "2",
            "--people",
            "5",
            "--records",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let num = |k: &str| {
        d[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing or not a number in {d}"))
    };
    assert_eq!(num("errors"), 0.0, "{d}");
    assert!(num("passports") > 0.0);
    assert!(num("passports_per_sec") > 0.0);
    // Every passport asks both holders.
    let per_holder = num("holder_queries_per_sec") / num("passports_per_sec");
    assert!((per_holder - 2.0).abs() < 1e-6, "{per_holder}");
    let lat = |k: &str| d["latency_ms"][k].as_f64().unwrap();
    assert!(0.0 < lat("p50") && lat("p50") <= lat("p95"));
    assert!(lat("p95") <= lat("p99") && lat("p99") <= lat("max"));
    for k in [
        "cpu_ms_per_passport",
        "peak_rss_mib",
        "crypto_floor_passports_per_sec",
        "floor_fraction",
        "context_switches_per_passport",
        "client_cpu_ms_per_passport",
        "node_cpu_ms_per_passport",
    ] {
        assert!(num(k) > 0.0, "{k}: {d}");
    }
    assert_eq!(d["client_verify"], "full");
    // Between the documented budget with every cache warm and no checkpoint signed, and the
    // budget before any cache with one checkpoint per node (2 holders and the requester).
    let none = SignatureBudget::new(2, 0.0);
    let most = SignatureBudget::new(2, 3.0);
    let (sign_lo, sign_hi) = (none.warm().signs(), most.signs());
    let (verify_lo, verify_hi) = (none.warm().verifies(), most.verifies());
    let (signs, verifies) = (num("signs_per_passport"), num("verifies_per_passport"));
    assert!((sign_lo..=sign_hi).contains(&signs), "signs {signs}");
    assert!(
        (verify_lo..=verify_hi).contains(&verifies),
        "verifies {verifies}"
    );
    assert_eq!(d["durable"], serde_json::Value::Bool(true));
}

/// `--client-verify statement`: the caseworker checks only the home node's signed assembly
/// statement; every passport still completes, the caseworker's verifications drop to the answer
/// and the statement, and node-side and client-side CPU are both reported.
#[test]
fn bench_in_statement_mode_completes_and_reports_node_and_client_cpu() {
    let out = tg()
        .args([
            "bench",
            "--holders",
            "2",
            "--people",
            "5",
            "--records",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--client-verify",
            "statement",
            "--json",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let num = |k: &str| {
        d[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing or not a number in {d}"))
    };
    assert_eq!(d["client_verify"], "statement");
    assert_eq!(num("errors"), 0.0, "{d}");
    assert!(num("passports") > 0.0);
    let (client, node, all) = (
        num("client_cpu_ms_per_passport"),
        num("node_cpu_ms_per_passport"),
        num("cpu_ms_per_passport"),
    );
    assert!(client > 0.0 && node > 0.0, "{d}");
    assert!(node <= all, "{d}");
    // Within the statement-mode budget: no caseworker verification of any response.
    let budget = |cp: f64| SignatureBudget::new(2, cp).for_client(ClientVerify::Statement);
    let (lo, hi) = (budget(0.0).warm().verifies(), budget(3.0).verifies());
    let verifies = num("verifies_per_passport");
    assert!((lo..=hi).contains(&verifies), "verifies {verifies}: {d}");
}

/// `tg node init` takes a demo agency's name, scheme, categories and policy only when asked to
/// with `--demo-agency`; an id that merely matches a demo agency gets no defaults.
#[test]
fn node_init_uses_demo_defaults_only_with_the_demo_agency_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bare = tg()
        .args(["node", "init", "--agency", "hmp-leeds", "--dir"])
        .arg(dir.path().join("bare"))
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("--name is required"));
    assert!(!dir.path().join("bare").exists(), "nothing is created");

    let unknown = tg()
        .args([
            "node",
            "init",
            "--demo-agency",
            "--agency",
            "nowhere",
            "--dir",
        ])
        .arg(dir.path().join("unknown"))
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("not a demo agency") && stderr.contains("hmp-leeds"),
        "{stderr}"
    );

    let demo = dir.path().join("demo");
    let made = tg()
        .args([
            "node",
            "init",
            "--demo-agency",
            "--agency",
            "hmp-leeds",
            "--dir",
        ])
        .arg(&demo)
        .output()
        .unwrap();
    assert_success(&made);
    let member = std::fs::read_to_string(demo.join("member.toml")).unwrap();
    assert!(member.contains("HMP Leeds"), "{member}");
    let policy = std::fs::read_to_string(demo.join("policy.toml")).unwrap();
    assert!(
        policy.contains("\n[[release]]"),
        "the demo policy releases something"
    );

    let real = dir.path().join("real");
    let made = tg()
        .args(["node", "init", "--agency", "hmp-leeds", "--dir"])
        .arg(&real)
        .args([
            "--name",
            "A prison",
            "--sector",
            "justice",
            "--id-scheme",
            "noms_number",
        ])
        .args(["--category", "accommodation"])
        .output()
        .unwrap();
    assert_success(&made);
    let member = std::fs::read_to_string(real.join("member.toml")).unwrap();
    assert!(member.contains("A prison") && member.contains("accommodation"));
    assert!(!member.contains("health"), "no demo categories: {member}");
    let policy = std::fs::read_to_string(real.join("policy.toml")).unwrap();
    assert!(!policy.contains("\n[[release]]"), "deny-all: {policy}");
}

/// `tg policy check --requester` explains a policy for the sector it is given, and never guesses
/// one: without `--sector` or `--manifest` it says what to give and exits 1.
#[test]
fn policy_check_explains_for_a_given_sector_and_never_guesses_one() {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/policies/probation-yorks.toml"
    );
    let out = tg()
        .args(["policy", "check", policy, "--requester", "leeds-cc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing explained without a sector");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sector") && err.contains("--manifest"),
        "{err}"
    );

    let out = tg()
        .args([
            "--json",
            "policy",
            "check",
            policy,
            "--requester",
            "leeds-cc",
        ])
        .args(["--sector", "local_government"])
        .output()
        .unwrap();
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sector"], "local_government");
    let categories = v["categories"].as_array().unwrap();
    assert!(!categories.is_empty(), "{v}");
    assert!(
        !categories.iter().any(|c| c == "risk"),
        "risk is never released for resettlement outside justice: {v}"
    );

    let out = tg()
        .args([
            "--json",
            "policy",
            "check",
            policy,
            "--requester",
            "leeds-cc",
        ])
        .args(["--sector", "justice"])
        .output()
        .unwrap();
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sector"], "justice");
}
