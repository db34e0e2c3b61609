//! Shared helpers for the node's integration tests: a demo federation on loopback, consent,
//! and raw QUIC connections for misbehaving-peer tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

pub mod mem;
pub mod pg;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use throughgate_node::client::{ClientError, ConsentPlan, HomeClient};
use throughgate_node::config::Limits;
use throughgate_node::node::NodeState;
use throughgate_node::tls::{client_config, PinnedServer, TlsIdentity};
use throughgate_protocol::bundle::{PassportBundle, VerifiedBundle};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::{Collection, CollectionMethod};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId};
use throughgate_protocol::keys::{PublicKey, SecretKey};
use throughgate_protocol::messages::{AckSubject, DeliveryState};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};
use throughgate_testkit::synth::SyntheticPerson;

pub const ALL: [&str; 6] = [
    "hmp-leeds",
    "probation-yorks",
    "nhs-wy",
    "leeds-college",
    "leeds-cc",
    "dwp",
];

pub fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

/// A federation of the six demo agencies with a small population and a short request timeout.
pub async fn federation() -> LocalFederation {
    let limits = Limits {
        request_timeout_ms: 1500,
        ..Limits::default()
    };
    LocalFederation::start(FedOptions {
        people: 60,
        limits,
        ..FedOptions::default()
    })
    .await
    .unwrap()
}

/// The first synthetic person every agency in `agencies` knows.
pub fn person_known_to<'a>(fed: &'a LocalFederation, agencies: &[&str]) -> &'a SyntheticPerson {
    fed.population
        .people
        .iter()
        .find(|p| {
            agencies
                .iter()
                .all(|a| p.is_known_to(fed.node(a).unwrap().agency))
        })
        .expect("a person known to all those agencies")
}

/// A consent plan covering every category every demo agency holds, granted to probation and
/// the council, valid for `valid_secs`.
pub fn plan(fed: &LocalFederation, person: &SyntheticPerson, valid_secs: u64) -> ConsentPlan {
    let now = fed.now();
    ConsentPlan {
        passport_id: PassportId::random(),
        purpose: Purpose::Resettlement,
        holders: fed
            .nodes
            .iter()
            .map(|n| {
                (
                    n.id.clone(),
                    person.identifier(n.agency.scheme),
                    n.agency.categories.to_vec(),
                )
            })
            .collect(),
        grantees: vec![agency("probation-yorks"), agency("leeds-cc")],
        valid_from: now,
        valid_until: now.plus_secs(valid_secs),
        records_from: None,
        records_until: None,
        legal_basis: "UK GDPR Art. 6(1)(e)".into(),
        jurisdiction: "England and Wales".into(),
        collection: Collection {
            method: CollectionMethod::SignedPaperForm,
            reference: "TEST-1".into(),
        },
        privacy_notice: "notice".into(),
        supersedes: None,
    }
}

/// A plan (see [`plan`]) for the first person every demo agency knows, valid for an hour,
/// granted with [`grant`]; returns the plan and the consent's id.
pub async fn granted_plan(fed: &LocalFederation) -> (ConsentPlan, ConsentId) {
    let person = person_known_to(fed, &ALL);
    let p = plan(fed, person, 3600);
    let id = grant(fed, &p).await;
    (p, id)
}

/// Records `plan` as the prison caseworker and waits until every recipient acknowledged.
pub async fn grant(fed: &LocalFederation, plan: &ConsentPlan) -> ConsentId {
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let signed = prison.sign_consent(plan);
    let id = signed.consent_id.clone();
    prison.record_consent(signed).await.unwrap();
    wait_deliveries(&prison, &id, AckSubject::Grant).await;
    prison.close().await;
    id
}

/// Assembles passport `passport` for resettlement as `client`: fetches the manifest, looks up
/// the consent the home node holds for it, and asks every holder.
pub async fn try_assemble(
    client: &HomeClient,
    passport: &PassportId,
) -> Result<(PassportBundle, VerifiedBundle), ClientError> {
    let (menv, m) = client.manifest().await.unwrap();
    let c = client.consent_for(passport, None).await.unwrap();
    client
        .passport(
            &menv,
            &m,
            passport,
            c.as_ref(),
            None,
            Purpose::Resettlement,
            &[],
            None,
        )
        .await
}

/// [`try_assemble`], which must succeed.
pub async fn assemble(
    client: &HomeClient,
    passport: &PassportId,
) -> (PassportBundle, VerifiedBundle) {
    try_assemble(client, passport).await.unwrap()
}

/// [`assemble`] as a probation caseworker, on a client opened for it and closed afterwards.
pub async fn assemble_as_caseworker(
    fed: &LocalFederation,
    passport: &PassportId,
) -> (PassportBundle, VerifiedBundle) {
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let out = assemble(&client, passport).await;
    client.close().await;
    out
}

