//! Records import on a running node: all or nothing, in chunks, finished after a crash.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use throughgate_node::client::HomeClient;
use throughgate_node::db::{Db, ImportJournal};
use throughgate_node::import::export_csv;
use throughgate_node::staff_api::import::{apply, APPLY_CHUNK};
use throughgate_node::store::{SledStore, Store};
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::RecordId;
use throughgate_protocol::messages::{AuditFilter, ClientOp, ClientResponse, ImportFormat};
use throughgate_protocol::record::Record;
use throughgate_testkit::localfed::LocalFederation;
use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

use common::federation;

const NHS: &str = "nhs-wy";

/// Records for nhs-wy that the federation does not hold yet (ids prefixed `t-`): more than two
/// chunks' worth.
fn new_records(fed: &LocalFederation) -> Vec<Record> {
    let cfg = SynthConfig::new(4242, 300, fed.reference_date());
    let pop = generate_population(&cfg);
    let records: Vec<Record> = records_for(NHS, &pop, &cfg)
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.record_id = RecordId::new(format!("t-{}", r.record_id.as_str())).unwrap();
            r
        })
        .collect();
    assert!(records.len() > 2 * APPLY_CHUNK, "{}", records.len());
    records
}

fn csv_of(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    export_csv(records, &mut out).unwrap();
    out
}

async fn record_count(op: &HomeClient) -> u64 {
    match op.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => s.records,
        other => panic!("{other:?}"),
    }
}

fn node_dir(fed: &LocalFederation) -> PathBuf {
    fed.nodes
        .iter()
        .find(|n| n.id.as_str() == NHS)
        .unwrap()
        .dir
        .clone()
}

/// The spool folder of a node made by the local federation (data folder `data`).
fn spool_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("data.imports")
}

