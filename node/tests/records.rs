//! Keeping a node's records true to the agency's own system: sync to a complete snapshot (adds,
//! changes, deletions, the mass-delete guard, a crash part-way), and erasure of one person's
//! records, which later queries no longer disclose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use throughgate_node::client::{ClientError, HomeClient};
use throughgate_node::db::{Db, ImportJournal};
use throughgate_node::import::export_csv;
use throughgate_node::staff_api::import::{apply, delete_absent, plan_sync, SyncPlan, APPLY_CHUNK};
use throughgate_node::store::{SledStore, Store};
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::RecordId;
use throughgate_protocol::messages::{
    AuditFilter, ClientOp, ClientResponse, ErrorCode, ImportFormat, SyncRequest,
};
use throughgate_protocol::record::Record;
use throughgate_testkit::localfed::LocalFederation;
use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

use common::{assemble_as_caseworker, federation, grant, person_known_to, plan, ALL};

const NHS: &str = "nhs-wy";
const KIND: &str = "sync_test";

/// Records for nhs-wy of a kind of their own (`sync_test`, ids prefixed `s-`), so that a sync of
/// that kind leaves the federation's own records alone: more than two chunks' worth.
fn kind_records(fed: &LocalFederation) -> Vec<Record> {
    let cfg = SynthConfig::new(4243, 300, fed.reference_date());
    let pop = generate_population(&cfg);
    let records: Vec<Record> = records_for(NHS, &pop, &cfg)
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.record_id = RecordId::new(format!("s-{}", r.record_id.as_str())).unwrap();
            r.kind = KIND.into();
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

fn sync_of(kinds: &[&str], allow_mass_delete: bool) -> SyncRequest {
    SyncRequest {
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        allow_mass_delete,
    }
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

/// The details of nhs-wy's admin audit entries with this action.
async fn admin_entries(fed: &LocalFederation, action: &str) -> Vec<String> {
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
                AuditEvent::Admin {
                    action: a, detail, ..
                } if a == action => Some(detail),
                _ => None,
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    dpo.close().await;
    found
}

/// The records of `kind` in a stopped node's store, by record id.
fn stored_of_kind(db: &Db, kind: &str) -> BTreeMap<String, Record> {
    db.records_page(None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.kind == kind)
        .map(|r| (r.record_id.as_str().to_owned(), r))
        .collect()
}

fn by_id(records: &[Record]) -> BTreeMap<String, Record> {
    records
        .iter()
        .map(|r| (r.record_id.as_str().to_owned(), r.clone()))
        .collect()
}

#[tokio::test]
async fn a_sync_stores_new_and_changed_records_deletes_absent_ones_and_logs_counts_and_digest() {
    let mut fed = federation().await;
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let base = record_count(&op).await;
    let records = kind_records(&fed);
    let held = records.len() as u64;
    op.import(ImportFormat::Csv, false, &csv_of(&records))
        .await
        .unwrap();
    assert_eq!(record_count(&op).await, base + held);

    // The snapshot: the first 20 records are gone, the next 10 changed, 15 new ones appear, and
    // one record moves to another subject (entered for the wrong person).
    let mut snapshot: Vec<Record> = records[20..].to_vec();
    for r in snapshot.iter_mut().take(10) {
        r.fields.insert("status".into(), "amended".into());
    }
    let moved_from = snapshot[10].subject.clone();
    let moved_to = records
        .iter()
        .map(|r| r.subject.clone())
        .find(|s| *s != moved_from)
        .unwrap();
    snapshot[10].subject = moved_to;
    for (i, r) in records.iter().take(15).enumerate() {
        let mut n = r.clone();
        n.record_id = RecordId::new(format!("n-{i}")).unwrap();
        snapshot.push(n);
    }
    let file = csv_of(&snapshot);

    // A dry run reports the changes and makes none.
    let report = op
        .sync(ImportFormat::Csv, true, &file, sync_of(&[], false))
        .await
        .unwrap();
    let s = report.sync.clone().unwrap();
    assert!(report.dry_run);
    assert_eq!(s.kinds, vec![KIND.to_owned()]);
    assert_eq!(
        (s.held, s.added, s.changed, s.unchanged, s.deleted),
        (held, 16, 10, held - 31, 21)
    );
    assert!(!s.mass_delete_refused);
    assert_eq!(report.stored, 0);
    assert_eq!(record_count(&op).await, base + held);
    assert!(admin_entries(&fed, "records_sync").await.is_empty());

    let report = op
        .sync(ImportFormat::Csv, false, &file, sync_of(&[], false))
        .await
        .unwrap();
    assert_eq!(report.sync.as_ref(), Some(&s));
    assert_eq!(report.stored, snapshot.len() as u64);
    assert_eq!(record_count(&op).await, base + snapshot.len() as u64);

    let logged = admin_entries(&fed, "records_sync").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    let digest = hex::encode(Sha256::digest(&file));
    assert!(
        logged[0].contains(&format!(
            "16 added, 10 changed, {} unchanged, 21 deleted of {held} held",
            held - 31
        )),
        "{}",
        logged[0]
    );
    assert!(logged[0].contains(&digest), "{}", logged[0]);
    for r in &records {
        assert!(
            !logged[0].contains(&r.subject),
            "a subject in {}",
            logged[0]
        );
    }
    op.close().await;

    // The store holds exactly the snapshot's records of that kind, and the federation's own
    // records untouched.
    fed.stop(NHS).await;
    let dir = node_dir(&fed);
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("data")).unwrap());
        let db = Db::new(store);
        assert_eq!(stored_of_kind(&db, KIND), by_id(&snapshot));
        assert_eq!(db.record_count().unwrap(), base + snapshot.len() as u64);
        assert!(db.subject_known(&snapshot[10].subject).unwrap());
        assert!(db.import_journals().unwrap().is_empty());
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_sync_that_deletes_too_much_is_refused_unless_allowed_and_kinds_bound_it() {
    let fed = federation().await;
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let base = record_count(&op).await;
    let records = kind_records(&fed);
    let held = records.len() as u64;
    op.import(ImportFormat::Csv, false, &csv_of(&records))
        .await
        .unwrap();

    // A truncated export: a tenth of the file.
    let truncated = csv_of(&records[..records.len() / 10]);
    let keep = (records.len() / 10) as u64;
    let report = op
        .sync(ImportFormat::Csv, false, &truncated, sync_of(&[], false))
        .await
        .unwrap();
    let s = report.sync.unwrap();
    assert!(s.mass_delete_refused);
    assert_eq!(
        (s.deleted, s.held, s.max_delete_percent),
        (held - keep, held, 10)
    );
    assert_eq!(report.stored, 0);
    assert_eq!(record_count(&op).await, base + held);
    assert!(admin_entries(&fed, "records_sync").await.is_empty());

    // A file holding a kind the sync does not name is refused outright.
    let err = op
        .sync(
            ImportFormat::Csv,
            false,
            &truncated,
            sync_of(&["other_kind"], true),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(b) if b.code == ErrorCode::BadRequest && b.message.contains(KIND)),
        "{err:?}"
    );
    // A kind that is not a kind name is refused.
    let err = op
        .sync(
            ImportFormat::Csv,
            true,
            &truncated,
            sync_of(&["Not A Kind"], true),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(b) if b.code == ErrorCode::BadRequest),
        "{err:?}"
    );
    assert_eq!(record_count(&op).await, base + held);

    // A header-only file naming the kind empties it, but only when mass deletion is allowed.
    let empty = csv_of(&[]);
    let report = op
        .sync(ImportFormat::Csv, false, &empty, sync_of(&[KIND], false))
        .await
        .unwrap();
    assert!(report.sync.unwrap().mass_delete_refused);
    assert_eq!(record_count(&op).await, base + held);

    // Allowed: the truncated file is taken as the truth.
    let report = op
        .sync(ImportFormat::Csv, false, &truncated, sync_of(&[], true))
        .await
        .unwrap();
    let s = report.sync.unwrap();
    assert!(!s.mass_delete_refused);
    assert_eq!((s.deleted, s.unchanged), (held - keep, keep));
    assert_eq!(record_count(&op).await, base + keep);
    let report = op
        .sync(ImportFormat::Csv, false, &empty, sync_of(&[KIND], true))
        .await
        .unwrap();
    assert_eq!(report.sync.unwrap().deleted, keep);
    assert_eq!(record_count(&op).await, base);
    assert_eq!(admin_entries(&fed, "records_sync").await.len(), 2);
    op.close().await;
    fed.shutdown().await;
}

