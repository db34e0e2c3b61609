//! Consent's whole lifecycle across real nodes: every refusal reason, delivery to a node that
//! was down, races with revocation, restarts of the recording node, minimisation by policy,
//! supersession and follow-up grants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeSet;

use common::*;
use throughgate_node::client::ConsentPlan;
use throughgate_node::policy::Policy;
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::ConsentStatus;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::messages::{
    AckSubject, AuditFilter, DeliveryState, HolderRequest, Outcome, RefusalReason, Response,
};
use throughgate_protocol::time::Date;
use throughgate_testkit::localfed::{demo_policy_text, LocalFederation};

/// Sends one query from `requester`'s caseworker and returns each holder's decoded response.
async fn ask(
    fed: &LocalFederation,
    requester: &str,
    passport: &PassportId,
    consent: Option<ConsentId>,
    purpose: Purpose,
    requests: Vec<HolderRequest>,
) -> Vec<Response> {
    let client = fed.client(requester, StaffRole::Caseworker).await.unwrap();
    let q = client.sign_query(passport.clone(), consent, purpose, requests, 60);
    let (_, results) = client.assemble(q, None).await.unwrap();
    client.close().await;
    results
        .into_iter()
        .map(|r| r.response.expect("answered").open().unwrap())
        .collect()
}

fn req(holder: &str, cats: &[Category]) -> Vec<HolderRequest> {
    vec![HolderRequest {
        holder: agency(holder),
        categories: cats.to_vec(),
    }]
}

async fn one_reason(
    fed: &LocalFederation,
    passport: &PassportId,
    consent: &ConsentId,
    holder: &str,
    cats: &[Category],
) -> (Outcome, Option<RefusalReason>) {
    let r = &ask(
        fed,
        "probation-yorks",
        passport,
        Some(consent.clone()),
        Purpose::Resettlement,
        req(holder, cats),
    )
    .await[0];
    (r.outcome, r.reason)
}

#[tokio::test]
async fn the_remaining_refusal_reasons_each_have_their_cause() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    // Not yet valid.
    let mut p = plan(&fed, person, 3600);
    p.valid_from = fed.now().plus_secs(600);
    p.valid_until = fed.now().plus_secs(3600);
    let c = grant(&fed, &p).await;
    assert_eq!(
        one_reason(&fed, &p.passport_id, &c, "nhs-wy", &[Category::Health]).await,
        (Outcome::Refused, Some(RefusalReason::ConsentNotYetValid))
    );
    // Passport mismatch: a valid consent used for another person.
    let p = plan(&fed, person, 3600);
    let c = grant(&fed, &p).await;
    assert_eq!(
        one_reason(
            &fed,
            &PassportId::random(),
            &c,
            "nhs-wy",
            &[Category::Health]
        )
        .await,
        (
            Outcome::Refused,
            Some(RefusalReason::ConsentPassportMismatch)
        )
    );
    // Holder not covered: the consent leaves DWP out (DWP still holds it as... nothing: it was
    // never sent), so ask a holder named nowhere: use a consent naming only the prison.
    let mut narrow = plan(&fed, person, 3600);
    narrow
        .holders
        .retain(|h| h.0.as_str() == "hmp-leeds" || h.0.as_str() == "nhs-wy");
    narrow.grantees = vec![agency("probation-yorks"), agency("dwp")];
    let c = grant(&fed, &narrow).await;
    // DWP is a grantee (so it holds the consent) but not a holder under it.
    let r = &ask(
        &fed,
        "probation-yorks",
        &narrow.passport_id,
        Some(c.clone()),
        Purpose::Resettlement,
        req("dwp", &[Category::FinanceAndId]),
    )
    .await[0];
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Refused, Some(RefusalReason::HolderNotCovered))
    );
    // Not addressed: a query that asks the holder for nothing.
    let r = &ask(
        &fed,
        "probation-yorks",
        &narrow.passport_id,
        Some(c.clone()),
        Purpose::Resettlement,
        req("nhs-wy", &[]),
    )
    .await[0];
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Refused, Some(RefusalReason::NotAddressed))
    );
    // Policy withholds all: the council may not receive the prison's records for safeguarding
    // under a safeguarding consent (the prison's policy has no safeguarding rule).
    let mut sg = plan(&fed, person, 3600);
    sg.purpose = Purpose::Safeguarding;
    let c = grant(&fed, &sg).await;
    let r = &ask(
        &fed,
        "leeds-cc",
        &sg.passport_id,
        Some(c),
        Purpose::Safeguarding,
        req("hmp-leeds", &[Category::FinanceAndId]),
    )
    .await[0];
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Refused, Some(RefusalReason::PolicyWithholdsAll))
    );
    assert!(r.records.is_empty());
    fed.shutdown().await;
}

