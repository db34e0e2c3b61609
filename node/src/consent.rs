//! The consent register's shared rules, used wherever a consent is stored or changes status:
//! by the holder receiving one, the requester recording one, and a restore re-checking one.

use throughgate_protocol::audit::{AuditEvent, ConsentEntry};
use throughgate_protocol::consent::{Consent, ConsentStatus};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{ConsentId, PersonId};
use throughgate_protocol::messages::AckOutcome;
use throughgate_protocol::time::Timestamp;

use crate::config::ConsentRules;
use crate::db::{Db, StoredConsent};

/// Refuses a consent whose validity is longer than `rules` allow.
pub fn within_validity(consent: &Consent, rules: &ConsentRules) -> Result<(), String> {
    let secs = consent.valid_until.0.saturating_sub(consent.valid_from.0);
    if secs > rules.max_validity_secs() {
        return Err(format!(
            "the consent is valid for {} days; this agency accepts at most {} days",
            secs.div_ceil(86_400),
            rules.max_validity_days
        ));
    }
    Ok(())
}

/// A consent as first stored, recorded here or received at `now`: active, never revoked or
/// superseded, its expiry not yet logged.
pub fn newly_active(envelope: Envelope, body: Consent, now: Timestamp) -> StoredConsent {
    StoredConsent {
        envelope,
        body,
        status: ConsentStatus::Active,
        status_since: now,
        received_at: now,
        revocation: None,
        superseded_by: None,
        expiry_logged: false,
    }
}

/// The audit record of a consent event.
pub fn consent_entry(
    c: &Consent,
    person: Option<PersonId>,
    linkage: Option<AckOutcome>,
) -> ConsentEntry {
    ConsentEntry {
        consent_id: c.consent_id.clone(),
        passport_id: c.passport_id.clone(),
        recorded_by: c.recorded_by.clone(),
        person,
        purpose: c.purpose,
        linkage,
    }
}

/// The log entry saying that consent `old` (if stored here) was superseded by the one `new`
/// records.
pub fn superseded_event(
    db: &Db,
    old: Option<&ConsentId>,
    new: &ConsentEntry,
) -> Result<Option<AuditEvent>, crate::store::StoreError> {
    let Some(old) = old else { return Ok(None) };
    let Some(prev) = db.consent(old)? else {
        return Ok(None);
    };
    if prev.superseded_by.as_ref() != Some(&new.consent_id) {
        return Ok(None);
    }
    let mut entry = consent_entry(&prev.body, new.person.clone(), None);
    entry.linkage = None;
    Ok(Some(AuditEvent::ConsentSuperseded(entry)))
}
