//! A node key rotation, following docs/operations.md section 12, does not lock out staff whose
//! profiles were made before it: a profile trusts the governance-signed manifest it was given
//! with its credential, and follows newer manifests that chain from it to the node's new key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use throughgate_node::client::{ClientError, HomeClient, Profile};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::PersonId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{ClientOp, ClientResponse};

/// Writes a caseworker's key, credential, profile and trusted manifest into `dir`.
async fn make_profile(
    fed: &throughgate_testkit::localfed::LocalFederation,
    agency: &str,
    id: &str,
    dir: &std::path::Path,
) -> Profile {
    staff_profile(fed, agency, id, StaffRole::Caseworker, dir).await
}

#[tokio::test]
async fn profiles_made_before_a_key_rotation_keep_working_after_the_old_key_is_retired() {
    let fed = federation().await;
    let tmp = tempfile::tempdir().unwrap();
    let profile = make_profile(&fed, "nhs-wy", "cw-rot", tmp.path()).await;
    // A profile with no manifest to anchor on (only its pinned key), for contrast.
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = make_profile(&fed, "nhs-wy", "cw-bare", bare_dir.path()).await;
    std::fs::remove_file(bare.manifest_cache_path()).unwrap();
    HomeClient::connect_profile(&profile)
        .await
        .unwrap()
        .close()
        .await;

    // Section 12: 1. the next key, in the node folder.
    let nhs = fed.node("nhs-wy").unwrap();
    let old_key = nhs.key.public();
    let next = SecretKey::generate();
    throughgate_node::keyfile::write_secret_key(&nhs.dir.join("node-next.key"), &next).unwrap();
    // 2. Governance publishes a version listing both keys.
    let mut v2 = next_manifest(&fed.manifest_body, fed.now());
    v2.members
        .iter_mut()
        .find(|m| m.id.as_str() == "nhs-wy")
        .unwrap()
        .node_keys
        .push(next.public());
    let op = fed.client("hmp-leeds", StaffRole::Operator).await.unwrap();
    op.publish_manifest(sign_manifest(&v2, &[&fed.governance]))
        .await
        .unwrap();
    op.close().await;
    wait_manifest_everywhere(&fed, v2.version).await;
    // 3. The operator switches the node to the next key.
    let op = fed.client("nhs-wy", StaffRole::Operator).await.unwrap();
    op.rotate_key().await.unwrap();
    op.close().await;
    // Rotating re-issued every credential in force under the new key.
    let state = node_state(&fed, "nhs-wy");
    let state_of = |id: &str| {
        let s = state
            .db
            .staff(&PersonId::new(id).unwrap())
            .unwrap()
            .unwrap();
        throughgate_node::staff::summary(&throughgate_node::staff::Staffing::of(&state), &s).state
    };
    assert_eq!(state_of("cw-rot"), "active");
    // 4. Governance retires the old key.
    let mut v3 = next_manifest(&v2, fed.now());
    v3.members
        .iter_mut()
        .find(|m| m.id.as_str() == "nhs-wy")
        .unwrap()
        .node_keys
        .retain(|k| k != &old_key);
    let op = fed.client("hmp-leeds", StaffRole::Operator).await.unwrap();
    op.publish_manifest(sign_manifest(&v3, &[&fed.governance]))
        .await
        .unwrap();
    op.close().await;
    wait_manifest_everywhere(&fed, v3.version).await;
    assert_eq!(state_of("cw-rot"), "active");

    // The profile made before the rotation, pinning the old key, still reaches its node, and
    // now trusts version 3.
    let c = HomeClient::connect_profile(&profile).await.unwrap();
    match c.call(ClientOp::Status).await.unwrap() {
        ClientResponse::Status(s) => assert_eq!(s.key_fingerprint, next.public().fingerprint()),
        other => panic!("{other:?}"),
    }
    c.close().await;
    let cached = std::fs::read(profile.manifest_cache_path()).unwrap();
    let cached: throughgate_protocol::manifest::Manifest =
        throughgate_protocol::envelope::Envelope::from_bytes(&cached, 1 << 22)
            .unwrap()
            .open()
            .unwrap();
    assert_eq!(cached.version, v3.version);
    // Without a trusted manifest, a key the profile does not know is refused at the handshake.
    let err = HomeClient::connect_profile(&bare).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    fed.shutdown().await;
}

