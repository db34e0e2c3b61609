//! Withdrawal escaped through the order-independence markers, tried as a compromised member
//! node would: a holder keeps one pending revocation (`crp/`) and one "superseded by" marker
//! (`csb/`) per consent id, whoever sent them. Another agency's node overwrites the genuine
//! marker with one of its own (which the holder then ignores as not from the recording
//! agency), so the withdrawn or superseded consent is stored active when it finally arrives
//! and discloses.
//!
//! The deliveries are handed to the holder's handlers directly, in the order a delayed
//! outbox could produce, each signed exactly as the sending node would sign it.
//!
//! Also: a caseworker's client choosing, without being asked, a consent another agency recorded
//! for the passport after the person's own consent was withdrawn.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_node::client::SignedConsent;
use throughgate_node::peer::consent_in::ConsentIn;
use throughgate_protocol::category::Purpose;
use throughgate_protocol::consent::{ConsentGrant, ConsentRevocation, ConsentStatus};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::messages::{
    Ack, AckOutcome, AckSubject, HolderRequest, Outcome, RefusalReason, Response,
};
use throughgate_testkit::localfed::LocalFederation;

const NHS: &str = "nhs-wy";

/// `signed` as its recording node delivers it to `to`: countersigned, with `to`'s identifier.
fn grant_to(fed: &LocalFederation, recorder: &str, signed: &SignedConsent, to: &str) -> Envelope {
    let st = node_state(fed, recorder);
    let mut consent = signed.envelope.clone();
    consent.add_signature(SignerRole::Node, &st.key.current());
    let s = signed.subjects.iter().find(|s| s.agency.as_str() == to);
    st.key.seal(&ConsentGrant {
        consent,
        recipient: agency(to),
        subject: s.map(|s| s.identifier.clone()),
        salt: s.map(|s| s.salt),
    })
}

/// A revocation of `id` signed by a caseworker of `revoker` and countersigned by its node.
fn revocation_by(
    fed: &LocalFederation,
    revoker: &str,
    id: &ConsentId,
    passport: &PassportId,
) -> Envelope {
    let staff = &fed.node(revoker).unwrap().staff[&StaffRole::Caseworker];
    let cred: Credential = staff.credential.open().unwrap();
    let rev = ConsentRevocation {
        consent_id: id.clone(),
        passport_id: passport.clone(),
        revoked_by: agency(revoker),
        revoked_by_person: cred.person_id,
        revoked_at: fed.now(),
        reason: "withdrawn by the person".into(),
        credential: staff.credential.clone(),
    };
    let mut env = Envelope::seal(&rev, &[(SignerRole::Person, &staff.key)]);
    env.add_signature(SignerRole::Node, &node_state(fed, revoker).key.current());
    env
}

async fn deliver_grant(fed: &LocalFederation, from: &str, to: &str, env: &Envelope) -> AckOutcome {
    let st = node_state(fed, to);
    let reply =
        throughgate_node::peer::consent_in::grant(&ConsentIn::of(&st), &agency(from), env).await;
    let ack: Ack = reply.open().expect("an acknowledgement");
    ack.outcome
}

async fn deliver_revocation(fed: &LocalFederation, from: &str, to: &str, env: &Envelope) {
    let st = node_state(fed, to);
    let reply =
        throughgate_node::peer::consent_in::revoke(&ConsentIn::of(&st), &agency(from), env).await;
    let ack: Ack = reply.open().expect("an acknowledgement");
    assert_eq!(ack.outcome, AckOutcome::Revoked, "{:?}", ack.reason);
}

/// Asks the NHS, as probation, for everything under `consent`.
async fn ask_nhs(fed: &LocalFederation, passport: &PassportId, consent: &ConsentId) -> Response {
    ask(fed, NHS, passport, consent).await
}

/// Asks `holder`, as probation, for everything under `consent`.
async fn ask(
    fed: &LocalFederation,
    holder: &str,
    passport: &PassportId,
    consent: &ConsentId,
) -> Response {
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let nhs = fed.node(holder).unwrap();
    let q = client.sign_query(
        passport.clone(),
        Some(consent.clone()),
        Purpose::Resettlement,
        vec![HolderRequest {
            holder: nhs.id.clone(),
            categories: nhs.agency.categories.to_vec(),
        }],
        60,
    );
    let (_, results) = client.assemble(q, None).await.unwrap();
    client.close().await;
    results
        .into_iter()
        .find_map(|r| r.response)
        .expect("the holder answered")
        .open()
        .unwrap()
}

