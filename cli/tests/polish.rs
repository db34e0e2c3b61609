//! Shell completions, man pages and the printable passport, as people run them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::{assert_success, tg};

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = tg().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let s = String::from_utf8_lossy(&out.stdout);
        for word in ["passport", "consent", "rotate-key"] {
            assert!(s.contains(word), "{shell} completions lack {word}");
        }
    }
    let bad = tg().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_writes_one_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = tg()
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_success(&out);
    for page in [
        "tg.1",
        "tg-node.1",
        "tg-node-init.1",
        "tg-node-run.1",
        "tg-passport-export.1",
        "tg-audit-report.1",
        "tg-completions.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    let node_run = std::fs::read_to_string(dir.path().join("tg-node-run.1")).unwrap();
    assert!(node_run.contains("config"), "{node_run}");
}

#[test]
fn passport_export_writes_a_verified_printable_page_and_refuses_a_tampered_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let demo = tg()
        .args(["demo", "--people", "60", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_success(&demo);
    // The demo writes the printable passport and the DPO's report itself, too.
    for f in ["passport.html", "report.html"] {
        assert!(dir.path().join(f).exists(), "demo --out did not write {f}");
    }
    let bundle = dir.path().join("passport.tgp");
    let manifest = dir.path().join("manifest.tgm");
    let page = dir.path().join("printable.html");
    let out = tg()
        .args(["passport", "export", "--html", "--manifest"])
        .arg(&manifest)
        .arg(&bundle)
        .arg("--out")
        .arg(&page)
        .output()
        .unwrap();
    assert_success(&out);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("class=\"banner ok\""), "not marked verified");
    for agency in [
        "hmp-leeds",
        "probation-yorks",
        "nhs-wy",
        "leeds-college",
        "leeds-cc",
        "dwp",
    ] {
        assert!(
            html.contains(&format!("data-agency=\"{agency}\"")),
            "no section from {agency}"
        );
    }
    for heading in [
        "Agencies asked",
        "Finance and ID",
        "Withheld by policy",
        "Refusals",
    ] {
        assert!(html.contains(heading), "no {heading}");
    }
    // Every record section names its source, its as-of time and its verification status.
    let sources = html.matches("<p class=\"source\">From ").count();
    let verified = html
        .matches(", <span class=\"verify ok\">signature verified</span>")
        .count();
    assert!(sources >= 6, "{sources}");
    assert_eq!(sources, verified);
    // Nothing unescaped from the data: no stray tags beyond the page's own.
    assert!(!html.contains("<script"));

    // Without --out the page goes to stdout; without --html it is a usage error.
    let stdout = tg()
        .args(["passport", "export", "--html"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(stdout.status.success());
    assert!(String::from_utf8_lossy(&stdout.stdout).contains("the manifest copy inside the bundle"));
    let usage = tg()
        .args(["passport", "export"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));

    // A tampered bundle: exit 5, and the error says what to do.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let tampered = dir.path().join("tampered.tgp");
    std::fs::write(&tampered, &bytes).unwrap();
    let bad = tg()
        .args(["passport", "export", "--html", "--manifest"])
        .arg(&manifest)
        .arg(&tampered)
        .arg("--out")
        .arg(dir.path().join("bad.html"))
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("again") || err.contains("manifest"), "{err}");
    if dir.path().join("bad.html").exists() {
        let html = std::fs::read_to_string(dir.path().join("bad.html")).unwrap();
        assert!(
            html.contains("NOT FULLY VERIFIED"),
            "a tampered page is not marked"
        );
    }
}
