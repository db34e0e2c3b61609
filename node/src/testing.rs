//! A holder's parts built directly, with no socket: `nhs-wy` (holding health records under NHS
//! numbers) over the in-memory store, in a federation with `probation-yorks` (a requester),
//! so that handlers can be run whole in unit tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::{Collection, CollectionMethod, Consent, HolderScope};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::identifiers::{commitment, IdScheme, SubjectIdentifier};
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId, RecordId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{Governance, Manifest, Member, MemberRole, Sector};
use throughgate_protocol::messages::{HolderRequest, Query};
use throughgate_protocol::record::Record;
use throughgate_protocol::sigcache::SigCache;
use throughgate_protocol::time::{Date, Timestamp};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::consent_gate::ConsentGate;
use crate::db::{Db, Linkage};
use crate::keyring::NodeKey;
use crate::metrics::Metrics;
use crate::peer::consent_in::ConsentIn;
use crate::peer::holder::Holder;
use crate::policy::Policy;
use crate::ratelimit::{ConsentLimits, RateLimiter};
use crate::source::cache::AnswerCache;
use crate::source::{RecordSource, StoreSource};
use crate::store::MemoryStore;
use crate::trust::Trust;
use crate::workers::witness::Witness;

/// The holder.
pub const HOLDER: &str = "nhs-wy";
/// The requester, which also records consents.
pub const REQUESTER: &str = "probation-yorks";
/// The NHS number of the one person whose records the holder keeps.
pub const SUBJECT: &str = "9434765919";
/// The salt of that person's commitment in consents.
pub const SALT: [u8; 16] = [7; 16];

/// An agency id.
pub fn agency(s: &str) -> AgencyId {
    AgencyId::new(s).unwrap()
}

fn holder_key() -> SecretKey {
    SecretKey::from_seed(&[3; 32])
}

fn requester_key() -> SecretKey {
    SecretKey::from_seed(&[4; 32])
}

fn caseworker_key() -> SecretKey {
    SecretKey::from_seed(&[5; 32])
}

/// The holder's parts, owned; [`Parts::holder`] and [`Parts::consent_in`] lend them out as a
/// handler's context.
pub struct Parts {
    /// This agency.
    pub agency: AgencyId,
    /// Its key.
    pub key: NodeKey,
    /// Its configuration (defaults, NHS numbers).
    pub config: NodeConfig,
    /// The in-memory store.
    pub db: Db,
    /// The store as the record source.
    pub records: Arc<dyn RecordSource>,
    /// Off.
    pub source_cache: AnswerCache,
    /// The federation's manifest.
    pub trust: Trust,
    /// The system clock.
    pub clock: Clock,
    /// Releases health (`gp_registration`: `practice` and `status`) for resettlement to anyone.
    pub policy: Arc<Policy>,
    /// Metrics.
    pub metrics: Metrics,
    /// Generous.
    pub caseworker_rate: RateLimiter,
    /// The defaults.
    pub consent_limits: ConsentLimits,
    /// The started log.
    pub audit: AuditLog,
    /// The gate.
    pub consent_gate: ConsentGate,
    /// Empty.
    pub sig_cache: SigCache,
    /// Zero.
    pub consent_alarms: AtomicU64,
    /// Zero.
    pub witness_alarms: AtomicU64,
}