fn spool_files(node_dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(spool_dir(node_dir)) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The `records_import` entries in nhs-wy's audit log.
async fn import_entries(fed: &LocalFederation) -> Vec<String> {
    let dpo = fed.client(NHS, StaffRole::Dpo).await.unwrap();
    let found = match dpo
        .call(ClientOp::AuditSearch(AuditFilter {
            event: Some("admin".into()),
            ..AuditFilter::default()
        }))
        .await
        .unwrap()
    {
        ClientResponse::AuditEntries { entries, .. } => entries
            .into_iter()
            .filter_map(|e| match e.entry.event {
                AuditEvent::Admin { action, detail, .. } if action == "records_import" => {
                    Some(detail)
                }
                _ => None,
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    dpo.close().await;
    found
}

#[tokio::test]
async fn a_valid_import_stores_every_row_in_chunks_and_leaves_no_spool() {
    let fed = federation().await;
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let before = record_count(&op).await;
    let records = new_records(&fed);
    let file = csv_of(&records);

    // A dry run checks every row and stores nothing.
    let report = op.import(ImportFormat::Csv, true, &file).await.unwrap();
    assert_eq!(report.rows, records.len() as u64);
    assert_eq!((report.stored, report.errors.len()), (0, 0));
    assert!(report.dry_run);
    assert_eq!(record_count(&op).await, before);
    assert!(spool_files(&node_dir(&fed)).is_empty());

    let report = op.import(ImportFormat::Csv, false, &file).await.unwrap();
    assert_eq!(report.stored, records.len() as u64);
    assert!(report.errors.is_empty());
    assert_eq!(record_count(&op).await, before + records.len() as u64);
    assert!(spool_files(&node_dir(&fed)).is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spool_dir(&node_dir(&fed)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }
    let logged = import_entries(&fed).await;
    assert!(
        logged
            .iter()
            .any(|d| d.starts_with(&format!("{} records for ", records.len()))),
        "{logged:?}"
    );
    // Importing the same file again replaces the records: the count stays.
    let report = op.import(ImportFormat::Csv, false, &file).await.unwrap();
    assert_eq!(report.stored, records.len() as u64);
    assert_eq!(record_count(&op).await, before + records.len() as u64);
    op.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_bad_last_row_after_many_chunks_stores_nothing() {
    let fed = federation().await;
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let before = record_count(&op).await;
    let records = new_records(&fed);
    let mut file = String::from_utf8(csv_of(&records)).unwrap();
    let lines = file.lines().count() as u64;
    let last = file.lines().last().unwrap().to_owned();
    // The same record again, with a subject that fails its check digit.
    let bad = last.replacen("t-", "u-", 1);
    let subject = records.last().unwrap().subject.clone();
    let wrong = format!(
        "{}{}",
        &subject[..9],
        (subject.as_bytes()[9] - b'0' + 1) % 10
    );
    file.push_str(&bad.replacen(&subject, &wrong, 1));
    file.push('\n');
    for dry_run in [true, false] {
        let report = op
            .import(ImportFormat::Csv, dry_run, file.as_bytes())
            .await
            .unwrap();
        assert_eq!(report.stored, 0);
        assert_eq!(report.rows, records.len() as u64 + 1);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(report.errors[0].line, lines + 1);
        assert!(!report.errors[0].reason.contains(&wrong));
        assert_eq!(record_count(&op).await, before);
        assert!(spool_files(&node_dir(&fed)).is_empty());
    }
    op.close().await;
    fed.shutdown().await;
}

/// A crash part-way through storing an import (simulated: the node is stopped, and the journal,
/// the spool file and the first chunks are written as a crashed node leaves them) is finished
/// when the node starts again, and logged; an upload cut off before it was checked is deleted.
#[tokio::test]
async fn an_interrupted_import_is_finished_at_the_next_start() {
    let mut fed = federation().await;
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let before = record_count(&op).await;
    op.close().await;
    let records = new_records(&fed);
    let file = csv_of(&records);
    let dir = node_dir(&fed);
    fed.stop(NHS).await;

    let spools = spool_dir(&dir);
    std::fs::create_dir_all(&spools).unwrap();
    let import_id = "1700000000-00000000000000aa";
    let spool = spools.join(format!("{import_id}.spool"));
    std::fs::write(&spool, &file).unwrap();
    let orphan = spools.join("1700000000-00000000000000bb.spool");
    std::fs::write(&orphan, b"record_id,subject\n").unwrap();
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("data")).unwrap());
        let db = Db::new(store);
        let mut journal = ImportJournal {
            import_id: import_id.into(),
            sha256: Sha256::digest(&file).into(),
            format: ImportFormat::Csv,
            scheme: IdScheme::NhsNumber,
            rows: records.len() as u64,
            subjects: 1,
            applied: 0,
            person_id: None,
            sync: None,
        };
        db.put_import_journal(&journal).unwrap();
        // "Crash" once the first chunk is stored.
        let stop = |applied: u64| applied < APPLY_CHUNK as u64;
        let done = apply(&db, &spool, &mut journal, false, Some(&stop)).unwrap();
        assert!(!done);
        assert_eq!(journal.applied, APPLY_CHUNK as u64);
        assert_eq!(db.record_count().unwrap(), before + APPLY_CHUNK as u64);
        assert_eq!(db.import_journals().unwrap(), vec![journal]);
        db.flush().unwrap();
    }

    fed.restart(NHS).await.unwrap();
    assert!(!orphan.exists(), "the unchecked upload was not deleted");
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let want = before + records.len() as u64;
    let mut count = 0;
    for _ in 0..200 {
        count = record_count(&op).await;
        if count == want && !spool.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, want);
    assert!(!spool.exists(), "the spool file was not deleted");
    let mut logged = Vec::new();
    for _ in 0..100 {
        logged = import_entries(&fed).await;
        if logged.iter().any(|d| d.contains(import_id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged.iter().any(|d| d.contains(import_id)), "{logged:?}");
    op.close().await;

    // Nothing is left to finish: a second restart changes nothing.
    fed.stop(NHS).await;
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("data")).unwrap());
        let db = Db::new(store);
        assert!(db.import_journals().unwrap().is_empty());
        assert_eq!(db.record_count().unwrap(), want);
    }
    fed.restart(NHS).await.unwrap();
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    assert_eq!(record_count(&op).await, want);
    op.close().await;
    fed.shutdown().await;
}
