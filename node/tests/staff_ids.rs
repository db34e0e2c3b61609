//! One person, one staff id: an id is never silently given a second credential; a new key is an
//! explicit reissue that revokes the old credential; and a withdrawn credential's holder is told
//! who withdrew it and when, not that the connection was lost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_node::client::{ClientError, HomeClient};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::ids::PersonId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{ClientOp, ClientResponse, ErrorCode, StaffSummary};

async fn connect_as(
    fed: &throughgate_testkit::localfed::LocalFederation,
    agency: &str,
    key: &SecretKey,
    credential: throughgate_protocol::envelope::Envelope,
) -> Result<HomeClient, ClientError> {
    let n = fed.node(agency).unwrap();
    HomeClient::connect(
        n.addr,
        &n.id,
        vec![n.key.public()],
        key.clone(),
        credential,
        fed.clock.clone(),
    )
    .await
}

async fn add(op: &HomeClient, id: &str, key: &SecretKey) -> Result<ClientResponse, ClientError> {
    op.call(ClientOp::AddStaff {
        person_id: PersonId::new(id).unwrap(),
        display_name: "A Caseworker".into(),
        roles: vec![StaffRole::Caseworker],
        public_key: key.public(),
        valid_days: 30,
    })
    .await
}

async fn list(op: &HomeClient) -> Vec<StaffSummary> {
    match op.call(ClientOp::ListStaff).await.unwrap() {
        ClientResponse::Staff(l) => l,
        other => panic!("{other:?}"),
    }
}

fn refused_with(e: ClientError, code: ErrorCode) -> String {
    match e {
        ClientError::Refused(b) if b.code == code => b.message,
        other => panic!("expected {code}, got {other}"),
    }
}

#[tokio::test]
async fn an_existing_id_is_refused_and_reissue_revokes_the_old_credential() {
    let fed = federation().await;
    let op = fed.client("leeds-cc", StaffRole::Operator).await.unwrap();
    let first = SecretKey::generate();
    let ClientResponse::Credential(cred1) = add(&op, "cw-7", &first).await.unwrap() else {
        panic!()
    };
    // A second person given the same id: refused, and the first keeps working.
    let second = SecretKey::generate();
    let msg = refused_with(
        add(&op, "cw-7", &second).await.unwrap_err(),
        ErrorCode::BadRequest,
    );
    assert!(msg.contains("tg staff reissue cw-7"), "{msg}");
    let c1 = connect_as(&fed, "leeds-cc", &first, cred1.clone())
        .await
        .unwrap();
    c1.call(ClientOp::Status).await.unwrap();

    // Reissue: the old credential is revoked (by this operator), a new one issued.
    let ClientResponse::Credential(cred2) = op
        .call(ClientOp::ReissueStaff {
            person_id: PersonId::new("cw-7").unwrap(),
            public_key: second.public(),
            valid_days: 30,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let body: Credential = cred2.open().unwrap();
    assert_eq!(body.display_name, "A Caseworker");
    assert_eq!(body.roles, vec![StaffRole::Caseworker]);
    // The old key, on its open connection and on a new one, is told what happened.
    let msg = refused_with(
        c1.call(ClientOp::Status).await.unwrap_err(),
        ErrorCode::Forbidden,
    );
    assert!(msg.contains("withdrawn by"), "{msg}");
    assert!(msg.contains("operator"), "{msg}");
    let again = connect_as(&fed, "leeds-cc", &first, cred1).await.unwrap();
    let msg = refused_with(
        again.call(ClientOp::Status).await.unwrap_err(),
        ErrorCode::Forbidden,
    );
    assert!(
        msg.contains("withdrawn by") && msg.contains("tg staff reissue"),
        "{msg}"
    );
    // The new key works.
    let c2 = connect_as(&fed, "leeds-cc", &second, cred2).await.unwrap();
    c2.call(ClientOp::Status).await.unwrap();
    let l = list(&op).await;
    let me = l.iter().find(|s| s.person_id.as_str() == "cw-7").unwrap();
    assert_eq!(me.state, "active");
    assert_eq!(me.key_fingerprint, second.public().fingerprint());
    assert_eq!(
        me.issuer_key,
        fed.node("leeds-cc").unwrap().key.public().fingerprint()
    );
    assert_eq!(me.display_name, "A Caseworker");
    c2.close().await;
    op.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_revoked_caseworker_is_told_who_withdrew_the_credential_and_when() {
    let fed = federation().await;
    let op = fed.client("leeds-cc", StaffRole::Operator).await.unwrap();
    let key = SecretKey::generate();
    let ClientResponse::Credential(cred) = add(&op, "cw-8", &key).await.unwrap() else {
        panic!()
    };
    op.revoke_staff(&PersonId::new("cw-8").unwrap())
        .await
        .unwrap();
    let l = list(&op).await;
    let s = l.iter().find(|s| s.person_id.as_str() == "cw-8").unwrap();
    assert_eq!(s.state, "revoked");
    assert!(s.revoked_at.is_some());
    assert!(s.revoked_by.is_some());
    let c = connect_as(&fed, "leeds-cc", &key, cred).await.unwrap();
    let msg = refused_with(
        c.call(ClientOp::Status).await.unwrap_err(),
        ErrorCode::Forbidden,
    );
    let by = s.revoked_by.as_ref().unwrap().to_string();
    assert!(msg.contains(&format!("withdrawn by {by}")), "{msg}");
    assert!(msg.contains(&s.revoked_at.unwrap().to_string()), "{msg}");
    op.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn an_expired_credential_is_told_when_it_expired() {
    let fed = federation().await;
    let op = fed.client("leeds-cc", StaffRole::Operator).await.unwrap();
    let key = SecretKey::generate();
    let ClientResponse::Credential(cred) = op
        .call(ClientOp::AddStaff {
            person_id: PersonId::new("cw-9").unwrap(),
            display_name: "A Caseworker".into(),
            roles: vec![StaffRole::Caseworker],
            public_key: key.public(),
            valid_days: 1,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    op.close().await;
    let body: Credential = cred.open().unwrap();
    fed.clock.advance(2 * 86_400);
    let c = connect_as(&fed, "leeds-cc", &key, cred).await.unwrap();
    let msg = refused_with(
        c.call(ClientOp::Status).await.unwrap_err(),
        ErrorCode::Forbidden,
    );
    assert!(
        msg.contains(&format!("expired at {}", body.not_after)),
        "{msg}"
    );
    assert!(msg.contains("operator"), "{msg}");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_withdrawn_caseworker_connecting_with_a_profile_is_told_their_credential_was_withdrawn() {
    let fed = federation().await;
    let tmp = tempfile::tempdir().unwrap();
    let profile = staff_profile(
        &fed,
        "leeds-cc",
        "cw-gone",
        StaffRole::Caseworker,
        tmp.path(),
    )
    .await;
    HomeClient::connect_profile(&profile)
        .await
        .unwrap()
        .close()
        .await;
    let op = fed.client("leeds-cc", StaffRole::Operator).await.unwrap();
    op.revoke_staff(&profile.person_id).await.unwrap();
    op.close().await;
    // As `tg` connects: with the profile, which first refreshes its trusted manifest.
    let msg = match HomeClient::connect_profile(&profile).await {
        Err(e) => refused_with(e, ErrorCode::Forbidden),
        Ok(c) => refused_with(c.status().await.unwrap_err(), ErrorCode::Forbidden),
    };
    assert!(msg.contains("withdrawn by"), "{msg}");
    fed.shutdown().await;
}
