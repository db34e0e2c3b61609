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

/// Writes a caseworker's key, credential, profile and trusted manifest into `dir`, as
/// `tg staff add` does; returns the profile.
async fn make_profile(
    fed: &throughgate_node::localfed::LocalFederation,
    agency: &str,
    id: &str,
    dir: &std::path::Path,
) -> Profile {
    let op = fed.client(agency, StaffRole::Operator).await.unwrap();
    let key = SecretKey::generate();
    let ClientResponse::Credential(cred) = op
        .call(ClientOp::AddStaff {
            person_id: PersonId::new(id).unwrap(),
            display_name: "A Caseworker".into(),
            roles: vec![StaffRole::Caseworker],
            public_key: key.public(),
            valid_days: 30,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let (manifest, _) = op.manifest().await.unwrap();
    op.close().await;
    let n = fed.node(agency).unwrap();
    throughgate_node::keyfile::write_secret_key(&dir.join(format!("{id}.key")), &key).unwrap();
    throughgate_node::keyfile::write_private_file(
        &dir.join(format!("{id}.cred")),
        &cred.to_bytes(),
    )
    .unwrap();
    let profile = Profile {
        agency: n.id.clone(),
        node_address: n.addr.to_string(),
        node_key: n.key.public(),
        person_id: PersonId::new(id).unwrap(),
        key_file: format!("{id}.key").into(),
        credential_file: format!("{id}.cred").into(),
        base_dir: dir.to_path_buf(),
    };
    let path = dir.join(format!("{id}.profile.toml"));
    std::fs::write(&path, profile.to_toml()).unwrap();
    std::fs::write(profile.manifest_cache_path(), manifest.to_bytes()).unwrap();
    Profile::load(&path).unwrap()
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
    // `tg staff list` now flags credentials signed by the old key, to reissue before step 4.
    let state = node_state(&fed, "nhs-wy");
    let state_of = |id: &str| {
        let s = state
            .db
            .staff(&PersonId::new(id).unwrap())
            .unwrap()
            .unwrap();
        throughgate_node::staff::summary(&state, &s).state
    };
    assert_eq!(state_of("cw-rot"), "previous_key");
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
    assert_eq!(state_of("cw-rot"), "issuer_retired");

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