/// Waits (polling the delivery state the home node reports) until no delivery of `subject`
/// for consent `id` is pending.
pub async fn wait_deliveries(client: &HomeClient, id: &ConsentId, subject: AckSubject) {
    for _ in 0..1000 {
        let (_, _, deliveries) = client.show_consent(id).await.unwrap();
        let mine: Vec<_> = deliveries.iter().filter(|d| d.subject == subject).collect();
        if !mine.is_empty() && mine.iter().all(|d| d.state != DeliveryState::Pending) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("deliveries of {id} still pending");
}

/// The shared state of `agency`'s running node.
pub fn node_state(fed: &LocalFederation, agency: &str) -> Arc<NodeState> {
    fed.node(agency)
        .unwrap()
        .node
        .as_ref()
        .unwrap()
        .state()
        .clone()
}

/// A raw QUIC connection to `server` presenting `key`, for misbehaving-peer tests.
pub async fn raw_connection(
    server: SocketAddr,
    server_agency: &str,
    server_key: PublicKey,
    key: &SecretKey,
) -> (quinn::Endpoint, quinn::Connection) {
    let identity = TlsIdentity::new(key, "raw-test").unwrap();
    let policy = Arc::new(PinnedServer {
        agency: server_agency.into(),
        keys: vec![server_key],
    });
    let cfg = client_config(&identity, policy, &Limits::default()).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    let conn = ep.connect(server, server_agency).unwrap().await.unwrap();
    (ep, conn)
}

/// Categories of `agency` in the demo.
pub fn categories_of(fed: &LocalFederation, agency: &str) -> Vec<Category> {
    fed.node(agency).unwrap().agency.categories.to_vec()
}

/// Signs `m` with each governance key.
pub fn sign_manifest(
    m: &throughgate_protocol::manifest::Manifest,
    keys: &[&SecretKey],
) -> throughgate_protocol::envelope::Envelope {
    let signers: Vec<_> = keys
        .iter()
        .map(|k| (throughgate_protocol::envelope::SignerRole::Governance, *k))
        .collect();
    throughgate_protocol::envelope::Envelope::seal(m, &signers)
}

/// The next version of the federation's manifest (same content, version + 1, fresh expiry).
pub fn next_manifest(
    m: &throughgate_protocol::manifest::Manifest,
    now: throughgate_protocol::time::Timestamp,
) -> throughgate_protocol::manifest::Manifest {
    let mut n = m.clone();
    n.version += 1;
    n.issued_at = now;
    n.expires_at = now.plus_secs(30 * 86_400);
    n
}

/// Waits (polling the nodes' trusted state) until every running node trusts `version`.
pub async fn wait_manifest_everywhere(fed: &LocalFederation, version: u64) {
    for _ in 0..500 {
        if fed
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .all(|n| n.state().manifest().is_some_and(|m| m.version >= version))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got: Vec<_> = fed
        .nodes
        .iter()
        .filter_map(|n| n.node.as_ref())
        .map(|n| n.state().manifest().map(|m| m.version))
        .collect();
    panic!("manifest version {version} did not reach every node: {got:?}");
}

/// Sends a query envelope straight to `to` from `from`'s node identity and returns the
/// holder's answer.
pub async fn raw_query(
    fed: &LocalFederation,
    from: &str,
    to: &str,
    query: &throughgate_protocol::envelope::Envelope,
) -> throughgate_protocol::envelope::Envelope {
    let target = fed.node(to).unwrap();
    let target_key = target.node.as_ref().unwrap().state().key.current().public();
    let me = node_state(fed, from).key.current();
    let (_ep, conn) = raw_connection(target.addr, to, target_key, &me).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&throughgate_protocol::frame::encode(&query.to_bytes()))
        .await
        .unwrap();
    send.finish().unwrap();
    let got = recv.read_to_end(1 << 22).await.unwrap();
    throughgate_protocol::envelope::Envelope::from_bytes(&got[4..], 1 << 22).unwrap()
}

/// Writes the key, credential, profile and trusted manifest of a new member of staff of
/// `agency` holding `role` into `dir`, as `tg staff add` does; returns the profile.
pub async fn staff_profile(
    fed: &LocalFederation,
    agency: &str,
    id: &str,
    role: StaffRole,
    dir: &std::path::Path,
) -> throughgate_node::client::Profile {
    use throughgate_protocol::ids::PersonId;
    use throughgate_protocol::messages::{ClientOp, ClientResponse};
    let op = fed.client(agency, StaffRole::Operator).await.unwrap();
    let key = SecretKey::generate();
    let ClientResponse::Credential(cred) = op
        .call(ClientOp::AddStaff {
            person_id: PersonId::new(id).unwrap(),
            display_name: "A Caseworker".into(),
            roles: vec![role],
            public_key: key.public(),
            valid_days: 30,
        })
        .await
        .unwrap()
    else {
        panic!("AddStaff answered with something other than a credential")
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
    let profile = throughgate_node::client::Profile {
        agency: n.id.clone(),
        node_address: n.addr.to_string(),
        replica_addresses: Vec::new(),
        node_key: n.key.public(),
        person_id: PersonId::new(id).unwrap(),
        key_file: format!("{id}.key").into(),
        credential_file: format!("{id}.cred").into(),
        base_dir: dir.to_path_buf(),
    };
    let path = dir.join(format!("{id}.profile.toml"));
    std::fs::write(&path, profile.to_toml()).unwrap();
    std::fs::write(profile.manifest_cache_path(), manifest.to_bytes()).unwrap();
    throughgate_node::client::Profile::load(&path).unwrap()
}
