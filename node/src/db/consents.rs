use serde::{Deserialize, Serialize};
use throughgate_protocol::consent::{Consent, ConsentStatus};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId};
use throughgate_protocol::messages::AckOutcome;
use throughgate_protocol::time::Timestamp;

use super::{decode, encode, key, Db};
use crate::store::{StoreError, WriteBatch};

/// A consent as a node keeps it: the signed artefact plus the status that lives outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConsent {
    /// The artefact, with caseworker and node signatures.
    pub envelope: Envelope,
    /// Its decoded body.
    pub body: Consent,
    /// Stored status: active, revoked or superseded (expiry is derived, see [`Self::status_at`]).
    pub status: ConsentStatus,
    /// When the stored status last changed.
    pub status_since: Timestamp,
    /// When this node received (or recorded) it.
    pub received_at: Timestamp,
    /// The signed revocation, once revoked.
    pub revocation: Option<Envelope>,
    /// The consent that replaced this one.
    pub superseded_by: Option<ConsentId>,
    /// Whether its expiry has been logged.
    #[serde(default)]
    pub expiry_logged: bool,
}

impl StoredConsent {
    /// The status at `now`: an active consent past its `valid_until` is expired.
    pub fn status_at(&self, now: Timestamp) -> ConsentStatus {
        if self.status == ConsentStatus::Active && now >= self.body.valid_until {
            ConsentStatus::Expired
        } else {
            self.status
        }
    }
}

fn consent_key(id: &ConsentId) -> Vec<u8> {
    key(&["con/", id.as_str()])
}

fn linkage_key(id: &ConsentId) -> Vec<u8> {
    key(&["lnc/", id.as_str()])
}

fn passport_subject_key(passport: &PassportId) -> Vec<u8> {
    key(&["lnp/", passport.as_str()])
}

/// Keyed by the agency that declared the supersession too: only the recording agency's marker
/// counts, and no other agency can overwrite it.
fn superseded_by_key(old: &ConsentId, by: &AgencyId) -> Vec<u8> {
    key(&["csb/", old.as_str(), "\0", by.as_str()])
}

/// Keyed by the revoking agency too: only the recording agency's revocation counts, and no
/// other agency can overwrite it.
fn pending_revocation_key(id: &ConsentId, by: &AgencyId) -> Vec<u8> {
    key(&["crp/", id.as_str(), "\0", by.as_str()])
}

/// What a holder made of a consent's identifier when the consent arrived: the one local
/// subject the consent may disclose about, or why it discloses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Linkage {
    /// The consent's identifier matched this local subject, who is the passport's person here.
    Linked(String),
    /// No local subject has the consent's identifier.
    NotHeld,
    /// The identifier names a different local subject than the passport id already does here.
    SubjectMismatch,
}

impl Linkage {
    /// Links a consent whose committed identifier is `subject` (known here or not), given the
    /// subject the passport id is already linked to here, if any. A passport id names one
    /// person at a holder, forever: the first consent that links decides who.
    pub fn decide(subject: &str, known: bool, passport_subject: Option<&str>) -> Linkage {
        if !known {
            return Linkage::NotHeld;
        }
        match passport_subject {
            Some(p) if p != subject => Linkage::SubjectMismatch,
            _ => Linkage::Linked(subject.to_owned()),
        }
    }

    /// The acknowledgement outcome reporting it.
    pub fn ack(&self) -> AckOutcome {
        match self {
            Linkage::Linked(_) => AckOutcome::Linked,
            Linkage::NotHeld => AckOutcome::NotHeld,
            Linkage::SubjectMismatch => AckOutcome::SubjectMismatch,
        }
    }
}

impl Db {
    /// The writes that store a consent and, at a holder, its [`Linkage`] (and the passport's
    /// subject, when this is the first consent to link it). If the consent supersedes another,
    /// the supersession is remembered (so the old one is stored superseded should it arrive
    /// later) and, when the old one is stored here, it is marked superseded in the same batch.
    /// The caller holds the consent gate exclusively, so the passport's subject read here
    /// cannot change before the batch is applied.
    pub fn consent_writes(
        &self,
        consent: &StoredConsent,
        linkage: Option<&Linkage>,
        now: Timestamp,
    ) -> Result<WriteBatch, StoreError> {
        let mut b = WriteBatch::new();
        let body = &consent.body;
        b.put(consent_key(&body.consent_id), encode(consent));
        b.put(
            key(&[
                "cpp/",
                body.passport_id.as_str(),
                "/",
                body.consent_id.as_str(),
            ]),
            Vec::new(),
        );
        if let Some(linkage) = linkage {
            self.linkage_writes(&mut b, consent, linkage)?;
        }
        if let Some(old_id) = &body.supersedes {
            b.put(
                superseded_by_key(old_id, &body.recorded_by),
                body.consent_id.as_str().as_bytes().to_vec(),
            );
            if let Some(mut old) = self.consent(old_id)? {
                if supersedes(body, &old.body) && old.status == ConsentStatus::Active {
                    old.status = ConsentStatus::Superseded;
                    old.status_since = now;
                    old.superseded_by = Some(body.consent_id.clone());
                    b.put(consent_key(old_id), encode(&old));
                }
            }
        }
        Ok(b)
    }