#[tokio::test]
async fn records_outside_the_consented_period_are_withheld_and_counted() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let mut p = plan(&fed, person, 3600);
    // Only records about the last 30 days.
    p.records_from = Some(fed.reference_date().add_days(-30));
    let c = grant(&fed, &p).await;
    let all = ask(
        &fed,
        "probation-yorks",
        &p.passport_id,
        Some(c),
        Purpose::Resettlement,
        throughgate_node::client::requests_under(&fed_consent(&fed, &p).await, &[]),
    )
    .await;
    let from = fed.reference_date().add_days(-30);
    let mut withheld = 0;
    for r in &all {
        for rec in &r.records {
            assert!(
                rec.about >= from,
                "{} disclosed a record about {}",
                r.holder,
                rec.about
            );
        }
        withheld += r.withheld.records_out_of_period;
    }
    assert!(
        withheld > 0,
        "no record fell outside the period; the test proves nothing"
    );
    fed.shutdown().await;
}

async fn fed_consent(
    fed: &LocalFederation,
    p: &ConsentPlan,
) -> throughgate_protocol::consent::Consent {
    let c = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let consent = c.consent_for(&p.passport_id, None).await.unwrap().unwrap();
    c.close().await;
    consent
}

#[tokio::test]
async fn a_revocation_reaches_a_holder_that_was_down_and_takes_effect_from_then() {
    let mut fed = federation().await;
    let person = person_known_to(&fed, &ALL).clone();
    let p = plan(&fed, &person, 3600);
    let c = grant(&fed, &p).await;
    fed.stop("nhs-wy").await;
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    prison
        .revoke_consent(&c, "withdrawn by the person")
        .await
        .unwrap();
    // Everyone else applies it; the health node cannot have yet.
    let (_, _, deliveries) = prison.show_consent(&c).await.unwrap();
    let pending: Vec<_> = deliveries
        .iter()
        .filter(|d| d.subject == AckSubject::Revoke && d.state == DeliveryState::Pending)
        .map(|d| d.agency.to_string())
        .collect();
    assert!(pending.contains(&"nhs-wy".to_owned()));
    fed.restart("nhs-wy").await.unwrap();
    // Make the retry due now rather than after its backoff, and wake the outbox.
    fed.clock.advance(60);
    node_state(&fed, "hmp-leeds").outbox_wake.notify_one();
    wait_deliveries(&prison, &c, AckSubject::Revoke).await;
    prison.close().await;
    assert_eq!(
        one_reason(&fed, &p.passport_id, &c, "nhs-wy", &[Category::Health]).await,
        (Outcome::Refused, Some(RefusalReason::ConsentRevoked))
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_query_raced_against_revocation_is_answered_under_the_state_the_holder_logged() {
    let fed = federation().await;
    let (p, c) = granted_plan(&fed).await;
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let queries: Vec<_> = (0..12)
        .map(|_| {
            cw.sign_query(
                p.passport_id.clone(),
                Some(c.clone()),
                Purpose::Resettlement,
                req("nhs-wy", &[Category::Health]),
                60,
            )
        })
        .collect();
    let (answers, _) = tokio::join!(
        futures::future::join_all(queries.into_iter().map(|q| cw.assemble(q, None))),
        async {
            tokio::task::yield_now().await;
            prison.revoke_consent(&c, "withdrawn").await.unwrap();
            wait_deliveries(&prison, &c, AckSubject::Revoke).await;
        }
    );
    // The holder's log orders every decision against the revocation.
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let (entries, _) = dpo
        .audit_search(AuditFilter {
            passport_id: Some(p.passport_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let revoked_at = entries
        .iter()
        .find(|e| matches!(e.entry.event, AuditEvent::ConsentRevoked(_)))
        .map(|e| e.index)
        .expect("revocation logged");
    let mut seen = BTreeSet::new();
    for a in answers {
        let (_, results) = a.unwrap();
        let r: Response = results[0].response.as_ref().unwrap().open().unwrap();
        let logged = entries
            .iter()
            .find(|e| matches!(&e.entry.event, AuditEvent::Decision(d) if d.query_id == r.query_id))
            .expect("every decision is logged");
        match (r.outcome, r.reason) {
            (Outcome::Disclosed, None) => assert!(
                logged.index < revoked_at,
                "disclosed after the revocation was applied"
            ),
            (Outcome::Refused, Some(RefusalReason::ConsentRevoked)) => {
                assert!(logged.index > revoked_at)
            }
            other => panic!("unexpected answer {other:?}"),
        }
        let AuditEvent::Decision(d) = &logged.entry.event else {
            unreachable!()
        };
        assert_eq!(
            d.consent_id.as_ref(),
            Some(&c),
            "the log names the consent relied on"
        );
        seen.insert(r.outcome.as_str());
    }
    for x in [cw, prison, dpo] {
        x.close().await;
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn the_outbox_survives_a_restart_of_the_recording_node() {
    let mut fed = federation().await;
    let person = person_known_to(&fed, &ALL).clone();
    fed.stop("dwp").await;
    let p = plan(&fed, &person, 3600);
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let signed = prison.sign_consent(&p);
    let c = signed.consent_id.clone();
    prison.record_consent(signed).await.unwrap();
    prison.close().await;
    // Restart the recording node with the DWP delivery still pending.
    fed.stop("hmp-leeds").await;
    fed.restart("hmp-leeds").await.unwrap();
    fed.restart("dwp").await.unwrap();
    fed.clock.advance(60);
    node_state(&fed, "hmp-leeds").outbox_wake.notify_one();
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    wait_deliveries(&prison, &c, AckSubject::Grant).await;
    let (_, _, deliveries) = prison.show_consent(&c).await.unwrap();
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered),
        "{deliveries:?}"
    );
    prison.close().await;
    let r = &ask(
        &fed,
        "probation-yorks",
        &p.passport_id,
        Some(c),
        Purpose::Resettlement,
        req("dwp", &[Category::FinanceAndId]),
    )
    .await[0];
    assert_eq!(r.outcome, Outcome::Disclosed);
    fed.shutdown().await;
}

#[tokio::test]
async fn no_field_outside_policy_ever_leaves_any_holder_and_risk_stays_in_justice() {
    let fed = federation().await;
    let people: Vec<_> = fed
        .population
        .people
        .iter()
        .filter(|p| fed.nodes.iter().all(|n| p.is_known_to(n.agency)))
        .take(3)
        .cloned()
        .collect();
    assert!(people.len() >= 2);
    for person in &people {
        let mut p = plan(&fed, person, 3600);
        // The person also agrees to share risk (probation's, justice-only by policy).
        for h in &mut p.holders {
            h.2 = fed.node(h.0.as_str()).unwrap().agency.categories.to_vec();
        }
        grant(&fed, &p).await;
        for requester in ["probation-yorks", "leeds-cc"] {
            let consent = {
                let c = fed
                    .client("probation-yorks", StaffRole::Caseworker)
                    .await
                    .unwrap();
                let x = c.consent_for(&p.passport_id, None).await.unwrap().unwrap();
                c.close().await;
                x
            };
            let requests = throughgate_node::client::requests_under(&consent, &[]);
            let answers = ask(
                &fed,
                requester,
                &p.passport_id,
                Some(consent.consent_id.clone()),
                Purpose::Resettlement,
                requests,
            )
            .await;
            let member = fed
                .manifest_body
                .member(&agency(requester))
                .unwrap()
                .clone();
            for r in &answers {
                let policy = Policy::parse(demo_policy_text(r.holder.as_str()).unwrap()).unwrap();
                let release = policy.release_for(Purpose::Resettlement, &member);
                for rec in &r.records {
                    assert!(
                        release.categories.contains(&rec.category),
                        "{} released {} to {requester}",
                        r.holder,
                        rec.category
                    );
                    let allowed = release.fields.get(&rec.kind).unwrap_or_else(|| {
                        panic!("{} released kind {} to {requester}", r.holder, rec.kind)
                    });
                    for f in rec.fields.keys() {
                        assert!(
                            allowed.contains(f),
                            "{} released {}.{f} to {requester}",
                            r.holder,
                            rec.kind
                        );
                    }
                    if requester == "leeds-cc" {
                        assert_ne!(rec.category, Category::Risk, "risk reached the council");
                    }
                }
                if requester == "leeds-cc" && r.holder.as_str() == "probation-yorks" {
                    assert!(
                        r.withheld.categories.contains(&Category::Risk),
                        "withholding risk is not reported"
                    );
                }
                if requester == "probation-yorks" && r.holder.as_str() == "probation-yorks" {
                    assert!(
                        r.records.iter().any(|x| x.category == Category::Risk),
                        "risk should reach probation (justice)"
                    );
                }
            }
        }
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn supersession_narrows_a_consent_and_keeps_its_history() {
    let fed = federation().await;
    let person = person_known_to(&fed, &ALL);
    let p1 = plan(&fed, person, 3600);
    let c1 = grant(&fed, &p1).await;
    // The person narrows their consent: health only, from the NHS only.
    let mut p2 = p1.clone();
    p2.holders.retain(|h| h.0.as_str() == "nhs-wy");
    p2.holders[0].2 = vec![Category::Health];
    p2.supersedes = Some(c1.clone());
    let c2 = grant(&fed, &p2).await;
    // The old one is superseded everywhere it was stored, and still there.
    for n in ["hmp-leeds", "nhs-wy", "probation-yorks"] {
        let s = node_state(&fed, n).db.consent(&c1).unwrap().unwrap();
        assert_eq!(s.status, ConsentStatus::Superseded, "{n}");
        assert_eq!(s.superseded_by.as_ref(), Some(&c2));
    }
    assert_eq!(
        one_reason(&fed, &p1.passport_id, &c1, "nhs-wy", &[Category::Health]).await,
        (Outcome::Refused, Some(RefusalReason::ConsentSuperseded))
    );
    // Agencies the narrowed consent leaves out received the old one's revocation: they refuse
    // too, rather than keep answering under it.
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    wait_deliveries(&prison, &c1, AckSubject::Revoke).await;
    prison.close().await;
    for dropped in ["dwp", "leeds-college"] {
        let cats = fed.node(dropped).unwrap().agency.categories.to_vec();
        assert_eq!(
            one_reason(&fed, &p1.passport_id, &c1, dropped, &cats).await,
            (Outcome::Refused, Some(RefusalReason::ConsentRevoked)),
            "{dropped}"
        );
    }
    assert_eq!(
        one_reason(&fed, &p1.passport_id, &c2, "nhs-wy", &[Category::Health])
            .await
            .0,
        Outcome::Disclosed
    );
    assert_eq!(
        one_reason(
            &fed,
            &p1.passport_id,
            &c2,
            "nhs-wy",
            &[Category::DrugsAndAlcohol]
        )
        .await,
        (Outcome::Refused, Some(RefusalReason::CategoryNotCovered))
    );
    // The register lists both, and the log records the supersession.
    let dpo = fed.client("hmp-leeds", StaffRole::Dpo).await.unwrap();
    let filter = throughgate_protocol::messages::ConsentFilter {
        passport_id: Some(p1.passport_id.clone()),
        ..Default::default()
    };
    let list = match dpo
        .call(throughgate_protocol::messages::ClientOp::ListConsents(
            filter,
        ))
        .await
        .unwrap()
    {
        throughgate_protocol::messages::ClientResponse::Consents(l) => l,
        _ => panic!(),
    };
    let statuses: BTreeSet<_> = list
        .iter()
        .map(|c| (c.consent_id.to_string(), c.status.as_str()))
        .collect();
    assert!(statuses.contains(&(c1.to_string(), "superseded")));
    assert!(statuses.contains(&(c2.to_string(), "active")));
    let (entries, _) = dpo
        .audit_search(AuditFilter {
            event: Some("consent_superseded".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    dpo.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_person_enrolled_later_at_a_holder_is_linked_by_a_follow_up_grant() {
    let fed = federation().await;
    let college = fed.node("leeds-college").unwrap().agency;
    let person = fed
        .population
        .people
        .iter()
        .find(|p| !p.is_known_to(college))
        .unwrap();
    let p1 = plan(&fed, person, 3600);
    let c1 = grant(&fed, &p1).await;
    assert_eq!(
        one_reason(
            &fed,
            &p1.passport_id,
            &c1,
            "leeds-college",
            &[Category::EducationSkillsAndWork]
        )
        .await
        .0,
        Outcome::NotHeld
    );
    // The person enrols at the college; the college imports their record.
    let uln = person.identifier(college.scheme).value;
    let op = fed
        .client("leeds-college", StaffRole::Operator)
        .await
        .unwrap();
    let csv = format!(
        "record_id,subject,category,kind,about,recorded_at,source_system,field.course,field.status\nlate-1,{uln},education_skills_and_work,course_enrolment,{d},{d}T09:00:00Z,College MIS,Functional Skills Maths,enrolled\n",
        d = Date::parse(&fed.reference_date().to_string()).unwrap()
    );
    let report = op
        .import(
            throughgate_protocol::messages::ImportFormat::Csv,
            false,
            csv.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(report.stored, 1, "{report:?}");
    op.close().await;
    // A follow-up grant (same terms, superseding the first) links the person there.
    let mut p2 = p1.clone();
    p2.supersedes = Some(c1.clone());
    let c2 = grant(&fed, &p2).await;
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let (_, _, deliveries) = prison.show_consent(&c2).await.unwrap();
    let ack = deliveries
        .iter()
        .find(|d| d.agency.as_str() == "leeds-college")
        .unwrap()
        .ack
        .as_ref()
        .unwrap();
    let ack: throughgate_protocol::messages::Ack = ack.open().unwrap();
    assert_eq!(
        ack.outcome,
        throughgate_protocol::messages::AckOutcome::Linked
    );
    prison.close().await;
    let r = &ask(
        &fed,
        "probation-yorks",
        &p1.passport_id,
        Some(c2),
        Purpose::Resettlement,
        req("leeds-college", &[Category::EducationSkillsAndWork]),
    )
    .await[0];
    assert_eq!(r.outcome, Outcome::Disclosed);
    assert_eq!(r.records.len(), 1);
    fed.shutdown().await;
}
