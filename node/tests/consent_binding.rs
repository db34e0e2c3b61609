//! Consent bound to its person, tried as an adversarial caseworker with a valid key would: a
//! borrowed passport id, a withdrawal, a passport redirected to another person, identifier
//! probing and floods, a holder named twice, and unbounded validity. Each test asserts that
//! nothing was disclosed and that the refusal and its log entry are the right ones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeSet;

use common::*;
use throughgate_node::client::{ConsentPlan, HomeClient};
use throughgate_node::config::ConsentRules;
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::messages::{
    Ack, AckOutcome, AckSubject, AuditFilter, ErrorCode, HolderRequest, Outcome, RefusalReason,
    Response,
};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};
use throughgate_testkit::synth::{PersonGenerator, SynthConfig, SyntheticPerson};

/// Records `plan` as a caseworker of `agency`, waits for every delivery, and returns the
/// consent's id with each recipient's acknowledgement outcome.
async fn record_as(
    fed: &LocalFederation,
    agency: &str,
    plan: &ConsentPlan,
) -> (ConsentId, Vec<(String, AckOutcome)>) {
    let client = fed.client(agency, StaffRole::Caseworker).await.unwrap();
    let signed = client.sign_consent(plan);
    let id = signed.consent_id.clone();
    client.record_consent(signed).await.unwrap();
    wait_deliveries(&client, &id, AckSubject::Grant).await;
    let acks = acks(&client, &id, AckSubject::Grant).await;
    client.close().await;
    (id, acks)
}

async fn acks(
    client: &HomeClient,
    id: &ConsentId,
    subject: AckSubject,
) -> Vec<(String, AckOutcome)> {
    let (_, _, deliveries) = client.show_consent(id).await.unwrap();
    deliveries
        .iter()
        .filter(|d| d.subject == subject)
        .map(|d| {
            let ack: Ack = d.ack.as_ref().expect("acknowledged").open().unwrap();
            (d.agency.to_string(), ack.outcome)
        })
        .collect()
}

/// Someone the federation's agencies have never heard of: a person from another population.
fn outsider(fed: &LocalFederation) -> SyntheticPerson {
    let gen = PersonGenerator::new(&SynthConfig::new(77, 500, fed.reference_date()));
    (0..500)
        .map(|i| gen.person(i))
        .find(|p| {
            fed.nodes.iter().all(|n| {
                fed.population
                    .find(&p.identifier(n.agency.scheme))
                    .is_none()
            })
        })
        .expect("an outsider")
}

/// A plan for `person` under an existing `passport`, granted to `grantee`.
fn plan_for(
    fed: &LocalFederation,
    person: &SyntheticPerson,
    passport: &PassportId,
    grantee: &str,
) -> ConsentPlan {
    let mut p = plan(fed, person, 3600);
    p.passport_id = passport.clone();
    p.grantees = vec![agency(grantee)];
    p
}

/// Asks every holder for everything under `consent` as a caseworker of `requester`.
async fn ask_all(
    fed: &LocalFederation,
    requester: &str,
    passport: &PassportId,
    consent: &ConsentId,
) -> Vec<Response> {
    let client = fed.client(requester, StaffRole::Caseworker).await.unwrap();
    let requests = fed
        .nodes
        .iter()
        .filter(|n| !n.agency.categories.is_empty())
        .map(|n| HolderRequest {
            holder: n.id.clone(),
            categories: n.agency.categories.to_vec(),
        })
        .collect();
    let q = client.sign_query(
        passport.clone(),
        Some(consent.clone()),
        Purpose::Resettlement,
        requests,
        60,
    );
    let (_, results) = client.assemble(q, None).await.unwrap();
    client.close().await;
    results
        .into_iter()
        .filter_map(|r| r.response)
        .map(|e| e.open().unwrap())
        .collect()
}

/// The record ids `holder` holds about `person`.
fn record_ids(fed: &LocalFederation, holder: &str, person: &SyntheticPerson) -> BTreeSet<String> {
    let state = node_state(fed, holder);
    let scheme = fed.node(holder).unwrap().agency.scheme;
    state
        .db
        .records_of(&person.identifier(scheme).value, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| r.record_id.to_string())
        .collect()
}

