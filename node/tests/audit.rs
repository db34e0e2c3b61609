//! The tamper-evident audit log end to end: receipts, verification, witnessing and fork
//! detection, and the federated subject-access report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;

use common::*;
use throughgate_node::db::{AuditState, Db, StoredHash};
use throughgate_node::store::{SledStore, Store, WriteBatch};
use throughgate_protocol::audit::{verify_receipt, AuditEntry, AuditEvent};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::{ErrorCode, Outcome, Response};

async fn passport(
    fed: &throughgate_testkit::localfed::LocalFederation,
) -> (
    throughgate_protocol::ids::PassportId,
    throughgate_protocol::bundle::PassportBundle,
) {
    let (plan, _) = granted_plan(fed).await;
    let (bundle, v) = assemble_as_caseworker(fed, &plan.passport_id).await;
    assert!(v.all_valid());
    (plan.passport_id, bundle)
}

#[tokio::test]
async fn every_response_carries_a_receipt_that_proves_the_logged_decision() {
    let fed = federation().await;
    let (_, bundle) = passport(&fed).await;
    for r in &bundle.results {
        let resp: Response = r.response.as_ref().unwrap().open().unwrap();
        let keys = &fed.manifest_body.member(&r.agency).unwrap().node_keys;
        let v = verify_receipt(&resp.receipt, &r.agency, keys).unwrap();
        let AuditEvent::Decision(d) = v.entry.event else {
            panic!("not a decision")
        };
        assert_eq!(d.outcome, Outcome::Disclosed);
        assert_eq!(d.records as usize, resp.records.len());
        // The log names exactly the fields that were released.
        let mut released: Vec<String> = resp
            .records
            .iter()
            .flat_map(|x| x.fields.keys().map(move |f| format!("{}.{f}", x.kind)))
            .collect();
        released.sort();
        released.dedup();
        assert_eq!(d.fields, released, "{}", r.agency);
        assert_eq!(d.requester.as_str(), "probation-yorks");
        // A receipt moved to another holder's name fails.
        let other = if r.agency.as_str() == "dwp" {
            agency("nhs-wy")
        } else {
            agency("dwp")
        };
        let other_keys = &fed.manifest_body.member(&other).unwrap().node_keys;
        assert!(verify_receipt(&resp.receipt, &other, other_keys).is_err());
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn verify_passes_on_a_clean_log_and_only_dpos_may_run_it() {
    let fed = federation().await;
    passport(&fed).await;
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let v = dpo.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert!(v.entries >= 2, "{v:?}");
    assert!(v.checkpoints >= 1);
    let cw = fed.client("nhs-wy", StaffRole::Caseworker).await.unwrap();
    assert_eq!(
        cw.audit_verify().await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    dpo.close().await;
    cw.close().await;
    fed.shutdown().await;
}

fn open_store(
    fed: &throughgate_testkit::localfed::LocalFederation,
    agency: &str,
) -> Arc<SledStore> {
    Arc::new(SledStore::open(&fed.node(agency).unwrap().dir.join("data")).unwrap())
}

fn entry_key(i: u64) -> Vec<u8> {
    format!("aud/e/{i:020}").into_bytes()
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_entry_is_found_and_named() {
    let mut fed = federation().await;
    passport(&fed).await;
    fed.stop("nhs-wy").await;
    let victim;
    {
        let store = open_store(&fed, "nhs-wy");
        let db = Db::new(store.clone());
        let size = db.audit_state().unwrap().unwrap().size;
        assert!(size >= 2);
        victim = size - 1;
        let mut bytes = store.get(&entry_key(victim)).unwrap().unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x04;
        let mut b = WriteBatch::new();
        b.put(entry_key(victim), bytes);
        store.apply(b).unwrap();
        store.flush().unwrap();
    }
    fed.restart("nhs-wy").await.unwrap();
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let v = dpo.audit_verify().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.bad_entry, Some(victim), "{v:?}");
    dpo.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_deleted_entry_is_found_and_named() {
    let mut fed = federation().await;
    passport(&fed).await;
    fed.stop("dwp").await;
    {
        let store = open_store(&fed, "dwp");
        let mut b = WriteBatch::new();
        b.delete(entry_key(0));
        store.apply(b).unwrap();
        store.flush().unwrap();
    }
    fed.restart("dwp").await.unwrap();
    let dpo = fed.client("dwp", StaffRole::Dpo).await.unwrap();
    let v = dpo.audit_verify().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.bad_entry, Some(0), "{v:?}");
    dpo.close().await;
    fed.shutdown().await;
}

/// Rewrites a stopped node's log back to `k` entries, as an operator hiding history would.
fn truncate_log(store: &Arc<SledStore>, k: u64) {
    let db = Db::new(store.clone());
    let state = db.audit_state().unwrap().unwrap();
    let mut b = WriteBatch::new();
    for i in k..state.size {
        b.delete(entry_key(i));
    }
    for (key, _) in db.audit_raw(b"aud/c/").unwrap() {
        let size: u64 = std::str::from_utf8(&key[6..]).unwrap().parse().unwrap();
        if size > k {
            b.delete(key);
        }
    }
    let mut border = Vec::new();
    for level in 0..64u32 {
        if k >> level & 1 == 1 {
            let idx = (k >> level) - 1;
            let h = db.audit_node(level as u8, idx).unwrap().unwrap();
            border.resize(level as usize + 1, None);
            border[level as usize] = Some(StoredHash(h));
        }
    }
    b.put(
        b"aud/state".to_vec(),
        throughgate_protocol::cbor::to_vec(&AuditState { size: k, border }),
    );
    store.apply(b).unwrap();
    store.flush().unwrap();
}

#[tokio::test]
async fn witnesses_cosign_and_a_truncated_and_reappended_log_is_caught() {
    let mut fed = federation().await;
    passport(&fed).await;
    let nhs = node_state(&fed, "nhs-wy");
    throughgate_node::workers::witness::offer_all(&nhs).await;
    let witnessed_size = nhs.audit.latest().unwrap().0;
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let status = dpo.audit_checkpoints().await.unwrap();
    assert_eq!(status.size, witnessed_size);
    assert_eq!(status.cosignatures.len(), 5, "{status:?}");
    assert!(status.cosignatures.iter().all(|c| c.size == witnessed_size));
    dpo.close().await;
    let probation = node_state(&fed, "probation-yorks");
    assert_eq!(
        probation
            .db
            .witnessed(&agency("nhs-wy"))
            .unwrap()
            .unwrap()
            .0,
        witnessed_size
    );

    // The health node's operator rewrites history: truncate to 1 entry, then append more than
    // was removed, and offer the new checkpoint.
    drop(nhs);
    fed.stop("nhs-wy").await;
    truncate_log(&open_store(&fed, "nhs-wy"), 1);
    fed.restart("nhs-wy").await.unwrap();
    let nhs = node_state(&fed, "nhs-wy");
    for _ in 0..(witnessed_size + 2) {
        nhs.audit
            .append(AuditEvent::Admin {
                person_id: None,
                action: "rewrite".into(),
                detail: "forged".into(),
            })
            .await
            .unwrap();
    }
    let before = probation
        .witness_alarms
        .load(std::sync::atomic::Ordering::Relaxed);
    let refused = throughgate_node::workers::witness::offer(
        &throughgate_node::workers::witness::Offering::of(&nhs),
        &agency("probation-yorks"),
    )
    .await;
    assert!(refused.unwrap_err().contains("refused"));
    assert_eq!(
        probation
            .witness_alarms
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
    // The witness kept its old view and logged the alarm.
    assert_eq!(
        probation
            .db
            .witnessed(&agency("nhs-wy"))
            .unwrap()
            .unwrap()
            .0,
        witnessed_size
    );
    let pdpo = fed.client("probation-yorks", StaffRole::Dpo).await.unwrap();
    let filter = throughgate_protocol::messages::AuditFilter {
        event: Some("witness_alarm".into()),
        ..Default::default()
    };
    let (alarms, _) = pdpo.audit_search(filter).await.unwrap();
    assert_eq!(alarms.len(), 1);
    assert!(
        matches!(&alarms[0].entry.event, AuditEvent::WitnessAlarm { peer, .. } if peer.as_str() == "nhs-wy")
    );
    // Further offers stay refused, without a new alarm each time.
    assert!(throughgate_node::workers::witness::offer(
        &throughgate_node::workers::witness::Offering::of(&nhs),
        &agency("probation-yorks")
    )
    .await
    .is_err());
    assert_eq!(
        probation
            .witness_alarms
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
    // A DPO of the witness, having checked why (a restore, say), resets the baseline: the next
    // offer is witnessed afresh, and the reset is logged.
    pdpo.witness_reset(&agency("nhs-wy")).await.unwrap();
    assert!(throughgate_node::workers::witness::offer(
        &throughgate_node::workers::witness::Offering::of(&nhs),
        &agency("probation-yorks")
    )
    .await
    .is_ok());
    let filter = throughgate_protocol::messages::AuditFilter {
        event: Some("admin".into()),
        ..Default::default()
    };
    let (admin, _) = pdpo.audit_search(filter).await.unwrap();
    assert!(admin.iter().any(|e| matches!(&e.entry.event, AuditEvent::Admin { action, .. } if action == "witness_baseline_reset")));
    pdpo.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn the_federated_report_lists_exactly_the_disclosures_about_the_person() {
    let fed = federation().await;
    let (passport_id, _) = passport(&fed).await;
    // Someone else's passport: must not appear.
    passport(&fed).await;
    let dpo = fed.client("probation-yorks", StaffRole::Dpo).await.unwrap();
    let (_, m) = dpo.manifest().await.unwrap();
    let report = dpo
        .subject_access_report(&m, &passport_id, true)
        .await
        .unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.sources.len(), 6);
    let mut disclosures = Vec::new();
    for s in &report.sources {
        for e in &s.entries {
            assert_eq!(
                e.entry.event.passport(),
                Some(&passport_id),
                "another person's entry leaked into the report"
            );
            if let AuditEvent::Decision(d) = &e.entry.event {
                assert_eq!(d.outcome, Outcome::Disclosed);
                disclosures.push((s.agency.to_string(), d.requester.to_string()));
            }
        }
        // Every agency logged the DPO's access itself.
        assert!(
            s.entries
                .iter()
                .any(|e| matches!(e.entry.event, AuditEvent::AuditAccess { .. })),
            "{}",
            s.agency
        );
    }
    disclosures.sort();
    let expected: Vec<(String, String)> = {
        let mut v: Vec<_> = ALL
            .iter()
            .map(|a| (a.to_string(), "probation-yorks".to_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(disclosures, expected);
    // The DPO's reads of the consent register are logged too; a caseworker's are not.
    let listed = match dpo
        .call(throughgate_protocol::messages::ClientOp::ListConsents(
            throughgate_protocol::messages::ConsentFilter {
                passport_id: Some(passport_id.clone()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
    {
        throughgate_protocol::messages::ClientResponse::Consents(l) => l,
        other => panic!("unexpected answer {other:?}"),
    };
    let consent_id = listed.first().unwrap().consent_id.clone();
    dpo.show_consent(&consent_id).await.unwrap();
    let accesses = |entries: &[throughgate_protocol::messages::IndexedEntry]| -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| match &e.entry.event {
                AuditEvent::AuditAccess {
                    action,
                    passport_id: Some(p),
                    ..
                } if p == &passport_id => Some(action.clone()),
                _ => None,
            })
            .collect()
    };
    let (entries, _) = dpo
        .audit_search(throughgate_protocol::messages::AuditFilter {
            event: Some("audit_access".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // Exactly one of each: the caseworker's earlier reads (consent_for) left none.
    let mut seen = accesses(&entries);
    seen.retain(|a| a.starts_with("consent_"));
    seen.sort();
    assert_eq!(seen, ["consent_register", "consent_show"]);
    // Only a DPO may ask.
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    assert_eq!(
        cw.subject_access_report(&m, &passport_id, true)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    cw.close().await;
    dpo.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn entries_never_carry_names_or_identifiers() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let (passport_id, _) = passport(&fed).await;
    let _ = passport_id;
    for n in &fed.nodes {
        let state = n.node.as_ref().unwrap().state();
        let size = state.db.audit_state().unwrap().unwrap().size;
        for (_, bytes) in state.db.audit_entries(0, size as usize).unwrap() {
            let text = format!("{:?}", AuditEntry::from_bytes(&bytes).unwrap());
            for secret in [person.family_name, person.given_name] {
                assert!(!text.contains(secret), "{} logged a name", n.id);
            }
            for scheme in throughgate_protocol::identifiers::IdScheme::ALL {
                let id = person.identifier(scheme).value;
                assert!(!text.contains(&id), "{} logged an identifier", n.id);
            }
        }
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_holder_showing_requesters_and_witnesses_different_roots_raises_the_alarm() {
    let fed = federation().await;
    let (plan, _) = granted_plan(&fed).await;
    let (_, v) = assemble_as_caseworker(&fed, &plan.passport_id).await;
    assert!(v.all_valid());
    let nhs = agency("nhs-wy");
    let holder = node_state(&fed, "nhs-wy");
    let home = node_state(&fed, "probation-yorks");
    // nhs-wy's next decision is its next entry, under the checkpoint of the next size. It has
    // shown the home node, as its witness, another root for that size: a split view.
    let next = holder.audit.latest().unwrap().0 + 1;
    let origin = throughgate_protocol::audit::origin(&nhs);
    let other_view = throughgate_protocol::checkpoint::Checkpoint::new(&origin, next, [0x42; 32])
        .sign(&origin, &holder.key.current())
        .unwrap()
        .to_text();
    home.db.put_witnessed(&nhs, next, &other_view).unwrap();
    let alarms_before = home
        .witness_alarms
        .load(std::sync::atomic::Ordering::Relaxed);

    let (_, v) = assemble_as_caseworker(&fed, &plan.passport_id).await;
    let r = v.results.iter().find(|r| r.result.agency == nhs).unwrap();
    assert_eq!(
        r.result.status,
        throughgate_protocol::messages::HolderStatus::Invalid,
        "{:?}",
        r.result
    );
    assert!(
        r.result
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("requesters and witnesses"),
        "{:?}",
        r.result.detail
    );
    assert!(
        home.witness_alarms
            .load(std::sync::atomic::Ordering::Relaxed)
            > alarms_before
    );
    // The other holders' answers are unaffected.
    assert!(v
        .results
        .iter()
        .filter(|r| r.result.agency != nhs)
        .all(|r| r.result.status == throughgate_protocol::messages::HolderStatus::Answered));
    drop((holder, home));
    fed.shutdown().await;
}

/// The split view of different sizes: nhs-wy's witnesses (the home node among them) cosigned
/// its log at size S, but the log nhs-wy then shows requesters, of a larger size, does not
/// extend that checkpoint: it forked after a witnessed checkpoint. Same-size comparison alone
/// never sees it, since no receipt is of size S.
#[tokio::test]
async fn a_holder_forking_after_a_witnessed_checkpoint_raises_the_alarm() {
    let fed = federation().await;
    let (plan, _) = granted_plan(&fed).await;
    let (_, v) = assemble_as_caseworker(&fed, &plan.passport_id).await;
    assert!(v.all_valid());
    fed.witness_round().await;
    let nhs = agency("nhs-wy");
    let probation = agency("probation-yorks");
    let holder = node_state(&fed, "nhs-wy");
    let home = node_state(&fed, "probation-yorks");
    let (_, size, _) = holder
        .db
        .cosignatures()
        .unwrap()
        .into_iter()
        .find(|(w, _, _)| w == &probation)
        .expect("probation-yorks cosigned nhs-wy's log");
    // What the home node witnessed at size S is another log's checkpoint of that size.
    let origin = throughgate_protocol::audit::origin(&nhs);
    let other_view = throughgate_protocol::checkpoint::Checkpoint::new(&origin, size, [0x42; 32])
        .sign(&origin, &holder.key.current())
        .unwrap()
        .to_text();
    home.db.put_witnessed(&nhs, size, &other_view).unwrap();
    let alarms_before = home
        .witness_alarms
        .load(std::sync::atomic::Ordering::Relaxed);

    let (_, v) = assemble_as_caseworker(&fed, &plan.passport_id).await;
    let r = v.results.iter().find(|r| r.result.agency == nhs).unwrap();
    let resp: Response = r.result.response.as_ref().unwrap().open().unwrap();
    let receipt_size = throughgate_protocol::checkpoint::SignedCheckpoint::parse(
        resp.receipt.checkpoint.as_bytes(),
    )
    .unwrap()
    .checkpoint()
    .size;
    assert!(receipt_size > size, "{receipt_size} > {size}");
    assert_eq!(resp.requester_view.as_ref().map(|x| x.size), Some(size));
    assert_eq!(
        r.result.status,
        throughgate_protocol::messages::HolderStatus::Invalid,
        "{:?}",
        r.result
    );
    assert!(
        r.result
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("requesters and witnesses"),
        "{:?}",
        r.result.detail
    );
    assert!(
        home.witness_alarms
            .load(std::sync::atomic::Ordering::Relaxed)
            > alarms_before
    );
    assert!(v
        .results
        .iter()
        .filter(|r| r.result.agency != nhs)
        .all(|r| r.result.status == throughgate_protocol::messages::HolderStatus::Answered));
    drop((holder, home));
    fed.shutdown().await;
}

#[tokio::test]
async fn responses_carry_a_checkpoint_cosigned_by_the_manifests_witness_quorum() {
    use throughgate_protocol::bundle::WitnessVerdict;
    let fed = federation().await;
    let threshold = fed.manifest_body.witness_threshold;
    assert!(threshold >= 1);
    let (plan, _) = granted_plan(&fed).await;
    fed.witness_round().await;
    let (bundle, v) = assemble_as_caseworker(&fed, &plan.passport_id).await;
    assert!(v.all_valid());
    assert!(
        v.all_witnessed(),
        "{:?}",
        v.results.iter().map(|r| &r.witness).collect::<Vec<_>>()
    );
    for r in &v.results {
        match r.witness.as_ref().unwrap() {
            WitnessVerdict::Witnessed { witnesses, .. } => {
                assert!(witnesses.len() >= threshold as usize);
                assert!(
                    !witnesses.contains(&r.result.agency),
                    "a log witnessed itself"
                );
            }
            other => panic!("{}: {other:?}", r.result.agency),
        }
    }
    // Offline, against the bundle's manifest, the same holds.
    let offline = throughgate_protocol::bundle::verify_bundle(&bundle, &fed.manifest_body).unwrap();
    assert!(offline.all_witnessed());
    fed.shutdown().await;
}

#[tokio::test]
async fn the_cosigned_checkpoint_exports_as_a_c2sp_note_that_the_published_vkeys_verify() {
    use throughgate_protocol::note::{SignedNote, VerifierKey};
    let fed = federation().await;
    let (plan, _) = granted_plan(&fed).await;
    assemble_as_caseworker(&fed, &plan.passport_id).await;
    fed.witness_round().await;
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let status = dpo.audit_checkpoints().await.unwrap();
    let text = status.cosigned.expect("a cosigned checkpoint");
    // Standard signed-note parsing, then the vkeys the manifest publishes.
    let note = SignedNote::parse(text.as_bytes()).unwrap();
    let signed =
        throughgate_protocol::checkpoint::SignedCheckpoint::parse(text.as_bytes()).unwrap();
    let (log, witnesses) = throughgate_protocol::bundle::checkpoint_vkeys(
        &signed,
        &agency("nhs-wy"),
        &fed.manifest_body,
    );
    let log = VerifierKey::parse(&log.unwrap().to_string()).unwrap();
    assert_eq!(log.name, "throughgate/nhs-wy/audit");
    note.verify(&log.name, &log.key).unwrap();
    assert!(witnesses.len() >= fed.manifest_body.witness_threshold as usize);
    for (agency, vkey) in witnesses {
        let vkey = VerifierKey::parse(&vkey.to_string()).unwrap();
        assert_eq!(vkey.name, format!("throughgate/{agency}/witness"));
        assert_eq!(
            vkey.sig_type,
            throughgate_protocol::note::SIG_TYPE_COSIGNATURE_V1
        );
        throughgate_protocol::witness::verify_cosigned_vkey(&signed, &vkey).unwrap();
    }
    // The log's signature line and at least a quorum of cosignature lines.
    assert!(note.signatures().len() > fed.manifest_body.witness_threshold as usize);
    fed.shutdown().await;
}