impl Parts {
    /// A holder with the manifest installed, its audit log started (so inside a Tokio
    /// runtime), one person's records stored and nothing else.
    pub fn new() -> Parts {
        let agency = agency(HOLDER);
        let clock = Clock::system();
        let db = Db::new(Arc::new(MemoryStore::new()));
        let key = NodeKey::new(holder_key());
        let config = NodeConfig::parse(
            "agency = \"nhs-wy\"\nlisten = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n\
             data_dir = \"data\"\nid_scheme = \"nhs_number\"\n",
        )
        .unwrap();
        let trust = Trust::new(agency.clone(), clock.clone());
        trust.install_manifest(&manifest(clock.now())).unwrap();
        let policy = Policy::parse(
            "[[release]]\npurpose = \"resettlement\"\nto = [\"*\"]\ncategories = [\"health\"]\n\
             [release.fields]\ngp_registration = [\"practice\", \"status\"]\n",
        )
        .unwrap();
        db.put_records(&[Record {
            record_id: RecordId::new("gp-1").unwrap(),
            subject: SUBJECT.into(),
            category: Category::Health,
            kind: "gp_registration".into(),
            fields: [
                ("practice", "Park Surgery"),
                ("status", "registered"),
                ("nhs_notes", "not for release"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            about: Date::parse("2026-01-02").unwrap(),
            recorded_at: clock.now(),
            source_system: "SystmOne".into(),
        }])
        .unwrap();
        let metrics = Metrics::new();
        let audit = AuditLog::open(
            db.clone(),
            key.clone(),
            agency.clone(),
            clock.clone(),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        audit.start().unwrap();
        Parts {
            records: Arc::new(StoreSource::new(db.clone())),
            source_cache: AnswerCache::new(0),
            caseworker_rate: RateLimiter::new(1000, 1000),
            consent_limits: ConsentLimits::new(&config.consent),
            consent_gate: ConsentGate::new(),
            sig_cache: SigCache::default(),
            consent_alarms: AtomicU64::new(0),
            witness_alarms: AtomicU64::new(0),
            policy: Arc::new(policy),
            agency,
            key,
            config,
            db,
            trust,
            clock,
            metrics,
            audit,
        }
    }

    /// What answering a query sees of this holder.
    pub fn holder(&self) -> Holder<'_> {
        Holder {
            agency: &self.agency,
            key: &self.key,
            config: &self.config,
            db: &self.db,
            records: &*self.records,
            source_cache: &self.source_cache,
            trust: &self.trust,
            clock: &self.clock,
            policy: self.policy.clone(),
            metrics: &self.metrics,
            caseworker_rate: &self.caseworker_rate,
            audit: &self.audit,
            consent_gate: &self.consent_gate,
            sig_cache: &self.sig_cache,
        }
    }

    /// What receiving consents sees of this holder.
    pub fn consent_in(&self) -> ConsentIn<'_> {
        ConsentIn {
            agency: &self.agency,
            key: &self.key,
            config: &self.config,
            db: &self.db,
            records: &*self.records,
            trust: &self.trust,
            clock: &self.clock,
            metrics: &self.metrics,
            consent_limits: &self.consent_limits,
            audit: &self.audit,
            consent_gate: &self.consent_gate,
            consent_alarms: &self.consent_alarms,
        }
    }

    /// What witnessing other members' logs sees of this holder.
    pub fn witness(&self) -> Witness<'_> {
        Witness {
            agency: &self.agency,
            key: &self.key,
            db: &self.db,
            trust: &self.trust,
            clock: &self.clock,
            metrics: &self.metrics,
            audit: &self.audit,
            witness_alarms: &self.witness_alarms,
        }
    }

    /// Stores `consent` as delivered and linked to [`SUBJECT`], as a grant would have.
    pub fn store_linked(&self, consent: &Envelope) {
        let body: Consent = consent.open().unwrap();
        let now = self.clock.now();
        let stored = crate::consent::newly_active(consent.clone(), body, now);
        self.db
            .put_consent(&stored, Some(&Linkage::Linked(SUBJECT.into())), now)
            .unwrap();
    }

    /// The public key answers are signed with.
    pub fn public_key(&self) -> throughgate_protocol::keys::PublicKey {
        self.key.current().public()
    }
}

