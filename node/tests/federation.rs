//! End-to-end tests of the working federation: six real nodes on loopback talking QUIC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_protocol::bundle::verify_bundle;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::envelope::{Envelope, MessageKind};
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::messages::{
    AckSubject, ClientOp, ClientResponse, ErrorBody, ErrorCode, HolderRequest, HolderStatus,
    ImportFormat, Outcome, RefusalReason, Response,
};

/// Assembles as the probation caseworker under `consent` (looked up by the client if `None`).
async fn assemble_as(
    fed: &throughgate_testkit::localfed::LocalFederation,
    agency: &str,
    passport: &PassportId,
    consent: Option<&ConsentId>,
    purpose: Purpose,
) -> throughgate_protocol::bundle::VerifiedBundle {
    let client = fed.client(agency, StaffRole::Caseworker).await.unwrap();
    let (menv, m) = client.manifest().await.unwrap();
    let c = client.consent_for(passport, consent).await.unwrap();
    let (_, v) = client
        .passport(&menv, &m, passport, c.as_ref(), consent, purpose, &[], None)
        .await
        .unwrap();
    client.close().await;
    v
}

fn outcomes(
    v: &throughgate_protocol::bundle::VerifiedBundle,
) -> Vec<(String, Outcome, Option<RefusalReason>, usize)> {
    v.results
        .iter()
        .map(|r| {
            let resp = r.response.as_ref().expect("every holder answered");
            (
                r.result.agency.to_string(),
                resp.outcome,
                resp.reason,
                resp.records.len(),
            )
        })
        .collect()
}

fn assert_all_refused(v: &throughgate_protocol::bundle::VerifiedBundle, reason: RefusalReason) {
    assert!(v.all_valid());
    assert!(!v.results.is_empty());
    for (agency, outcome, got, records) in outcomes(v) {
        assert_eq!(outcome, Outcome::Refused, "{agency}");
        assert_eq!(got, Some(reason), "{agency}");
        assert_eq!(records, 0, "{agency} disclosed records in a refusal");
    }
}

#[tokio::test]
async fn consent_then_full_passport_from_six_agencies() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let plan = plan(&fed, person, 3600);
    let consent = grant(&fed, &plan).await;
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        None,
        Purpose::Resettlement,
    )
    .await;
    assert!(v.all_valid());
    assert_eq!(v.query.consent_id.as_ref(), Some(&consent));
    let got = outcomes(&v);
    assert_eq!(got.len(), 6);
    for (agency, outcome, _, records) in &got {
        assert_eq!(*outcome, Outcome::Disclosed, "{agency}");
        assert!(*records > 0, "{agency} disclosed nothing");
    }
    // The prison's identity record names the person: linkage reached the right subject.
    let identity = v.results[0]
        .response
        .as_ref()
        .unwrap()
        .records
        .iter()
        .find(|r| r.kind == "person_identity")
        .unwrap();
    assert_eq!(identity.fields["family_name"], person.family_name);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_holder_that_does_not_know_the_person_answers_not_held() {
    let fed = federation().await;
    let person = fed
        .population
        .people
        .iter()
        .find(|p| !p.is_known_to(fed.node("leeds-college").unwrap().agency))
        .unwrap();
    let plan = plan(&fed, person, 3600);
    grant(&fed, &plan).await;
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        None,
        Purpose::Resettlement,
    )
    .await;
    let college = outcomes(&v)
        .into_iter()
        .find(|o| o.0 == "leeds-college")
        .unwrap();
    assert_eq!(
        (college.1, college.2, college.3),
        (Outcome::NotHeld, None, 0)
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn no_consent_is_refused_everywhere() {
    let fed = federation().await;
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &PassportId::random(),
        None,
        Purpose::Resettlement,
    )
    .await;
    assert_eq!(v.results.len(), 6);
    assert_all_refused(&v, RefusalReason::NoConsent);
    fed.shutdown().await;
}

#[tokio::test]
async fn an_unknown_consent_id_is_refused_as_no_consent() {
    let fed = federation().await;
    let (plan, _) = granted_plan(&fed).await;
    let made_up = ConsentId::random();
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        Some(&made_up),
        Purpose::Resettlement,
    )
    .await;
    assert_all_refused(&v, RefusalReason::NoConsent);
    fed.shutdown().await;
}

#[tokio::test]
async fn expired_consent_is_refused() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let plan = plan(&fed, person, 120);
    let consent = grant(&fed, &plan).await;
    fed.clock.advance(300);
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        Some(&consent),
        Purpose::Resettlement,
    )
    .await;
    assert_all_refused(&v, RefusalReason::ConsentExpired);
    fed.shutdown().await;
}

#[tokio::test]
async fn revoked_consent_is_refused() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let plan = plan(&fed, person, 3600);
    let consent = grant(&fed, &plan).await;
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    prison
        .revoke_consent(&consent, "withdrawn by the person")
        .await
        .unwrap();
    wait_deliveries(&prison, &consent, AckSubject::Revoke).await;
    prison.close().await;
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        Some(&consent),
        Purpose::Resettlement,
    )
    .await;
    assert_all_refused(&v, RefusalReason::ConsentRevoked);
    fed.shutdown().await;
}

