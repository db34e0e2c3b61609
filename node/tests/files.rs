//! Private by default: the node's store, and the exports and backups an operator downloads, are
//! readable by their owner only, and a download never writes through a planted link, never
//! deletes a file it did not create, and never replaces an existing file unless forced.
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

use common::*;
use throughgate_node::client::ClientError;
use throughgate_node::private::PrivateError;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::ImportFormat;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every folder under `dir` is 0700 and every file 0600.
fn assert_private_tree(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert_private_tree(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

#[tokio::test]
async fn the_store_exports_and_backups_are_private() {
    let fed = federation().await;
    let dwp = fed.node("dwp").unwrap();
    assert_private_tree(&dwp.dir.join("data"));
    let op = fed.client("dwp", StaffRole::Operator).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("dwp.csv");
    op.export_records(ImportFormat::Csv, &export).await.unwrap();
    assert_eq!(mode(&export), 0o600, "a records export is personal data");
    let backup = tmp.path().join("dwp.tgbackup");
    op.backup(&backup).await.unwrap();
    assert_eq!(mode(&backup), 0o600, "a backup is personal data");
    // Nothing is left beside them.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    op.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_download_never_follows_a_link_nor_replaces_or_deletes_other_files() {
    let fed = federation().await;
    let op = fed.client("dwp", StaffRole::Operator).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"not yours").unwrap();

    // A link planted where the old code put its temporary file, and an unrelated file of that
    // name beside another export: neither is touched.
    let out = tmp.path().join("export.csv");
    std::os::unix::fs::symlink(&victim, out.with_extension("partial")).unwrap();
    let other = tmp.path().join("other.partial");
    std::fs::write(&other, b"someone's work").unwrap();
    op.export_records(ImportFormat::Csv, &out).await.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    assert_eq!(std::fs::read(&other).unwrap(), b"someone's work");
    assert!(std::fs::symlink_metadata(out.with_extension("partial"))
        .unwrap()
        .file_type()
        .is_symlink());

    // An existing file is refused, and kept.
    let err = op
        .export_records(ImportFormat::Csv, &other)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::File(PrivateError::Exists(_))),
        "{err}"
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"someone's work");

    // A link at the output itself is refused, even forced it is replaced rather than followed.
    let linked = tmp.path().join("linked.csv");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    let err = op
        .export_records(ImportFormat::Csv, &linked)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::File(PrivateError::Exists(_))),
        "{err}"
    );
    op.export_records_to(ImportFormat::Csv, &linked, true)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    assert!(!std::fs::symlink_metadata(&linked)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&linked), 0o600);
    op.close().await;
    fed.shutdown().await;
}