fn disclosed(responses: &[Response]) -> usize {
    responses
        .iter()
        .filter(|r| r.outcome == Outcome::Disclosed || !r.records.is_empty())
        .count()
}

/// Audit entries of `agency`'s log about consent `id`, by event name.
async fn consent_events(fed: &LocalFederation, agency: &str, id: &ConsentId) -> Vec<AuditEvent> {
    let dpo = fed.client(agency, StaffRole::Dpo).await.unwrap();
    let (entries, _) = dpo
        .audit_search(AuditFilter {
            consent_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    dpo.close().await;
    entries.into_iter().map(|e| e.entry.event).collect()
}

#[tokio::test]
async fn a_borrowed_passport_id_discloses_nothing_even_after_the_real_consent_is_withdrawn() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let (real_plan, real) = granted_plan(&fed).await;
    let passport = real_plan.passport_id.clone();
    // The person's real passport works for probation.
    let honest = ask_all(&fed, "probation-yorks", &passport, &real).await;
    assert!(disclosed(&honest) > 0, "the genuine consent discloses");

    // A council caseworker records their own consent for the same passport id, as grantee,
    // with identifiers that match nobody.
    let stranger = outsider(&fed);
    let borrowed_plan = plan_for(&fed, &stranger, &passport, "leeds-cc");
    let (borrowed, acks) = record_as(&fed, "leeds-cc", &borrowed_plan).await;
    for (holder, outcome) in &acks {
        if fed.node(holder).unwrap().agency.categories.is_empty() {
            continue;
        }
        assert_eq!(*outcome, AckOutcome::NotHeld, "{holder} links nobody");
    }
    let responses = ask_all(&fed, "leeds-cc", &passport, &borrowed).await;
    assert_eq!(
        disclosed(&responses),
        0,
        "nothing under a borrowed passport id"
    );
    assert!(responses.iter().all(|r| r.outcome == Outcome::NotHeld));

    // The person withdraws their real consent; the borrowed one still discloses nothing, and
    // the real one is refused as withdrawn.
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    prison.revoke_consent(&real, "withdrawn").await.unwrap();
    wait_deliveries(&prison, &real, AckSubject::Revoke).await;
    prison.close().await;
    let after = ask_all(&fed, "leeds-cc", &passport, &borrowed).await;
    assert_eq!(disclosed(&after), 0);
    let real_after = ask_all(&fed, "probation-yorks", &passport, &real).await;
    assert_eq!(disclosed(&real_after), 0);
    assert!(real_after
        .iter()
        .all(|r| r.reason == Some(RefusalReason::ConsentRevoked)));

    // Every holder logged the borrowed consent as linking nobody, naming who recorded it, and
    // a DPO can list such recordings.
    let events = consent_events(&fed, "nhs-wy", &borrowed).await;
    let recorder = borrowed_plan_recorder(&fed).await;
    assert!(events.iter().any(|e| matches!(e,
        AuditEvent::ConsentRegistered(c)
            if c.linkage == Some(AckOutcome::NotHeld) && c.person.as_ref() == Some(&recorder))));
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let (unlinked, _) = dpo
        .audit_search(AuditFilter {
            linkage: Some(AckOutcome::NotHeld),
            ..Default::default()
        })
        .await
        .unwrap();
    dpo.close().await;
    assert!(unlinked.iter().any(|e| matches!(&e.entry.event,
        AuditEvent::ConsentRegistered(c) if c.consent_id == borrowed)));
    assert!(unlinked.iter().all(|e| matches!(&e.entry.event,
        AuditEvent::ConsentRegistered(c) if c.linkage == Some(AckOutcome::NotHeld))));
    let _ = person;
}

/// The person id of the council caseworker the federation hands out.
async fn borrowed_plan_recorder(fed: &LocalFederation) -> throughgate_protocol::ids::PersonId {
    let c = fed.client("leeds-cc", StaffRole::Caseworker).await.unwrap();
    let id = c.credential().person_id.clone();
    c.close().await;
    id
}

#[tokio::test]
async fn a_passport_cannot_be_redirected_to_another_person() {
    let fed = federation().await;
    let a = person_known_to(&fed, &ALL);
    let b = fed
        .population
        .people
        .iter()
        .find(|p| p.index != a.index && fed.nodes.iter().all(|n| p.is_known_to(n.agency)))
        .expect("a second person known everywhere");
    let (real_plan, real) = granted_plan(&fed).await;
    let passport = real_plan.passport_id.clone();

    // A consent for the same passport id carrying the second person's identifiers.
    let redirect_plan = plan_for(&fed, b, &passport, "probation-yorks");
    let (redirect, acks) = record_as(&fed, "leeds-cc", &redirect_plan).await;
    let nhs_ack = acks.iter().find(|(h, _)| h == "nhs-wy").unwrap().1;
    assert_eq!(nhs_ack, AckOutcome::SubjectMismatch);

    // The honest caseworker's client does not silently pick either consent: it names both and
    // asks the caseworker to choose.
    let probation = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let err = probation.consent_for(&passport, None).await.unwrap_err();
    probation.close().await;
    let msg = err.to_string();
    assert!(
        msg.contains(real.as_str()) && msg.contains(redirect.as_str()) && msg.contains("--consent"),
        "{msg}"
    );

    // The honest caseworker's next passport, under the genuine consent, is the first
    // person's, and only theirs.
    let honest = ask_all(&fed, "probation-yorks", &passport, &real).await;
    let nhs = honest
        .iter()
        .find(|r| r.holder.as_str() == "nhs-wy")
        .unwrap();
    assert_eq!(nhs.outcome, Outcome::Disclosed);
    let got: BTreeSet<String> = nhs
        .records
        .iter()
        .map(|r| r.record_id.to_string())
        .collect();
    let a_ids = record_ids(&fed, "nhs-wy", a);
    let b_ids = record_ids(&fed, "nhs-wy", b);
    assert!(
        !got.is_empty() && got.is_subset(&a_ids),
        "only the first person's records"
    );
    assert!(got.is_disjoint(&b_ids), "none of the second person's");

    // The redirecting consent discloses nothing, with its own reason, and the holder logged it.
    let under_redirect = ask_all(&fed, "probation-yorks", &passport, &redirect).await;
    assert_eq!(disclosed(&under_redirect), 0);
    let nhs = under_redirect
        .iter()
        .find(|r| r.holder.as_str() == "nhs-wy")
        .unwrap();
    assert_eq!(nhs.reason, Some(RefusalReason::SubjectMismatch));
    let events = consent_events(&fed, "nhs-wy", &redirect).await;
    assert!(events.iter().any(|e| matches!(e,
        AuditEvent::ConsentRegistered(c) if c.linkage == Some(AckOutcome::SubjectMismatch))));
    // And it is among the DPO's alarms there.
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let status = dpo.audit_checkpoints().await.unwrap();
    dpo.close().await;
    assert!(status.consent_alarms >= 1, "{status:?}");
}

#[tokio::test]
async fn consent_recording_is_rate_limited_per_caseworker_and_refusals_are_logged() {
    let fed = LocalFederation::start(FedOptions {
        people: 30,
        agencies: vec!["hmp-leeds", "nhs-wy", "probation-yorks"],
        consent: ConsentRules {
            recordings_per_caseworker_per_hour: 3,
            ..ConsentRules::default()
        },
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let person = person_known_to(&fed, &["hmp-leeds", "nhs-wy", "probation-yorks"]);
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let mut refused = 0;
    let mut stored = 0;
    for _ in 0..6 {
        let mut p = plan(&fed, person, 3600);
        p.grantees = vec![agency("probation-yorks")];
        match prison.record_consent(prison.sign_consent(&p)).await {
            Ok(_) => stored += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::RateLimited), "{e}");
                refused += 1;
            }
        }
    }
    prison.close().await;
    assert_eq!((stored, refused), (3, 3));
    let dpo = fed.client("hmp-leeds", StaffRole::Dpo).await.unwrap();
    let (entries, _) = dpo
        .audit_search(AuditFilter {
            event: Some("admin".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let consents = dpo
        .call(throughgate_protocol::messages::ClientOp::ListConsents(
            Default::default(),
        ))
        .await
        .unwrap();
    dpo.close().await;
    let limited: Vec<_> = entries
        .iter()
        .filter(|e| {
            matches!(&e.entry.event,
            AuditEvent::Admin { action, .. } if action == "consent_recording_rate_limited")
        })
        .collect();
    assert_eq!(limited.len(), 1, "one log entry for a burst of refusals");
    match consents {
        throughgate_protocol::messages::ClientResponse::Consents(l) => assert_eq!(l.len(), 3),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_query_naming_a_holder_twice_is_refused_before_anything_is_asked() {
    let fed = federation().await;
    let (p, c) = granted_plan(&fed).await;
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let one = HolderRequest {
        holder: agency("nhs-wy"),
        categories: vec![Category::Health],
    };
    let q = client.sign_query(
        p.passport_id.clone(),
        Some(c),
        Purpose::Resettlement,
        vec![one; 64],
        60,
    );
    let err = client.assemble(q, None).await.unwrap_err();
    client.close().await;
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("more than once"), "{err}");
    // The holder saw nothing: no decision about this passport in its log.
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let (entries, _) = dpo
        .audit_search(AuditFilter {
            passport_id: Some(p.passport_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    dpo.close().await;
    assert!(entries
        .iter()
        .all(|e| !matches!(e.entry.event, AuditEvent::Decision(_))));
}

#[tokio::test]
async fn a_consent_longer_than_the_agency_allows_is_refused_and_stores_nothing() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let mut long = plan(&fed, person, 401 * 86_400);
    long.grantees = vec![agency("probation-yorks")];
    let err = prison
        .record_consent(prison.sign_consent(&long))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("at most 400 days"), "{err}");
    // Past the protocol's ceiling (or overflowing), refused by the artefact's own check.
    let mut forever = plan(&fed, person, 3600);
    forever.valid_until = throughgate_protocol::time::Timestamp(u64::MAX);
    let err = prison
        .record_consent(prison.sign_consent(&forever))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("3650 days"), "{err}");
    let listed = prison.consents_of(&long.passport_id).await.unwrap();
    assert!(listed.is_empty());
    assert!(prison
        .consents_of(&forever.passport_id)
        .await
        .unwrap()
        .is_empty());
    // At exactly the limit it is recorded.
    let mut max = plan(&fed, person, 400 * 86_400);
    max.grantees = vec![agency("probation-yorks")];
    prison
        .record_consent(prison.sign_consent(&max))
        .await
        .unwrap();
    prison.close().await;
}

#[tokio::test]
async fn withdrawing_every_consent_for_a_passport_stops_every_disclosure() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let (first_plan, first) = granted_plan(&fed).await;
    let passport = first_plan.passport_id.clone();
    // A second, separate consent for the same person recorded at the same agency, and a
    // follow-up that supersedes the first.
    let mut second = plan_for(&fed, person, &passport, "probation-yorks");
    second.purpose = Purpose::Resettlement;
    let (second_id, _) = record_as(&fed, "hmp-leeds", &second).await;
    let mut follow = plan_for(&fed, person, &passport, "probation-yorks");
    follow.supersedes = Some(first.clone());
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let signed = prison.sign_consent(&follow);
    let follow_id = signed.consent_id.clone();
    prison.record_consent(signed).await.unwrap();
    wait_deliveries(&prison, &follow_id, AckSubject::Grant).await;
    assert!(disclosed(&ask_all(&fed, "probation-yorks", &passport, &follow_id).await) > 0);

    let done = prison
        .revoke_all(&passport, "withdrawn by the person")
        .await
        .unwrap();
    let withdrawn: BTreeSet<_> = done.revoked.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        withdrawn,
        BTreeSet::from([first.clone(), second_id.clone(), follow_id.clone()]),
        "every consent not yet withdrawn, the superseded first one included"
    );
    assert!(done.elsewhere.is_empty());
    for id in &withdrawn {
        wait_deliveries(&prison, id, AckSubject::Revoke).await;
    }
    prison.close().await;
    for id in [&first, &second_id, &follow_id] {
        let r = ask_all(&fed, "probation-yorks", &passport, id).await;
        assert_eq!(disclosed(&r), 0, "nothing under {id}");
    }
    // The caseworker's client reports the withdrawal rather than asking anyone.
    let probation = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let ended = probation.ended_consent(&passport).await.unwrap().unwrap();
    probation.close().await;
    assert_eq!(
        ended.status,
        throughgate_protocol::consent::ConsentStatus::Revoked
    );
    assert!(ended.revoked_by.is_some());
}
