//! Operator and DPO requests that name something that does not exist, or that would undo a
//! safeguard, are refused with what is wrong and the valid values; nothing is changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_node::client::ClientError;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::{AuditFilter, ErrorCode};

fn bad_request(e: ClientError) -> String {
    match e {
        ClientError::Refused(b) if b.code == ErrorCode::BadRequest => b.message,
        other => panic!("expected bad_request, got {other}"),
    }
}

#[tokio::test]
async fn witness_reset_refuses_a_non_member_and_keeps_a_healthy_peers_baseline() {
    let fed = federation().await;
    let probation = node_state(&fed, "probation-yorks");
    // Something in the prison's log (a consent), witnessed, so there is a baseline to keep.
    let _ = granted_plan(&fed).await;
    throughgate_node::workers::witness::offer(
        &throughgate_node::workers::witness::Offering::of(&node_state(&fed, "hmp-leeds")),
        &agency("probation-yorks"),
    )
    .await
    .unwrap();
    let baseline = probation.db.witnessed(&agency("hmp-leeds")).unwrap();
    assert!(baseline.is_some());
    let dpo = fed.client("probation-yorks", StaffRole::Dpo).await.unwrap();

    let msg = bad_request(dpo.witness_reset(&agency("nobody")).await.unwrap_err());
    assert!(msg.contains("not another member"), "{msg}");
    assert!(msg.contains("hmp-leeds") && msg.contains("dwp"), "{msg}");

    let msg = bad_request(dpo.witness_reset(&agency("hmp-leeds")).await.unwrap_err());
    assert!(msg.contains("no witness alarm"), "{msg}");
    assert_eq!(
        probation.db.witnessed(&agency("hmp-leeds")).unwrap(),
        baseline,
        "a healthy peer's baseline was reset"
    );
    dpo.close().await;
    fed.shutdown().await;
}

#[tokio::test]
async fn an_unknown_audit_event_name_is_refused_with_the_valid_names() {
    let fed = federation().await;
    let dpo = fed.client("probation-yorks", StaffRole::Dpo).await.unwrap();
    let msg = bad_request(
        dpo.audit_search(AuditFilter {
            event: Some("witness_alarms".into()),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert!(msg.contains("\"witness_alarms\""), "{msg}");
    assert!(
        msg.contains("witness_alarm,") || msg.ends_with("witness_alarm"),
        "{msg}"
    );
    // A valid name still searches.
    dpo.audit_search(AuditFilter {
        event: Some("witness_alarm".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    dpo.close().await;
    fed.shutdown().await;
}