    fn linkage_writes(
        &self,
        b: &mut WriteBatch,
        consent: &StoredConsent,
        linkage: &Linkage,
    ) -> Result<(), StoreError> {
        b.put(linkage_key(&consent.body.consent_id), encode(linkage));
        if let Linkage::Linked(subject) = linkage {
            if self.passport_subject(&consent.body.passport_id)?.is_none() {
                b.put(
                    passport_subject_key(&consent.body.passport_id),
                    subject.as_bytes().to_vec(),
                );
            }
        }
        Ok(())
    }

    /// Stores a consent (see [`Db::consent_writes`]) atomically, then flushes.
    pub fn put_consent(
        &self,
        consent: &StoredConsent,
        linkage: Option<&Linkage>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let b = self.consent_writes(consent, linkage, now)?;
        self.store.apply(b)?;
        self.store.flush()
    }

    /// Records the linkage of a consent already stored (its delivery came after the consent
    /// was stored here, e.g. at the recording agency), then flushes. Same rules as
    /// [`Db::consent_writes`].
    pub fn put_linkage(
        &self,
        consent: &StoredConsent,
        linkage: &Linkage,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        self.linkage_writes(&mut b, consent, linkage)?;
        self.store.apply(b)?;
        self.store.flush()
    }

    /// How a consent stored here was linked, if it was delivered as a holder's.
    pub fn consent_linkage(&self, id: &ConsentId) -> Result<Option<Linkage>, StoreError> {
        self.get_decoded("consent linkage", &linkage_key(id))
    }

    /// The local subject a passport id names here, fixed by the first consent that linked.
    pub fn passport_subject(&self, passport: &PassportId) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&passport_subject_key(passport))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The consent recorded by `by` that declared it supersedes `old`, if one arrived here.
    pub fn superseded_by(
        &self,
        old: &ConsentId,
        by: &AgencyId,
    ) -> Result<Option<StoredConsent>, StoreError> {
        let Some(v) = self.store.get(&superseded_by_key(old, by))? else {
            return Ok(None);
        };
        match ConsentId::new(String::from_utf8_lossy(&v).into_owned()) {
            Ok(id) => self.consent(&id),
            Err(_) => Ok(None),
        }
    }

    /// Keeps a verified revocation of a consent not (yet) stored here, made by agency `by`, so
    /// the consent is stored revoked if it arrives later and `by` recorded it; then flushes.
    pub fn put_pending_revocation(
        &self,
        id: &ConsentId,
        by: &AgencyId,
        revocation: &Envelope,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(pending_revocation_key(id, by), encode(revocation));
        self.store.apply(b)?;
        self.store.flush()
    }

    /// A revocation by agency `by` received before its consent, if any.
    pub fn pending_revocation(
        &self,
        id: &ConsentId,
        by: &AgencyId,
    ) -> Result<Option<Envelope>, StoreError> {
        self.get_decoded("pending revocation", &pending_revocation_key(id, by))
    }

    /// Forgets passport links made by an earlier rule that linked a passport id to whichever
    /// consent arrived last (`lnk/`): they may name the wrong person. Returns how many went.
    pub fn drop_legacy_links(&self) -> Result<usize, StoreError> {
        let mut b = WriteBatch::new();
        for (k, _) in self.store.scan(b"lnk/", None, usize::MAX)? {
            b.delete(k);
        }
        let n = b.len();
        if n > 0 {
            self.store.apply(b)?;
            self.store.flush()?;
        }
        Ok(n)
    }

    /// The write that replaces a stored consent's record (status changes).
    pub fn consent_update_writes(&self, consent: &StoredConsent) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(consent_key(&consent.body.consent_id), encode(consent));
        b
    }

    /// Replaces a stored consent's record (status changes), then flushes.
    pub fn update_consent(&self, consent: &StoredConsent) -> Result<(), StoreError> {
        self.store.apply(self.consent_update_writes(consent))?;
        self.store.flush()
    }

    /// One consent.
    pub fn consent(&self, id: &ConsentId) -> Result<Option<StoredConsent>, StoreError> {
        self.get_decoded("consent", &consent_key(id))
    }

    /// Every consent about one passport.
    pub fn consents_of(&self, passport: &PassportId) -> Result<Vec<StoredConsent>, StoreError> {
        let prefix = key(&["cpp/", passport.as_str(), "/"]);
        let mut out = Vec::new();
        for (k, _) in self.store.scan(&prefix, None, usize::MAX)? {
            let id =
                String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned();
            if let Ok(id) = ConsentId::new(id) {
                if let Some(c) = self.consent(&id)? {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Every consent held, in id order.
    pub fn all_consents(&self) -> Result<Vec<StoredConsent>, StoreError> {
        self.store
            .scan(b"con/", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| decode("consent", &k, &v))
            .collect()
    }

    /// Number of consents held.
    pub fn consent_count(&self) -> Result<u64, StoreError> {
        self.store.count(b"con/")
    }
}

/// Whether `new` may supersede `old`: only the agency that recorded a consent may supersede it,
/// for the same passport.
pub fn supersedes(new: &Consent, old: &Consent) -> bool {
    new.supersedes.as_ref() == Some(&old.consent_id)
        && new.passport_id == old.passport_id
        && new.recorded_by == old.recorded_by
}
