use serde::{Deserialize, Serialize};
use throughgate_protocol::consent::{Consent, ConsentStatus};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{ConsentId, PassportId};
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

impl Db {
    /// The writes that store a consent and, at a holder, its passport-to-subject link. If the
    /// consent supersedes another stored here, that one is marked superseded in the same batch.
    pub fn consent_writes(
        &self,
        consent: &StoredConsent,
        link: Option<&str>,
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
        if let Some(subject) = link {
            b.put(
                key(&["lnk/", body.passport_id.as_str()]),
                subject.as_bytes().to_vec(),
            );
        }
        if let Some(old_id) = &body.supersedes {
            if let Some(mut old) = self.consent(old_id)? {
                // Only the agency that recorded a consent may supersede it, for the same person.
                if old.body.passport_id == body.passport_id
                    && old.body.recorded_by == body.recorded_by
                    && old.status == ConsentStatus::Active
                {
                    old.status = ConsentStatus::Superseded;
                    old.status_since = now;
                    old.superseded_by = Some(body.consent_id.clone());
                    b.put(consent_key(old_id), encode(&old));
                }
            }
        }
        Ok(b)
    }

    /// Stores a consent (see [`Db::consent_writes`]) atomically, then flushes.
    pub fn put_consent(
        &self,
        consent: &StoredConsent,
        link: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let b = self.consent_writes(consent, link, now)?;
        self.store.apply(b)?;
        self.store.flush()
    }

    /// Links a passport to a local subject, then flushes.
    pub fn put_link(&self, passport: &PassportId, subject: &str) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(
            key(&["lnk/", passport.as_str()]),
            subject.as_bytes().to_vec(),
        );
        self.store.apply(b)?;
        self.store.flush()
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

    /// The local subject a passport is linked to here, if any.
    pub fn linked_subject(&self, passport: &PassportId) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&key(&["lnk/", passport.as_str()]))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}