/// A crash part-way through a sync (simulated: the node is stopped, and the journal, the spool
/// file and part of the work are written as a crashed node leaves them) is finished when the
/// node starts again: once while its records were being stored, once while the absent ones
/// were being deleted. Either way the node ends holding exactly the snapshot, logged once.
#[tokio::test]
async fn a_sync_interrupted_while_storing_or_deleting_is_finished_at_the_next_start() {
    let mut fed = federation().await;
    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let base = record_count(&op).await;
    let records = kind_records(&fed);
    op.import(ImportFormat::Csv, false, &csv_of(&records))
        .await
        .unwrap();
    op.close().await;
    let dir = node_dir(&fed);

    for (round, in_deletion) in [(0u8, false), (1u8, true)] {
        // Every third record goes, the others change, and new ones come (so storing takes
        // several chunks and the deletions span several pages).
        let snapshot: Vec<Record> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, r)| {
                let mut r = r.clone();
                r.fields.insert("round".into(), format!("{round}"));
                if i % 3 == 1 {
                    r.record_id = RecordId::new(format!("r{round}-{i}")).unwrap();
                }
                r
            })
            .collect();
        let file = csv_of(&snapshot);
        fed.stop(NHS).await;
        let spools = dir.join("data.imports");
        std::fs::create_dir_all(&spools).unwrap();
        let import_id = format!("1700000000-00000000000000c{round}");
        let spool = spools.join(format!("{import_id}.spool"));
        std::fs::write(&spool, &file).unwrap();
        {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("data")).unwrap());
            let db = Db::new(store);
            let SyncPlan::Plan(plan) = plan_sync(
                &db,
                &spool,
                ImportFormat::Csv,
                IdScheme::NhsNumber,
                &[],
                100,
            )
            .unwrap() else {
                panic!("the file holds one kind")
            };
            assert!(plan.deleted > APPLY_CHUNK as u64 / 4, "{plan:?}");
            let mut journal = ImportJournal {
                import_id: import_id.clone(),
                sha256: Sha256::digest(&file).into(),
                format: ImportFormat::Csv,
                scheme: IdScheme::NhsNumber,
                rows: snapshot.len() as u64,
                subjects: 1,
                applied: 0,
                person_id: None,
                sync: Some(plan.clone()),
            };
            db.put_import_journal(&journal).unwrap();
            if in_deletion {
                assert!(apply(&db, &spool, &mut journal, false, None).unwrap());
                // "Crash" once the first page of deletions is done.
                let stop = |deleted: u64| deleted == 0;
                assert!(!delete_absent(&db, &spool, &journal, Some(&stop)).unwrap());
                let left = stored_of_kind(&db, KIND).len() as u64;
                assert!(
                    left > snapshot.len() as u64 && left < snapshot.len() as u64 + plan.deleted,
                    "{left}"
                );
            } else {
                // "Crash" once the first chunk is stored.
                let stop = |applied: u64| applied < APPLY_CHUNK as u64;
                assert!(!apply(&db, &spool, &mut journal, false, Some(&stop)).unwrap());
            }
            db.flush().unwrap();
        }

        fed.restart(NHS).await.unwrap();
        let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
        let want = base + snapshot.len() as u64;
        let mut count = 0;
        let mut logged = Vec::new();
        for _ in 0..200 {
            count = record_count(&op).await;
            logged = admin_entries(&fed, "records_sync").await;
            if count == want && logged.iter().any(|d| d.contains(&import_id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count, want, "round {round}");
        assert_eq!(
            logged.iter().filter(|d| d.contains(&import_id)).count(),
            1,
            "{logged:?}"
        );
        op.close().await;
        fed.stop(NHS).await;
        {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("data")).unwrap());
            let db = Db::new(store);
            assert_eq!(stored_of_kind(&db, KIND), by_id(&snapshot), "round {round}");
            assert!(db.import_journals().unwrap().is_empty());
        }
        assert!(!spool.exists());
        fed.restart(NHS).await.unwrap();
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn erased_records_are_no_longer_disclosed_and_the_log_keeps_counts_only() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let subject = person.identifier(IdScheme::NhsNumber).value;
    let p = plan(&fed, person, 3600);
    grant(&fed, &p).await;
    let nhs_records = |v: &throughgate_protocol::bundle::VerifiedBundle| {
        v.results
            .iter()
            .find(|r| r.result.agency.as_str() == NHS)
            .and_then(|r| r.response.as_ref())
            .map(|r| r.records.clone())
            .unwrap_or_default()
    };
    let (_, v) = assemble_as_caseworker(&fed, &p.passport_id).await;
    let before = nhs_records(&v);
    let kinds: BTreeSet<String> = before.iter().map(|r| r.kind.clone()).collect();
    assert!(kinds.len() >= 2, "{kinds:?}");
    let first = kinds.iter().next().unwrap().clone();

    // Only operators may delete.
    let cw = fed.client(NHS, StaffRole::Caseworker).await.unwrap();
    let err = cw.delete_records(&subject, None, None).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(b) if b.code == ErrorCode::Forbidden),
        "{err:?}"
    );
    cw.close().await;

    let op = fed.client(NHS, StaffRole::Operator).await.unwrap();
    let count = record_count(&op).await;
    // An identifier that is not one under the node's scheme is refused.
    let err = op
        .delete_records("not-an-nhs-number", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(b) if b.code == ErrorCode::BadRequest),
        "{err:?}"
    );

    // Rectification: one kind goes.
    let report = op
        .delete_records(&subject, Some(&first), None)
        .await
        .unwrap();
    assert!(report.deleted >= before.iter().filter(|r| r.kind == first).count() as u64);
    assert_eq!(report.kinds.len(), 1);
    assert_eq!(report.kinds[0].kind, first);
    assert_eq!(record_count(&op).await, count - report.deleted);
    let (_, v) = assemble_as_caseworker(&fed, &p.passport_id).await;
    let after = nhs_records(&v);
    assert!(after.iter().all(|r| r.kind != first), "{after:?}");
    assert!(!after.is_empty());

    // One record by id, then erasure of everything left.
    let one = after[0].record_id.clone();
    let report = op.delete_records(&subject, None, Some(&one)).await.unwrap();
    assert_eq!(report.deleted, 1);
    let report = op.delete_records(&subject, None, None).await.unwrap();
    assert!(report.deleted >= after.len() as u64 - 1);
    let (_, v) = assemble_as_caseworker(&fed, &p.passport_id).await;
    assert!(nhs_records(&v).is_empty(), "{:?}", nhs_records(&v));
    // Nothing left to delete: reported as such, and logged as well.
    let report = op.delete_records(&subject, None, None).await.unwrap();
    assert_eq!(report.deleted, 0);
    op.close().await;

    let logged = admin_entries(&fed, "records_delete").await;
    assert_eq!(logged.len(), 4, "{logged:?}");
    for d in &logged {
        assert!(!d.contains(&subject), "the identifier in {d}");
        assert!(!d.contains(one.as_str()), "the record id in {d}");
    }
    assert!(logged[0].contains(&first), "{}", logged[0]);
    fed.shutdown().await;
}
