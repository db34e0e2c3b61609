//! Files tg writes are private (0600 in 0700 folders), never written through a symbolic link,
//! and never replace an existing file unless `--force` is given.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{assert_success, tg};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn outputs_are_private_links_are_refused_and_only_force_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let demo = tg()
        .args(["demo", "--people", "60", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_success(&demo);
    assert_eq!(mode(&dir), 0o700);
    for f in [
        "passport.tgp",
        "manifest.tgm",
        "passport.html",
        "report.html",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let export = |out: &Path, force: bool, json: bool| {
        let mut c = tg();
        c.args(["passport", "export", "--html", "--manifest"])
            .arg(dir.join("manifest.tgm"))
            .arg(dir.join("passport.tgp"))
            .arg("--out")
            .arg(out);
        if force {
            c.arg("--force");
        }
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };

    // A link planted at the output: refused in both modes with the same code, its target kept.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"not yours").unwrap();
    let link = tmp.path().join("page.html");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for json in [false, true] {
        let out = export(&link, false, json);
        assert_eq!(out.status.code(), Some(1), "json {json}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("exists"), "{err}");
        assert!(err.contains("--force"), "{err}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");

    // An existing file is kept unless --force; forced, it is replaced and private.
    let page = tmp.path().join("printable.html");
    std::fs::write(&page, b"earlier").unwrap();
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(export(&page, false, false).status.code(), Some(1));
    assert_eq!(std::fs::read(&page).unwrap(), b"earlier");
    assert_success(&export(&page, true, false));
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .starts_with("<!doctype html>"));
    assert_eq!(mode(&page), 0o600);
    // Forced onto the link: the link is replaced, never followed.
    assert_success(&export(&link, true, false));
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    assert_eq!(mode(&link), 0o600);

    // Running the demo into the same folder again refuses to overwrite what it saved.
    let again = tg()
        .args(["demo", "--people", "60", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
}
