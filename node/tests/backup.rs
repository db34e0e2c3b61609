//! A backup taken while the node runs restores into a node whose audit log verifies and whose
//! records and consents are all there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_node::backup::{check_backup, restore_node, BackupError};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::{ClientOp, ClientResponse};

#[tokio::test]
async fn a_backup_taken_under_load_restores_and_verifies() {
    let mut fed = federation().await;
    let (p, consent) = granted_plan(&fed).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("nhs.tgbackup");

    // Passports keep flowing while the backup is taken.
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let op = fed.client("nhs-wy", StaffRole::Operator).await.unwrap();
    let load = async {
        for _ in 0..8 {
            let (_, v) = assemble(&cw, &p.passport_id).await;
            assert!(v.all_valid());
        }
    };
    let (backup, ()) = tokio::join!(op.backup(&file), load);
    let (pairs, _) = backup.unwrap();
    assert!(pairs > 100);
    assert_eq!(check_backup(&file).unwrap().pairs, pairs);
    let before = match op.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => s,
        _ => panic!(),
    };
    op.close().await;
    cw.close().await;

    // Restoring over the running node is refused: its store is locked, and nothing moves.
    let state = node_state(&fed, "nhs-wy");
    let config = state.config.clone();
    let size_running = state.audit.latest().unwrap().0;
    drop(state);
    let data = fed.node("nhs-wy").unwrap().dir.join("data");
    match restore_node(&config, &file, true, fed.now(), &fed.manifest) {
        Err(e @ BackupError::NodeRunning { .. }) => {
            assert!(e.to_string().contains("stop it"), "{e}")
        }
        other => panic!("restore over a running node: {other:?}"),
    }
    assert!(std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("replaced")));

    // Stopped, it restores (the folder that was there moved aside), and the first start logs
    // the restore with the backup's time and the log's size before and after.
    fed.stop("nhs-wy").await;
    let r = restore_node(&config, &file, true, fed.now(), &fed.manifest).unwrap();
    assert!(r.verification.ok(), "{:?}", r.verification);
    assert!(r.moved_aside.is_some());
    fed.restart("nhs-wy").await.unwrap();
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let v = dpo.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    let (entries, _) = dpo
        .audit_search(throughgate_protocol::messages::AuditFilter {
            event: Some("admin".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let restored: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.entry.event {
            throughgate_protocol::audit::AuditEvent::Admin { action, detail, .. }
                if action == "restore" =>
            {
                Some(detail.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(restored.len(), 1, "{entries:?}");
    // "... audit log size before N, after M": N is the replaced log's size (at least what it
    // was while running), M the restored one's.
    let number_after = |word: &str| -> u64 {
        let rest = restored[0].split(word).nth(1).unwrap();
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(number_after("before") >= size_running, "{restored:?}");
    assert!(number_after("after") > 0, "{restored:?}");
    assert!(restored[0].contains(&r.meta.taken_at), "{restored:?}");
    let (restored_consent, _, _) = dpo.show_consent(&consent).await.unwrap();
    assert_eq!(restored_consent.passport_id, p.passport_id);
    let after = match dpo.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => s,
        _ => panic!(),
    };
    assert_eq!(after.records, before.records);
    dpo.close().await;
    // And it still answers.
    let (_, r) = assemble_as_caseworker(&fed, &p.passport_id).await;
    assert!(r.all_valid() && r.results.iter().all(|x| x.response.is_some()));
    fed.shutdown().await;
}

#[tokio::test]
async fn records_export_in_the_format_import_reads() {
    let fed = federation().await;
    let op = fed.client("dwp", StaffRole::Operator).await.unwrap();
    let held = match op.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => s.records,
        _ => panic!(),
    };
    let tmp = tempfile::tempdir().unwrap();
    for (format, name) in [
        (throughgate_protocol::messages::ImportFormat::Csv, "dwp.csv"),
        (
            throughgate_protocol::messages::ImportFormat::Json,
            "dwp.jsonl",
        ),
    ] {
        let out = tmp.path().join(name);
        let (n, _) = op.export_records(format, &out).await.unwrap();
        assert_eq!(n, held);
        // The export imports again cleanly (a dry run: every row valid, the same count).
        let report = op
            .import(format, true, &std::fs::read(&out).unwrap())
            .await
            .unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors.first());
        assert_eq!(report.rows, held);
    }
    op.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn retention_deletes_old_records_and_redacts_old_entries_while_the_log_still_verifies() {
    let retention = throughgate_node::config::Retention {
        records_days: Some(60),
        audit_days: Some(1),
    };
    let limits = throughgate_node::config::Limits {
        witness_interval_secs: 86_400,
        ..Default::default()
    };
    let fed = throughgate_testkit::localfed::LocalFederation::start(
        throughgate_testkit::localfed::FedOptions {
            people: 40,
            limits,
            retention,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let person = person_known_to(&fed, &ALL);
    let p = plan(&fed, person, 30 * 86_400);
    grant(&fed, &p).await;
    let state = node_state(&fed, "nhs-wy");
    let before_records = state.db.record_count().unwrap();
    fed.clock.advance(2 * 86_400);
    let (deleted, redacted) = throughgate_node::node::apply_retention(&state)
        .await
        .unwrap();
    assert!(
        deleted > 0 && deleted < before_records,
        "deleted {deleted} of {before_records}"
    );
    assert!(redacted > 0);
    assert_eq!(state.db.record_count().unwrap(), before_records - deleted);
    // A second pass has nothing left to do.
    assert_eq!(
        throughgate_node::node::apply_retention(&state)
            .await
            .unwrap(),
        (0, 0)
    );
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let v = dpo.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    // The DPO sees how much retention redacted, and where.
    assert_eq!(v.redacted, redacted, "{v:?}");
    assert_eq!(
        v.redacted_ranges.iter().map(|r| r.to - r.from).sum::<u64>(),
        redacted,
        "{v:?}"
    );
    // Redacted entries no longer show in a person's report.
    let (entries, _) = dpo
        .audit_search(throughgate_protocol::messages::AuditFilter {
            passport_id: Some(p.passport_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.entry.at >= fed.now().minus_secs(86_400)),
        "{entries:?}"
    );

    // An operator with write access to the store turns a fresh entry into a "retention
    // redaction" (content emptied, marker and leaf hash kept, so the tree and every checkpoint
    // still match): no redaction entry accounts for it, and verification names it.
    let fresh = state.audit.latest().unwrap().0 - 1;
    state
        .db
        .redact_audit_entries(fresh, fresh + 1, fed.now())
        .unwrap();
    let v = dpo.audit_verify().await.unwrap();
    assert!(!v.ok, "a forged redaction went unnoticed: {v:?}");
    assert_eq!(v.bad_entry, Some(fresh), "{v:?}");
    assert!(
        v.detail
            .as_deref()
            .unwrap_or_default()
            .contains("outside retention"),
        "{v:?}"
    );
    drop(state);
    dpo.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn at_start_a_node_refuses_a_credential_its_keys_did_not_issue() {
    let mut fed = federation().await;
    let outsider = throughgate_protocol::keys::SecretKey::generate();
    let person = throughgate_protocol::keys::SecretKey::generate();
    let state = node_state(&fed, "dwp");
    let own_key = state.key.current();
    let agency = state.agency.clone();
    let now = fed.now();
    drop(state);
    let credential = |pid: &str, key: &throughgate_protocol::keys::SecretKey| {
        let body = throughgate_protocol::credential::Credential {
            person_id: throughgate_protocol::ids::PersonId::new(pid).unwrap(),
            display_name: "Someone".into(),
            agency: agency.clone(),
            roles: vec![StaffRole::Operator],
            public_key: throughgate_protocol::keys::SecretKey::generate().public(),
            not_before: now.minus_secs(60),
            not_after: now.plus_secs(86_400),
        };
        throughgate_node::db::StoredStaff {
            credential: throughgate_protocol::envelope::Envelope::seal(
                &body,
                &[(throughgate_protocol::envelope::SignerRole::Node, key)],
            ),
            body,
            revoked_at: None,
            revoked_by: None,
        }
    };
    let mut planted = credential("op-planted", &outsider);
    planted.body.public_key = person.public();
    planted.credential = throughgate_protocol::envelope::Envelope::seal(
        &planted.body,
        &[(throughgate_protocol::envelope::SignerRole::Node, &outsider)],
    );
    let genuine = credential("op-genuine", &own_key);

    // An operator with write access to the stopped node's store plants an operator credential
    // signed by a key of their own, beside one the node's key signed.
    fed.stop("dwp").await;
    let data = fed.node("dwp").unwrap().dir.join("data");
    {
        let store = std::sync::Arc::new(throughgate_node::store::SledStore::open(&data).unwrap());
        let db = throughgate_node::db::Db::new(store);
        db.put_staff(&planted).unwrap();
        db.put_staff(&genuine).unwrap();
    }
    fed.restart("dwp").await.unwrap();
    let state = node_state(&fed, "dwp");
    assert!(
        state.trust.principal(&person.public()).is_none(),
        "the planted credential was accepted"
    );
    assert!(state.trust.principal(&genuine.body.public_key).is_some());
    drop(state);
    fed.shutdown().await;
}
