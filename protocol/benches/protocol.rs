//! Micro-benchmarks of the protocol core: envelope encode and decode, Ed25519 sign and strict
//! verify through envelopes, Merkle append and root, inclusion proof build and verify, and (for
//! the record) what batch verification would save.
//!
//! Run with `cargo bench -p throughgate-protocol`; see docs/performance.md.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::merkle::{
    inclusion_proof_with, leaf_hash, node_hash, verify_inclusion, Hash, MerkleFrontier,
};
use throughgate_protocol::messages::{HolderRequest, Query};
use throughgate_protocol::time::Timestamp;

const HOLDERS: [&str; 6] = [
    "hmp-leeds",
    "probation-yorks",
    "nhs-wy",
    "leeds-college",
    "leeds-cc",
    "dwp",
];

/// A realistic query: six holders, a credential inside, signed by caseworker and node.
fn query(node: &SecretKey, caseworker: &SecretKey) -> Query {
    let now = Timestamp(1_800_000_000);
    let requester = AgencyId::new("probation-yorks").unwrap();
    let person = PersonId::new("cw-prb").unwrap();
    let cred = Credential {
        person_id: person.clone(),
        display_name: "Demo caseworker at Yorkshire and the Humber Probation".into(),
        agency: requester.clone(),
        roles: vec![StaffRole::Caseworker],
        public_key: caseworker.public(),
        not_before: now,
        not_after: Timestamp(now.0 + 86_400 * 30),
    };
    let credential = Envelope::seal(&cred, &[(SignerRole::Node, node)]);
    Query {
        query_id: QueryId::random(),
        passport_id: PassportId::random(),
        consent_id: Some(ConsentId::random()),
        purpose: Purpose::Resettlement,
        requests: HOLDERS
            .iter()
            .map(|h| HolderRequest {
                holder: AgencyId::new(*h).unwrap(),
                categories: vec![Category::Health, Category::Accommodation],
            })
            .collect(),
        requester,
        caseworker: person,
        credential,
        issued_at: now,
        expires_at: Timestamp(now.0 + 60),
        nonce: [7; 16],
    }
}