/// Section 12 at a requesting agency, with a caseworker profile made, a consent recorded and a
/// passport saved before the rotation: the rotation re-issues every credential in force under the
/// new key (revoked ones stay revoked), publishing a version that retires the old key is refused
/// while any credential it signed is not re-issued, the profile picks up its re-issued
/// credential at its next connection, and with the old key retired the caseworker still
/// assembles a passport and records the person's withdrawal of consent; the saved passport
/// verifies against the newer manifest's key history, saying the key was retired since.
#[tokio::test]
async fn a_caseworker_with_a_profile_from_before_a_rotation_still_works_after_the_old_key_is_retired(
) {
    let fed = federation().await;
    let tmp = tempfile::tempdir().unwrap();
    let profile = make_profile(&fed, "probation-yorks", "cw-old", tmp.path()).await;
    let gone_dir = tempfile::tempdir().unwrap();
    make_profile(&fed, "probation-yorks", "cw-gone", gone_dir.path()).await;
    let op_dir = tempfile::tempdir().unwrap();
    let op_profile = staff_profile(
        &fed,
        "probation-yorks",
        "op-2",
        StaffRole::Operator,
        op_dir.path(),
    )
    .await;
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.revoke_staff(&PersonId::new("cw-gone").unwrap())
        .await
        .unwrap();
    op.close().await;
    // Before the rotation: a consent recorded, a passport assembled and saved.
    let person = person_known_to(&fed, &ALL);
    let p = plan(&fed, person, 3600);
    let cw = HomeClient::connect_profile(&profile).await.unwrap();
    assert!(cw.credential_refreshed().is_none());
    let signed = cw.sign_consent(&p);
    let consent_id = signed.consent_id.clone();
    cw.record_consent(signed).await.unwrap();
    wait_deliveries(
        &cw,
        &consent_id,
        throughgate_protocol::messages::AckSubject::Grant,
    )
    .await;
    let (saved, _) = assemble(&cw, &p.passport_id).await;
    cw.close().await;

    let prob = fed.node("probation-yorks").unwrap();
    let old = prob.key.clone();
    let old_key = old.public();
    let next = SecretKey::generate();
    throughgate_node::keyfile::write_secret_key(&prob.dir.join("node-next.key"), &next).unwrap();
    let mut v2 = next_manifest(&fed.manifest_body, fed.now());
    v2.members
        .iter_mut()
        .find(|m| m.id.as_str() == "probation-yorks")
        .unwrap()
        .node_keys
        .push(next.public());
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.publish_manifest(sign_manifest(&v2, &[&fed.governance]))
        .await
        .unwrap();
    wait_manifest_everywhere(&fed, v2.version).await;
    op.rotate_key().await.unwrap();
    op.close().await;
    let state = node_state(&fed, "probation-yorks");
    let summary_of = |id: &str| {
        let s = state
            .db
            .staff(&PersonId::new(id).unwrap())
            .unwrap()
            .unwrap();
        throughgate_node::staff::summary(&throughgate_node::staff::Staffing::of(&state), &s)
    };
    let cw_old = summary_of("cw-old");
    assert_eq!(cw_old.state, "active");
    assert_eq!(cw_old.issuer_key, next.public().fingerprint());
    let gone = summary_of("cw-gone");
    assert_eq!(gone.state, "revoked", "a revoked credential stays revoked");
    assert_eq!(gone.issuer_key, old_key.fingerprint());

    // A credential the old key signed and nobody re-issued (as a node rotated by an earlier
    // version would hold) holds the retirement back.
    let late_key = SecretKey::generate();
    let now = fed.now();
    let late = throughgate_node::staff::issue_credential(
        &old,
        throughgate_protocol::credential::Credential {
            person_id: PersonId::new("cw-late").unwrap(),
            display_name: "Late Caseworker".into(),
            agency: agency("probation-yorks"),
            roles: vec![StaffRole::Caseworker],
            public_key: late_key.public(),
            not_before: now,
            not_after: now.plus_secs(86_400),
        },
    );
    state.db.put_staff(&late).unwrap();
    state.trust.add_staff(late);
    let mut v3 = next_manifest(&v2, fed.now());
    let me = v3
        .members
        .iter_mut()
        .find(|m| m.id.as_str() == "probation-yorks")
        .unwrap();
    me.node_keys.retain(|k| k != &old_key);
    me.retired_keys
        .push(throughgate_protocol::manifest::RetiredKey {
            key: old_key,
            retired_at: v3.issued_at,
        });
    let v3_env = sign_manifest(&v3, &[&fed.governance]);
    let op = HomeClient::connect_profile(&op_profile).await.unwrap();
    let err = op.publish_manifest(v3_env.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tg staff reissue-credentials") && msg.contains("cw-late"),
        "{msg}"
    );
    assert_eq!(state.manifest().unwrap().version, v2.version);
    match op.call(ClientOp::ReissueCredentials).await.unwrap() {
        ClientResponse::Staff(list) => {
            let ids: Vec<_> = list.iter().map(|s| s.person_id.to_string()).collect();
            assert_eq!(ids, vec!["cw-late".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(summary_of("cw-gone").state, "revoked");
    op.publish_manifest(v3_env).await.unwrap();
    op.close().await;
    wait_manifest_everywhere(&fed, v3.version).await;

    // The old profile picks up its re-issued credential at its next connection: the same
    // credential, signed by the new key, saved into the profile.
    let cred_file = tmp.path().join("cw-old.cred");
    let before = std::fs::read(&cred_file).unwrap();
    let cw = HomeClient::connect_profile(&profile).await.unwrap();
    let saved_to = cw
        .credential_refreshed()
        .expect("the credential is refreshed")
        .as_ref()
        .unwrap();
    assert_eq!(saved_to, &cred_file);
    let after = std::fs::read(&cred_file).unwrap();
    assert_ne!(before, after);
    let env = throughgate_protocol::envelope::Envelope::from_bytes(&after, 1 << 16).unwrap();
    assert_eq!(
        env.signers(throughgate_protocol::envelope::SignerRole::Node)
            .copied()
            .collect::<Vec<_>>(),
        vec![next.public()]
    );
    let old_env = throughgate_protocol::envelope::Envelope::from_bytes(&before, 1 << 16).unwrap();
    assert_eq!(
        env.open::<throughgate_protocol::credential::Credential>()
            .unwrap(),
        old_env
            .open::<throughgate_protocol::credential::Credential>()
            .unwrap(),
        "same staff id, name, roles, key and validity"
    );
    // The caseworker still assembles a passport every holder answers...
    let (_, v) = assemble(&cw, &p.passport_id).await;
    assert!(v.complete(), "{:?}", v.results);
    for r in &v.results {
        let resp = r.response.as_ref().unwrap();
        assert_ne!(
            resp.outcome,
            throughgate_protocol::messages::Outcome::Refused,
            "{} refused: {:?}",
            r.result.agency,
            resp.reason
        );
    }
    // ...and records the person's withdrawal of consent, which every agency accepts.
    cw.revoke_consent(&consent_id, "the person withdrew")
        .await
        .unwrap();
    wait_deliveries(
        &cw,
        &consent_id,
        throughgate_protocol::messages::AckSubject::Revoke,
    )
    .await;
    let (_, _, deliveries) = cw.show_consent(&consent_id).await.unwrap();
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == throughgate_protocol::messages::DeliveryState::Delivered),
        "{deliveries:?}"
    );
    cw.close().await;

    // The passport saved before the retirement verifies against version 3's key history.
    let verified = throughgate_protocol::bundle::verify_bundle(&saved, &v3).unwrap();
    assert!(verified.all_valid());
    assert!(
        verified
            .retired_signatures
            .iter()
            .any(|r| r.agency.as_str() == "probation-yorks" && r.what == "assembly statement"),
        "{:?}",
        verified.retired_signatures
    );
    let note = verified.retired_signatures[0].to_string();
    assert!(note.contains("signed by a key retired on"), "{note}");
    // A key retired before the signed time, or never listed, each fail with their own reason.
    let signed_at = saved.unverified_statement().unwrap().assembled_at;
    let mut early = v3.clone();
    let me = early
        .members
        .iter_mut()
        .find(|m| m.id.as_str() == "probation-yorks")
        .unwrap();
    me.retired_keys[0].retired_at = throughgate_protocol::time::Timestamp(signed_at.0 - 3600);
    let err = throughgate_protocol::bundle::verify_bundle(&saved, &early)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was retired on") && err.contains("before the signed time"),
        "{err}"
    );
    early
        .members
        .iter_mut()
        .find(|m| m.id.as_str() == "probation-yorks")
        .unwrap()
        .retired_keys
        .clear();
    let err = throughgate_protocol::bundle::verify_bundle(&saved, &early)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("which the manifest never listed for probation-yorks"),
        "{err}"
    );
    fed.shutdown().await;
}