#[tokio::test]
async fn wrong_purpose_is_refused() {
    let fed = federation().await;
    let (plan, consent) = granted_plan(&fed).await;
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        Some(&consent),
        Purpose::ContinuityOfCare,
    )
    .await;
    assert_all_refused(&v, RefusalReason::PurposeNotCovered);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_category_the_consent_does_not_cover_is_refused() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let mut plan = plan(&fed, person, 3600);
    // The person agrees to share health records only, not drug and alcohol treatment.
    for h in &mut plan.holders {
        if h.0.as_str() == "nhs-wy" {
            h.2 = vec![Category::Health];
        }
    }
    let consent = grant(&fed, &plan).await;
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let requests = vec![HolderRequest {
        holder: agency("nhs-wy"),
        categories: vec![Category::Health, Category::DrugsAndAlcohol],
    }];
    let q = client.sign_query(
        plan.passport_id.clone(),
        Some(consent),
        Purpose::Resettlement,
        requests,
        60,
    );
    let (query, results) = client.assemble(q, None).await.unwrap();
    let resp: Response = results[0].response.as_ref().unwrap().open().unwrap();
    assert_eq!(resp.outcome, Outcome::Refused);
    assert_eq!(resp.reason, Some(RefusalReason::CategoryNotCovered));
    assert!(resp.records.is_empty());
    assert_eq!(query.kind, MessageKind::Query);
    client.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_requester_that_is_not_a_grantee_is_refused() {
    let fed = federation().await;
    let (plan, consent) = granted_plan(&fed).await;
    // DWP holds records (so it received the consent) but is not a grantee.
    let v = assemble_as(
        &fed,
        "dwp",
        &plan.passport_id,
        Some(&consent),
        Purpose::Resettlement,
    )
    .await;
    assert_all_refused(&v, RefusalReason::RequesterNotGrantee);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_replayed_query_is_refused() {
    let fed = federation().await;
    let (plan, consent) = granted_plan(&fed).await;
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let requests = vec![HolderRequest {
        holder: agency("hmp-leeds"),
        categories: vec![Category::FinanceAndId],
    }];
    let q = client.sign_query(
        plan.passport_id.clone(),
        Some(consent),
        Purpose::Resettlement,
        requests,
        60,
    );
    let (_, first) = client.assemble(q.clone(), None).await.unwrap();
    let first: Response = first[0].response.as_ref().unwrap().open().unwrap();
    assert_eq!(first.outcome, Outcome::Disclosed);
    let (_, second) = client.assemble(q, None).await.unwrap();
    let second: Response = second[0].response.as_ref().unwrap().open().unwrap();
    assert_eq!(second.outcome, Outcome::Refused);
    assert_eq!(second.reason, Some(RefusalReason::QueryReplayed));
    assert!(second.records.is_empty());
    client.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_stopped_node_shows_unreachable_while_the_others_answer() {
    let mut fed = federation().await;
    let (plan, _) = granted_plan(&fed).await;
    fed.stop("leeds-college").await;
    let v = assemble_as(
        &fed,
        "probation-yorks",
        &plan.passport_id,
        None,
        Purpose::Resettlement,
    )
    .await;
    assert!(v.all_valid());
    for r in &v.results {
        if r.result.agency.as_str() == "leeds-college" {
            assert!(
                matches!(
                    r.result.status,
                    HolderStatus::Unreachable | HolderStatus::TimedOut
                ),
                "{:?}",
                r.result.status
            );
            assert!(r.response.is_none());
            // Marked within the request deadline (1.5 s), not after some longer wait.
            assert!(
                r.result.elapsed_ms <= 2000,
                "took {} ms",
                r.result.elapsed_ms
            );
        } else {
            assert_eq!(
                r.response.as_ref().map(|x| x.outcome),
                Some(Outcome::Disclosed),
                "{}",
                r.result.agency
            );
        }
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_tampered_response_fails_verification() {
    let fed = federation().await;
    let (plan, _) = granted_plan(&fed).await;
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let (mut bundle, v) = assemble(&client, &plan.passport_id).await;
    let (_, m) = client.manifest().await.unwrap();
    assert!(v.all_valid());
    // Flip one byte inside the health response's signed body.
    let nhs = bundle
        .results
        .iter_mut()
        .find(|r| r.agency.as_str() == "nhs-wy")
        .unwrap();
    let env = nhs.response.as_mut().unwrap();
    let at = env.body.len() / 2;
    env.body[at] ^= 0x01;
    // The home node's signed statement names the response by digest: the whole bundle fails.
    match verify_bundle(&bundle, &m) {
        Err(throughgate_protocol::bundle::BundleError::ResultsMismatch(detail)) => {
            assert!(detail.contains("nhs-wy"), "{detail}");
        }
        other => panic!("a tampered response went unnoticed: {other:?}"),
    }
    client.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_node_key_not_in_the_manifest_is_refused_at_the_handshake() {
    let fed = federation().await;
    let prison = fed.node("hmp-leeds").unwrap();
    let stranger = throughgate_protocol::keys::SecretKey::generate();
    let (_ep, conn) =
        raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &stranger).await;
    // quinn's client learns of the refusal on its first stream operation.
    let outcome = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[0, 0, 0, 1, 0]).await?;
        send.finish()?;
        let got = recv.read_to_end(1024).await?;
        Ok::<_, Box<dyn std::error::Error>>(got)
    }
    .await;
    assert!(
        outcome.is_err(),
        "a stranger's stream succeeded: {outcome:?}"
    );
    assert!(conn.close_reason().is_some());
    // And a client pinning the wrong key for a node refuses that node.
    let cw = &fed.node("probation-yorks").unwrap().staff[&StaffRole::Caseworker];
    let wrong = throughgate_node::client::HomeClient::connect(
        fed.node("probation-yorks").unwrap().addr,
        &agency("probation-yorks"),
        vec![stranger.public()],
        cw.key.clone(),
        cw.credential.clone(),
        fed.clock.clone(),
    )
    .await;
    assert!(matches!(
        wrong,
        Err(throughgate_node::client::ClientError::Connect { .. })
    ));
    fed.shutdown().await;
}

#[tokio::test]
async fn a_malformed_frame_costs_only_its_stream() {
    let fed = federation().await;
    let prison = fed.node("hmp-leeds").unwrap();
    let dwp = fed.node("dwp").unwrap();
    let (_ep, conn) = raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &dwp.key).await;

    async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Envelope {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let got = recv.read_to_end(1 << 20).await.unwrap();
        Envelope::from_bytes(&got[4..], 1 << 20).unwrap()
    }

    // Garbage inside a well-formed frame.
    let garbage = throughgate_protocol::frame::encode(b"\xff\x00not cbor");
    let err: ErrorBody = exchange(&conn, &garbage).await.open().unwrap();
    assert_eq!(err.code, ErrorCode::Malformed);
    // A frame announcing more than the limit.
    let err: ErrorBody = exchange(&conn, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .open()
        .unwrap();
    assert_eq!(err.code, ErrorCode::TooLarge);
    // A truncated frame.
    let err: ErrorBody = exchange(&conn, &[0, 0, 0, 9, 1, 2]).await.open().unwrap();
    assert_eq!(err.code, ErrorCode::Malformed);
    // The same connection still works: a real (unconsented) query gets a signed refusal.
    assert!(conn.close_reason().is_none());
    let cw = fed.client("dwp", StaffRole::Caseworker).await.unwrap();
    let mut q = cw.sign_query(
        PassportId::random(),
        None,
        Purpose::Resettlement,
        vec![HolderRequest {
            holder: agency("hmp-leeds"),
            categories: vec![Category::FinanceAndId],
        }],
        60,
    );
    q.add_signature(throughgate_protocol::envelope::SignerRole::Node, &dwp.key);
    let answer = exchange(&conn, &throughgate_protocol::frame::encode(&q.to_bytes())).await;
    let resp: Response = answer.open().unwrap();
    assert_eq!(resp.reason, Some(RefusalReason::NoConsent));
    cw.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn an_import_with_one_bad_row_stores_nothing_and_names_the_row() {
    let fed = federation().await;
    let op = fed.client("nhs-wy", StaffRole::Operator).await.unwrap();
    let before = match op.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => s.records,
        _ => panic!(),
    };
    let header = "record_id,subject,category,kind,about,recorded_at,source_system,field.practice\n";
    let good = "imp-1,9434765919,health,gp_registration,2026-01-02,2026-01-02T10:00:00Z,SystmOne,Wrenfield Surgery\n";
    let bad = "imp-2,9434765918,health,gp_registration,2026-01-02,2026-01-02T10:00:00Z,SystmOne,Wrenfield Surgery\n";
    let file = format!(
        "{header}{good}{good2}{bad}",
        good2 = good.replace("imp-1", "imp-3")
    );
    let report = op
        .import(ImportFormat::Csv, false, file.as_bytes())
        .await
        .unwrap();
    assert_eq!(report.stored, 0);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].line, 4);
    assert!(
        !report.errors[0].reason.contains("9434765918"),
        "the reason leaks the identifier"
    );
    let after = match op.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => s.records,
        _ => panic!(),
    };
    assert_eq!(before, after);
    // The good rows alone import.
    let file = format!("{header}{good}");
    let report = op
        .import(ImportFormat::Csv, false, file.as_bytes())
        .await
        .unwrap();
    assert_eq!((report.stored, report.errors.len()), (1, 0));
    op.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_caseworker_cannot_import_and_an_operator_cannot_assemble() {
    let fed = federation().await;
    let cw = fed.client("nhs-wy", StaffRole::Caseworker).await.unwrap();
    let err = cw.import(ImportFormat::Csv, true, b"x").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let op = fed.client("nhs-wy", StaffRole::Operator).await.unwrap();
    let q = op.sign_query(
        PassportId::random(),
        None,
        Purpose::Resettlement,
        vec![],
        60,
    );
    let err = op.assemble(q, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    cw.close().await;
    op.close().await;
    fed.shutdown().await;
}