/// A log of the requester's own, in a store of its own, started, with `entries` entries
/// (distinct from any other log's: each is a query sent with a fresh id).
pub async fn requester_log(entries: usize) -> AuditLog {
    let log = AuditLog::open(
        Db::new(Arc::new(MemoryStore::new())),
        NodeKey::new(requester_key()),
        agency(REQUESTER),
        Clock::system(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    log.start().unwrap();
    for _ in 0..entries {
        log.append(throughgate_protocol::audit::AuditEvent::QuerySent {
            query_id: QueryId::random(),
            query_digest: [0; 32],
            passport_id: PassportId::random(),
            caseworker: PersonId::new("cw-1").unwrap(),
            consent_id: None,
            purpose: Purpose::Resettlement,
            holders: Vec::new(),
        })
        .await
        .unwrap();
    }
    log
}

/// `body` signed by the requester's node.
pub fn from_requester<M: throughgate_protocol::envelope::Message>(body: &M) -> Envelope {
    Envelope::seal(body, &[(SignerRole::Node, &requester_key())])
}

/// The manifest at `now`: the holder and the requester, one governance key.
pub fn manifest(now: Timestamp) -> Envelope {
    let gov = SecretKey::from_seed(&[1; 32]);
    let member = |id: &str, key: &SecretKey, sector, role, scheme| Member {
        id: agency(id),
        name: id.to_uppercase(),
        sector,
        addresses: vec!["127.0.0.1:1".into()],
        node_keys: vec![key.public()],
        categories: vec![Category::Health],
        id_scheme: scheme,
        roles: vec![role],
        retired_keys: vec![],
    };
    let m = Manifest {
        federation: "test".into(),
        version: 1,
        issued_at: now.minus_secs(10),
        expires_at: now.plus_secs(86_400),
        members: vec![
            member(
                HOLDER,
                &holder_key(),
                Sector::Health,
                MemberRole::Holder,
                IdScheme::NhsNumber,
            ),
            member(
                REQUESTER,
                &requester_key(),
                Sector::Justice,
                MemberRole::Requester,
                IdScheme::Crn,
            ),
        ],
        governance: Governance {
            keys: vec![gov.public()],
            threshold: 1,
        },
        witness_threshold: 0,
    };
    Envelope::seal(&m, &[(SignerRole::Governance, &gov)])
}

/// The requester's caseworker's credential, issued by the requester's node.
pub fn credential(now: Timestamp) -> Envelope {
    Envelope::seal(
        &Credential {
            agency: agency(REQUESTER),
            person_id: PersonId::new("cw-1").unwrap(),
            display_name: "Caseworker".into(),
            roles: vec![StaffRole::Caseworker],
            public_key: caseworker_key().public(),
            not_before: now.minus_secs(60),
            not_after: now.plus_secs(86_400),
        },
        &[(SignerRole::Node, &requester_key())],
    )
}

/// A consent recorded by the requester's caseworker for `passport`: health at the holder, for
/// resettlement, the requester the grantee; signed by the caseworker and the requester's node.
pub fn consent(passport: &PassportId, now: Timestamp) -> Envelope {
    let subject = SubjectIdentifier {
        scheme: IdScheme::NhsNumber,
        value: SUBJECT.into(),
    };
    let body = Consent {
        consent_id: ConsentId::random(),
        passport_id: passport.clone(),
        purpose: Purpose::Resettlement,
        purpose_text: "resettlement".into(),
        holders: vec![HolderScope {
            agency: agency(HOLDER),
            categories: vec![Category::Health],
            subject_commitment: commitment(&agency(HOLDER), &subject, &SALT),
        }],
        grantees: vec![agency(REQUESTER)],
        valid_from: now.minus_secs(60),
        valid_until: now.plus_secs(3600),
        records_from: None,
        records_until: None,
        legal_basis: "explicit consent".into(),
        jurisdiction: "England and Wales".into(),
        collection: Collection {
            method: CollectionMethod::SignedPaperForm,
            reference: "F-1".into(),
        },
        privacy_notice_sha256: [0; 32],
        recorded_by: agency(REQUESTER),
        recorded_by_person: PersonId::new("cw-1").unwrap(),
        recorded_at: now.minus_secs(60),
        supersedes: None,
        credential: credential(now),
    };
    let mut env = Envelope::seal(&body, &[(SignerRole::Person, &caseworker_key())]);
    env.add_signature(SignerRole::Node, &requester_key());
    env
}

/// The requester's delivery of `consent` to the holder, with the holder's identifier.
pub fn grant(consent: &Envelope) -> Envelope {
    Envelope::seal(
        &throughgate_protocol::consent::ConsentGrant {
            consent: consent.clone(),
            recipient: agency(HOLDER),
            subject: Some(SubjectIdentifier {
                scheme: IdScheme::NhsNumber,
                value: SUBJECT.into(),
            }),
            salt: Some(SALT),
        },
        &[(SignerRole::Node, &requester_key())],
    )
}

/// The requester's caseworker's query to the holder for health, for resettlement, under
/// `consent` (if any), signed by the caseworker and the requester's node.
pub fn query(passport: &PassportId, consent: Option<&ConsentId>, now: Timestamp) -> Envelope {
    let q = Query {
        query_id: QueryId::random(),
        passport_id: passport.clone(),
        consent_id: consent.cloned(),
        purpose: Purpose::Resettlement,
        requests: vec![HolderRequest {
            holder: agency(HOLDER),
            categories: vec![Category::Health],
        }],
        requester: agency(REQUESTER),
        caseworker: PersonId::new("cw-1").unwrap(),
        credential: credential(now),
        issued_at: now,
        expires_at: now.plus_secs(60),
        nonce: [0; 16],
    };
    let mut env = Envelope::seal(&q, &[(SignerRole::Person, &caseworker_key())]);
    env.add_signature(SignerRole::Node, &requester_key());
    env
}