fn envelopes(c: &mut Criterion) {
    let node = SecretKey::from_seed(&[1; 32]);
    let caseworker = SecretKey::from_seed(&[2; 32]);
    let q = query(&node, &caseworker);
    let mut env = Envelope::seal(&q, &[(SignerRole::Person, &caseworker)]);
    env.add_signature(SignerRole::Node, &node);
    let bytes = env.to_bytes();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode query envelope", |b| {
        b.iter(|| black_box(&env).to_bytes())
    });
    g.bench_function("decode query envelope", |b| {
        b.iter(|| Envelope::from_bytes(black_box(&bytes), 1 << 20).unwrap())
    });
    g.bench_function("open query body", |b| {
        b.iter(|| black_box(&env).open::<Query>().unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("signature");
    g.bench_function("seal query (encode + sign)", |b| {
        b.iter(|| Envelope::seal(black_box(&q), &[(SignerRole::Person, &caseworker)]))
    });
    g.bench_function("countersign query", |b| {
        b.iter_batched(
            || env.clone(),
            |mut e| e.add_signature(SignerRole::Node, &node),
            BatchSize::SmallInput,
        )
    });
    let cw = caseworker.public();
    g.bench_function("verify query signature (strict)", |b| {
        b.iter(|| black_box(&env).verify_by(SignerRole::Person, &cw).unwrap())
    });
    let msg = vec![7u8; 200];
    g.bench_function("raw sign 200 bytes", |b| {
        b.iter(|| caseworker.sign(black_box(&msg)))
    });
    let sig = caseworker.sign(&msg);
    g.bench_function("raw verify_strict 200 bytes (decodes key)", |b| {
        b.iter(|| assert!(cw.verify_strict(black_box(&msg), &sig)))
    });
    let vk = cw.verifying_key();
    let dsig = ed25519_dalek::Signature::from_bytes(&sig);
    g.bench_function("dalek verify_strict 200 bytes (key decoded once)", |b| {
        b.iter(|| vk.verify_strict(black_box(&msg), &dsig).unwrap())
    });
    let key_bytes = *cw.as_bytes();
    g.bench_function("public key decode and check", |b| {
        b.iter(|| throughgate_protocol::keys::PublicKey::from_bytes(black_box(key_bytes)))
    });
    g.finish();
    batch_verification(c);
}

/// What ed25519-dalek's batch verification would save at the batch sizes a passport offers
/// (2: a holder's two query signatures; 6 and 13: the client's bundle), against `verify_strict`
/// one by one. Not used by Throughgate: the batch equation is cofactored and accepts
/// signatures strict verification rejects (docs/performance.md, "Signature budget"). Measured so
/// the decision can be weighed with figures.
fn batch_verification(c: &mut Criterion) {
    let keys: Vec<ed25519_dalek::SigningKey> = (0u8..13)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i.wrapping_add(1); 32]))
        .collect();
    let msgs: Vec<Vec<u8>> = (0u8..13).map(|i| vec![i; 200]).collect();
    let sigs: Vec<ed25519_dalek::Signature> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| ed25519_dalek::Signer::sign(k, m))
        .collect();
    let vks: Vec<ed25519_dalek::VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
    let mut g = c.benchmark_group("batch verification (not used)");
    for n in [2usize, 6, 13] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("verify_strict one by one, {n} signatures"), |b| {
            b.iter(|| {
                for i in 0..n {
                    vks[i].verify_strict(black_box(&msgs[i]), &sigs[i]).unwrap();
                }
            })
        });
        let m: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
        g.bench_function(format!("verify_batch, {n} signatures"), |b| {
            b.iter(|| ed25519_dalek::verify_batch(black_box(&m), &sigs[..n], &vks[..n]).unwrap())
        });
    }
    g.finish();
}

/// Every perfect-subtree hash of a tree of `n` leaves, by level.
fn levels(n: u64) -> Vec<Vec<Hash>> {
    let mut levels = vec![(0..n)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect::<Vec<Hash>>()];
    while levels.last().unwrap().len() > 1 {
        let prev = levels.last().unwrap();
        let next: Vec<Hash> = prev
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
        levels.push(next);
    }
    levels
}

fn merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    let leaf = leaf_hash(b"an audit entry of moderate length, as a decision entry would be");
    g.bench_function("leaf hash", |b| {
        b.iter(|| leaf_hash(black_box(b"an audit entry of moderate length")))
    });
    let mut f = MerkleFrontier::new();
    g.bench_function("frontier append", |b| {
        b.iter(|| f.push(black_box(leaf)).unwrap())
    });
    let mut big = MerkleFrontier::new();
    for i in 0..1_000_000u64 {
        big.push(leaf_hash(&i.to_be_bytes())).unwrap();
    }
    g.bench_function("frontier root at 10^6", |b| {
        b.iter(|| black_box(&big).root())
    });

    let n = 1_000_000u64;
    let tree = levels(n);
    let get = |level: u32, index: u64| -> Option<Hash> {
        tree.get(level as usize)?.get(index as usize).copied()
    };
    let root = big.root();
    let mut i = 0u64;
    g.bench_function("inclusion proof build at 10^6", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            inclusion_proof_with(i, n, get).unwrap()
        })
    });
    let index = 123_457u64;
    let proof = inclusion_proof_with(index, n, get).unwrap();
    let lh = leaf_hash(&index.to_be_bytes());
    g.bench_function("inclusion proof verify at 10^6", |b| {
        b.iter(|| verify_inclusion(black_box(&lh), index, n, &proof, &root).unwrap())
    });
    g.finish();
}

criterion_group!(benches, envelopes, merkle);
criterion_main!(benches);
