//! Federation trust end to end: the governed manifest spreading, refusals of bad manifests,
//! removed members, key rotation under load, roles, expired and revoked credentials.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use throughgate_node::client::ClientError;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::{PassportId, PersonId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::Governance;
use throughgate_protocol::messages::{
    ErrorCode, HolderRequest, Outcome, Query, RefusalReason, Response,
};

async fn publish(
    fed: &throughgate_testkit::localfed::LocalFederation,
    env: Envelope,
) -> Result<Envelope, ClientError> {
    let op = fed.client("hmp-leeds", StaffRole::Operator).await.unwrap();
    let r = op.publish_manifest(env).await;
    op.close().await;
    r
}

#[tokio::test]
async fn a_newer_manifest_spreads_to_all_six_nodes_and_bad_ones_are_refused() {
    let fed = federation().await;
    let g = &fed.governance;
    let v2 = next_manifest(&fed.manifest_body, fed.now());
    publish(&fed, sign_manifest(&v2, &[g])).await.unwrap();
    wait_manifest_everywhere(&fed, 2).await;
    // Persisted: every node stored version 2.
    for n in &fed.nodes {
        let stored = n
            .node
            .as_ref()
            .unwrap()
            .state()
            .db
            .manifest()
            .unwrap()
            .unwrap();
        assert_eq!(
            stored
                .open::<throughgate_protocol::manifest::Manifest>()
                .unwrap()
                .version,
            2,
            "{}",
            n.id
        );
    }
    // Rollback: version 1 again.
    let err = publish(&fed, fed.manifest.clone()).await.unwrap_err();
    assert!(err.to_string().contains("rollback"), "{err}");
    // Under-signed: version 3 signed by a stranger.
    let v3 = next_manifest(&v2, fed.now());
    let err = publish(&fed, sign_manifest(&v3, &[&SecretKey::generate()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("under-signed"), "{err}");
    // Expired.
    let mut old = next_manifest(&v2, fed.now().minus_secs(10 * 86_400));
    old.expires_at = fed.now().minus_secs(1);
    let err = publish(&fed, sign_manifest(&old, &[g])).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // Nothing changed anywhere.
    for n in &fed.nodes {
        assert_eq!(
            n.node.as_ref().unwrap().state().manifest().unwrap().version,
            2
        );
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn governance_keys_rotate_across_two_versions() {
    let fed = federation().await;
    let old = &fed.governance;
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let mut v2 = next_manifest(&fed.manifest_body, fed.now());
    v2.governance = Governance {
        keys: vec![a.public(), b.public()],
        threshold: 2,
    };
    // Signed only by the new keys: refused (not chained to version 1's governance).
    let err = publish(&fed, sign_manifest(&v2, &[&a, &b]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("threshold of version 1"), "{err}");
    publish(&fed, sign_manifest(&v2, &[&a, &b, old]))
        .await
        .unwrap();
    // Version 3 needs only the new keys; the old key alone no longer suffices.
    let v3 = next_manifest(&v2, fed.now());
    assert!(publish(&fed, sign_manifest(&v3, &[old])).await.is_err());
    publish(&fed, sign_manifest(&v3, &[&a, &b])).await.unwrap();
    wait_manifest_everywhere(&fed, 3).await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_removed_member_is_refused_by_every_node() {
    let fed = federation().await;
    // The college talks to the prison first (a pooled connection exists).
    let college = node_state(&fed, "leeds-college");
    throughgate_node::workers::manifest_sync::sync_with(&college, &agency("hmp-leeds"))
        .await
        .unwrap();
    let mut v2 = next_manifest(&fed.manifest_body, fed.now());
    v2.members.retain(|m| m.id.as_str() != "leeds-college");
    publish(&fed, sign_manifest(&v2, &[&fed.governance]))
        .await
        .unwrap();
    for n in fed
        .nodes
        .iter()
        .filter(|n| n.id.as_str() != "leeds-college")
    {
        for _ in 0..500 {
            if n.node.as_ref().unwrap().state().manifest().unwrap().version == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            n.node.as_ref().unwrap().state().manifest().unwrap().version,
            2,
            "{}",
            n.id
        );
    }
    // The college still believes version 1 (it may not adopt a manifest that removes it), but
    // every node refuses it: a fresh connection fails, and so does the old pooled one.
    for target in ["hmp-leeds", "nhs-wy", "dwp"] {
        let r = college
            .peers
            .request(
                &agency(target),
                &college
                    .key
                    .seal(&throughgate_protocol::messages::ManifestSync {
                        manifest: college.trust.manifest_envelope().unwrap(),
                    }),
                std::time::Duration::from_secs(2),
            )
            .await;
        assert!(r.is_err(), "{target} still answers a removed member");
    }
    drop(college);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_node_key_rotates_while_queries_flow_and_none_fail() {
    let fed = Arc::new(federation().await);
    let (plan, _) = granted_plan(&fed).await;

    // Caseworkers keep assembling passports throughout the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (fed, stop, done, passport) = (
            fed.clone(),
            stop.clone(),
            done.clone(),
            plan.passport_id.clone(),
        );
        workers.push(tokio::spawn(async move {
            let client = fed
                .client("probation-yorks", StaffRole::Caseworker)
                .await
                .unwrap();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match try_assemble(&client, &passport).await {
                    Ok((_, v)) => {
                        let ok = v.all_valid()
                            && v.results.iter().all(|r| {
                                r.response
                                    .as_ref()
                                    .is_some_and(|x| x.outcome == Outcome::Disclosed)
                            });
                        if !ok {
                            failures.push(format!(
                                "{:?}",
                                v.results
                                    .iter()
                                    .map(|r| (
                                        r.result.agency.to_string(),
                                        r.result.status,
                                        r.problem.as_ref().map(ToString::to_string)
                                    ))
                                    .collect::<Vec<_>>()
                            ));
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            client.close().await;
            failures
        }));
    }
    let nhs = fed.node("nhs-wy").unwrap();
    let old_key = nhs.key.public();
    let next = SecretKey::generate();
    throughgate_node::keyfile::write_secret_key(&nhs.dir.join("node-next.key"), &next).unwrap();
    // 1. Governance lists both keys.
    let mut v2 = next_manifest(&fed.manifest_body, fed.now());
    v2.members
        .iter_mut()
        .find(|m| m.id.as_str() == "nhs-wy")
        .unwrap()
        .node_keys
        .push(next.public());
    publish(&fed, sign_manifest(&v2, &[&fed.governance]))
        .await
        .unwrap();
    wait_manifest_everywhere(&fed, 2).await;
    let before = done.load(Ordering::Relaxed);
    // 2. The node switches to the new key.
    let op = fed.client("nhs-wy", StaffRole::Operator).await.unwrap();
    let status = op.rotate_key().await.unwrap();
    assert_eq!(status.key_fingerprint, next.public().fingerprint());
    op.close().await;
    // 3. Governance retires the old key.
    let mut v3 = next_manifest(&v2, fed.now());
    v3.members
        .iter_mut()
        .find(|m| m.id.as_str() == "nhs-wy")
        .unwrap()
        .node_keys
        .retain(|k| k != &old_key);
    publish(&fed, sign_manifest(&v3, &[&fed.governance]))
        .await
        .unwrap();
    wait_manifest_everywhere(&fed, 3).await;
    // Let a few more passports go through under the final state.
    let target = done.load(Ordering::Relaxed) + 6;
    while done.load(Ordering::Relaxed) < target {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(
        done.load(Ordering::Relaxed) > before,
        "no passports were assembled during the rotation"
    );
    assert!(
        failures.is_empty(),
        "{} of {} assemblies failed: {:?}",
        failures.len(),
        done.load(Ordering::Relaxed),
        failures.first()
    );
    // The new key persists: the file now holds it.
    let on_disk = throughgate_node::keyfile::read_secret_key(&nhs.dir.join("node.key")).unwrap();
    assert_eq!(on_disk.public(), next.public());
    Arc::try_unwrap(fed).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn each_role_is_refused_what_it_may_not_do() {
    let fed = federation().await;
    let cw = fed.client("nhs-wy", StaffRole::Caseworker).await.unwrap();
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let op = fed.client("nhs-wy", StaffRole::Operator).await.unwrap();
    let forbidden = |r: Result<(), ClientError>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{what}: {e}");
        assert!(e.to_string().contains("role"), "{what}: {e}");
    };
    // Caseworkers: no imports, staff, manifests, key changes, audit reports.
    forbidden(
        cw.import(
            throughgate_protocol::messages::ImportFormat::Csv,
            true,
            b"x",
        )
        .await
        .map(|_| ()),
        "caseworker import",
    );
    forbidden(
        cw.revoke_staff(&PersonId::new("op-nhs").unwrap()).await,
        "caseworker revoke staff",
    );
    forbidden(
        cw.publish_manifest(fed.manifest.clone()).await.map(|_| ()),
        "caseworker publish",
    );
    forbidden(cw.rotate_key().await.map(|_| ()), "caseworker rotate");
    forbidden(
        cw.audit_verify().await.map(|_| ()),
        "caseworker audit verify",
    );
    // DPOs: no passports, no consent recording, no imports.
    let q = dpo.sign_query(
        PassportId::random(),
        None,
        Purpose::Resettlement,
        vec![],
        60,
    );
    forbidden(dpo.assemble(q, None).await.map(|_| ()), "dpo assemble");
    let person = person_known_to(&fed, &ALL);
    forbidden(
        dpo.record_consent(dpo.sign_consent(&plan(&fed, person, 60)))
            .await
            .map(|_| ()),
        "dpo consent",
    );
    forbidden(
        dpo.import(
            throughgate_protocol::messages::ImportFormat::Csv,
            true,
            b"x",
        )
        .await
        .map(|_| ()),
        "dpo import",
    );
    // Operators: no passports, no consent, no audit reports.
    let q = op.sign_query(
        PassportId::random(),
        None,
        Purpose::Resettlement,
        vec![],
        60,
    );
    forbidden(op.assemble(q, None).await.map(|_| ()), "operator assemble");
    forbidden(
        op.record_consent(op.sign_consent(&plan(&fed, person, 60)))
            .await
            .map(|_| ()),
        "operator consent",
    );
    let (_, m) = op.manifest().await.unwrap();
    forbidden(
        op.subject_access_report(&m, &PassportId::random(), true)
            .await
            .map(|_| ()),
        "operator report",
    );
    for c in [cw, dpo, op] {
        c.close().await;
    }
    fed.shutdown().await;
}

/// A query from probation's caseworker `person` (key `key`, credential `cred`), countersigned by
/// probation's node, addressed to the prison.
fn forged_query(
    fed: &throughgate_testkit::localfed::LocalFederation,
    key: &SecretKey,
    cred: &Envelope,
    person: &str,
) -> Envelope {
    let now = fed.now();
    let q = Query {
        query_id: throughgate_protocol::ids::QueryId::random(),
        passport_id: PassportId::random(),
        consent_id: None,
        purpose: Purpose::Resettlement,
        requests: vec![HolderRequest {
            holder: agency("hmp-leeds"),
            categories: vec![Category::FinanceAndId],
        }],
        requester: agency("probation-yorks"),
        caseworker: PersonId::new(person).unwrap(),
        credential: cred.clone(),
        issued_at: now,
        expires_at: now.plus_secs(60),
        nonce: [7; 16],
    };
    let node = node_state(fed, "probation-yorks").key.current();
    Envelope::seal(&q, &[(SignerRole::Person, key), (SignerRole::Node, &node)])
}

#[tokio::test]
async fn expired_and_revoked_credentials_are_refused_at_the_holder() {
    let fed = federation().await;
    let probation = fed.node("probation-yorks").unwrap();
    let node_key = probation.node.as_ref().unwrap().state().key.current();
    // An expired credential, signed by probation's node.
    let k = SecretKey::generate();
    let now = fed.now();
    let expired = Credential {
        person_id: PersonId::new("cw-old").unwrap(),
        display_name: "Former caseworker".into(),
        agency: agency("probation-yorks"),
        roles: vec![StaffRole::Caseworker],
        public_key: k.public(),
        not_before: now.minus_secs(10 * 86_400),
        not_after: now.minus_secs(86_400),
    };
    let env = Envelope::seal(&expired, &[(SignerRole::Node, &node_key)]);
    let answer = raw_query(
        &fed,
        "probation-yorks",
        "hmp-leeds",
        &forged_query(&fed, &k, &env, "cw-old"),
    )
    .await;
    let resp: Response = answer.open().unwrap();
    assert_eq!(resp.reason, Some(RefusalReason::CredentialExpired));

    // A revoked credential: probation's operator withdraws its caseworker's credential.
    let cw = probation.staff[&StaffRole::Caseworker].clone();
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.revoke_staff(&PersonId::new("cw-prb").unwrap())
        .await
        .unwrap();
    op.close().await;
    // At home it is refused at once: the caseworker can no longer use the node.
    let home = fed.client("probation-yorks", StaffRole::Caseworker).await;
    let refused = match home {
        Err(_) => true,
        Ok(c) => c.manifest().await.is_err(),
    };
    assert!(refused, "a revoked caseworker still reaches the home node");
    // The announcement reaches the prison through the outbox.
    let prison = node_state(&fed, "hmp-leeds");
    for _ in 0..500 {
        if prison
            .db
            .credential_revoked(&agency("probation-yorks"), &cw.key.public())
            .unwrap()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(prison
        .db
        .credential_revoked(&agency("probation-yorks"), &cw.key.public())
        .unwrap());
    // A query still carrying it (countersigned before the withdrawal, or by a compromised home
    // node) is refused by the holder.
    let answer = raw_query(
        &fed,
        "probation-yorks",
        "hmp-leeds",
        &forged_query(&fed, &cw.key, &cw.credential, "cw-prb"),
    )
    .await;
    let resp: Response = answer.open().unwrap();
    assert_eq!(resp.reason, Some(RefusalReason::CredentialRevoked));
    drop(prison);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_node_that_was_down_catches_up_on_the_manifest_at_first_contact() {
    let mut fed = federation().await;
    fed.stop("nhs-wy").await;
    let v2 = next_manifest(&fed.manifest_body, fed.now());
    publish(&fed, sign_manifest(&v2, &[&fed.governance]))
        .await
        .unwrap();
    wait_manifest_everywhere(&fed, 2).await;
    fed.restart("nhs-wy").await.unwrap();
    let nhs = node_state(&fed, "nhs-wy");
    assert_eq!(
        nhs.manifest().unwrap().version,
        1,
        "it was down when version 2 spread"
    );
    // First contact: probation's caseworker sends a query that reaches it.
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let q = cw.sign_query(
        PassportId::random(),
        None,
        Purpose::Resettlement,
        vec![HolderRequest {
            holder: agency("nhs-wy"),
            categories: vec![Category::Health],
        }],
        60,
    );
    cw.assemble(q, None).await.unwrap();
    cw.close().await;
    for _ in 0..500 {
        if nhs.manifest().unwrap().version == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(nhs.manifest().unwrap().version, 2);
    assert_eq!(
        nhs.db
            .manifest()
            .unwrap()
            .unwrap()
            .open::<throughgate_protocol::manifest::Manifest>()
            .unwrap()
            .version,
        2
    );
    drop(nhs);
    fed.shutdown().await;
}