/// A prison consent for a person the NHS and the prison know, naming only the NHS as holder,
/// granted to probation.
async fn prison_consent(
    fed: &LocalFederation,
    passport: &PassportId,
    supersedes: Option<&ConsentId>,
) -> SignedConsent {
    let person = person_known_to(fed, &["hmp-leeds", NHS]);
    let mut p = plan(fed, person, 3600);
    p.passport_id = passport.clone();
    p.holders.retain(|(a, _, _)| a.as_str() == NHS);
    p.grantees = vec![agency("probation-yorks")];
    p.supersedes = supersedes.cloned();
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let signed = prison.sign_consent(&p);
    prison.close().await;
    signed
}

#[tokio::test]
async fn another_agencys_revocation_cannot_replace_a_pending_withdrawal() {
    let fed = federation().await;
    let pp = PassportId::random();
    let v = prison_consent(&fed, &pp, None).await;
    // Probation (the grantee, the querying home node) has the consent.
    assert_eq!(
        deliver_grant(
            &fed,
            "hmp-leeds",
            "probation-yorks",
            &grant_to(&fed, "hmp-leeds", &v, "probation-yorks")
        )
        .await,
        AckOutcome::Stored
    );
    // The person withdraws before the grant reaches the NHS: the withdrawal waits there.
    let withdrawal = revocation_by(&fed, "hmp-leeds", &v.consent_id, &pp);
    deliver_revocation(&fed, "hmp-leeds", NHS, &withdrawal).await;
    // A compromised council node sends its own "revocation" of the same consent id.
    let forged = revocation_by(&fed, "leeds-cc", &v.consent_id, &pp);
    deliver_revocation(&fed, "leeds-cc", NHS, &forged).await;
    // The grant finally arrives at the NHS.
    deliver_grant(
        &fed,
        "hmp-leeds",
        NHS,
        &grant_to(&fed, "hmp-leeds", &v, NHS),
    )
    .await;

    let nhs = node_state(&fed, NHS);
    let stored = nhs.db.consent(&v.consent_id).unwrap().unwrap();
    let r = ask_nhs(&fed, &pp, &v.consent_id).await;
    assert!(
        r.records.is_empty() && r.outcome != Outcome::Disclosed,
        "disclosed {} records under a withdrawn consent (stored {:?} at the NHS)",
        r.records.len(),
        stored.status
    );
    assert_eq!(stored.status, ConsentStatus::Revoked);
    assert_eq!(r.reason, Some(RefusalReason::ConsentRevoked));
    fed.shutdown().await;
}

#[tokio::test]
async fn another_agencys_consent_cannot_unmark_a_supersession_so_the_old_consent_survives_withdrawal(
) {
    let fed = federation().await;
    let pp = PassportId::random();
    let old = prison_consent(&fed, &pp, None).await;
    let new = prison_consent(&fed, &pp, Some(&old.consent_id)).await;
    for c in [&old, &new] {
        deliver_grant(
            &fed,
            "hmp-leeds",
            "probation-yorks",
            &grant_to(&fed, "hmp-leeds", c, "probation-yorks"),
        )
        .await;
    }
    // The superseding consent reaches the NHS first: it remembers that `old` is replaced.
    assert_eq!(
        deliver_grant(
            &fed,
            "hmp-leeds",
            NHS,
            &grant_to(&fed, "hmp-leeds", &new, NHS)
        )
        .await,
        AckOutcome::Linked
    );
    // A compromised council node delivers a consent of its own claiming to supersede `old`.
    let person = person_known_to(&fed, &["hmp-leeds", NHS]);
    let mut p = plan(&fed, person, 3600);
    p.passport_id = PassportId::random();
    p.holders.retain(|(a, _, _)| a.as_str() == NHS);
    p.grantees = vec![agency("leeds-cc")];
    p.supersedes = Some(old.consent_id.clone());
    let council = fed.client("leeds-cc", StaffRole::Caseworker).await.unwrap();
    let evil = council.sign_consent(&p);
    council.close().await;
    deliver_grant(
        &fed,
        "leeds-cc",
        NHS,
        &grant_to(&fed, "leeds-cc", &evil, NHS),
    )
    .await;
    // The old consent arrives late, then the person withdraws the new one.
    deliver_grant(
        &fed,
        "hmp-leeds",
        NHS,
        &grant_to(&fed, "hmp-leeds", &old, NHS),
    )
    .await;
    let withdrawal = revocation_by(&fed, "hmp-leeds", &new.consent_id, &pp);
    deliver_revocation(&fed, "hmp-leeds", NHS, &withdrawal).await;

    let nhs = node_state(&fed, NHS);
    let stored = nhs.db.consent(&old.consent_id).unwrap().unwrap();
    let r = ask_nhs(&fed, &pp, &old.consent_id).await;
    assert!(
        r.records.is_empty() && r.outcome != Outcome::Disclosed,
        "disclosed {} records under a superseded consent after the withdrawal (stored {:?} at the NHS)",
        r.records.len(),
        stored.status
    );
    assert_eq!(stored.status, ConsentStatus::Superseded);
    fed.shutdown().await;
}

#[tokio::test]
async fn after_a_withdrawal_the_client_does_not_silently_assemble_under_another_agencys_consent() {
    let fed = federation().await;
    let nhs = fed.node(NHS).unwrap().agency;
    let dwp = fed.node("dwp").unwrap().agency;
    let a = person_known_to(&fed, &["hmp-leeds", NHS]);
    // The person's own consent, recorded at the prison, names the NHS; probation relies on it.
    let pp = PassportId::random();
    let mut own = plan(&fed, a, 3600);
    own.passport_id = pp.clone();
    own.holders.retain(|(h, _, _)| h.as_str() == NHS);
    own.grantees = vec![agency("probation-yorks")];
    let own_id = grant(&fed, &own).await;
    // The person withdraws it.
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    prison
        .revoke_consent(&own_id, "withdrawn by the person")
        .await
        .unwrap();
    wait_deliveries(&prison, &own_id, AckSubject::Revoke).await;
    prison.close().await;
    // A council caseworker records a consent for the same passport id naming the DWP, where
    // the passport names nobody yet, with the identifier of someone else the DWP knows.
    let b = fed
        .population
        .people
        .iter()
        .find(|p| p.is_known_to(dwp) && p.identifier(nhs.scheme) != a.identifier(nhs.scheme))
        .expect("another person the DWP knows");
    let mut other = plan(&fed, b, 3600);
    other.passport_id = pp.clone();
    other.holders.retain(|(h, _, _)| h.as_str() == "dwp");
    other.grantees = vec![agency("probation-yorks")];
    let council = fed.client("leeds-cc", StaffRole::Caseworker).await.unwrap();
    let signed = council.sign_consent(&other);
    let other_id = signed.consent_id.clone();
    council.record_consent(signed).await.unwrap();
    wait_deliveries(&council, &other_id, AckSubject::Grant).await;
    council.close().await;
    // Probation assembles the passport without naming a consent (`tg passport assemble PP`).
    let probation = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let chosen = probation.consent_for(&pp, None).await;
    probation.close().await;
    let shown = ask(&fed, "dwp", &pp, &other_id).await.records.len();
    assert!(
        !matches!(&chosen, Ok(Some(c)) if c.consent_id == other_id),
        "the client picked the council's consent {other_id} for passport {pp} after the person withdrew \
         {own_id}: the passport shows {shown} DWP records of another person instead of the withdrawal"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn withdrawing_a_follow_up_also_stops_the_consent_it_replaced_where_the_follow_up_was_refused(
) {
    let fed = federation().await;
    let pp = PassportId::random();
    let old = prison_consent(&fed, &pp, None).await;
    for to in ["probation-yorks", NHS] {
        deliver_grant(
            &fed,
            "hmp-leeds",
            to,
            &grant_to(&fed, "hmp-leeds", &old, to),
        )
        .await;
    }
    // A follow-up, valid longer than the NHS (and probation) accept: agencies set their own
    // maximum, so a recording agency allowing two years meets holders allowing 400 days.
    let person = person_known_to(&fed, &["hmp-leeds", NHS]);
    let mut p = plan(&fed, person, 600 * 86_400);
    p.passport_id = pp.clone();
    p.holders.retain(|(a, _, _)| a.as_str() == NHS);
    p.grantees = vec![agency("probation-yorks")];
    p.supersedes = Some(old.consent_id.clone());
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let new = prison.sign_consent(&p);
    prison.close().await;
    for to in ["probation-yorks", NHS] {
        assert_eq!(
            deliver_grant(
                &fed,
                "hmp-leeds",
                to,
                &grant_to(&fed, "hmp-leeds", &new, to)
            )
            .await,
            AckOutcome::Rejected
        );
    }
    // The person withdraws. At the prison the old consent is superseded, so `tg consent revoke
    // --passport` withdraws the follow-up only, and its revocation goes to the follow-up's
    // recipients.
    let withdrawal = revocation_by(&fed, "hmp-leeds", &new.consent_id, &pp);
    for to in ["probation-yorks", NHS] {
        deliver_revocation(&fed, "hmp-leeds", to, &withdrawal).await;
    }
    let r = ask_nhs(&fed, &pp, &old.consent_id).await;
    assert!(
        r.records.is_empty() && r.outcome != Outcome::Disclosed,
        "the NHS disclosed {} records under the replaced consent after the person withdrew",
        r.records.len()
    );
    fed.shutdown().await;
}
