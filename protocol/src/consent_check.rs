//! The consent check a holder runs before disclosing: default deny, with a precise reason.
//!
//! A holder answers only under a consent it has itself received and verified, that is active,
//! inside its validity window, for this passport, names the requester as a grantee, covers the
//! query's purpose, names this holder, and covers every category asked of it.

use crate::category::Category;
use crate::consent::{Consent, ConsentStatus};
use crate::ids::AgencyId;
use crate::messages::{Query, RefusalReason};
use crate::time::{Date, Timestamp};

/// What a consent allows for one query at one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentScope {
    /// The categories asked of this holder, all covered.
    pub categories: Vec<Category>,
    /// Earliest date records may be about.
    pub records_from: Option<Date>,
    /// Latest date records may be about.
    pub records_until: Option<Date>,
}

impl ConsentScope {
    /// Whether a record about `date` falls inside the covered period.
    pub fn covers_date(&self, date: Date) -> bool {
        self.records_from.is_none_or(|from| date >= from)
            && self.records_until.is_none_or(|until| date <= until)
    }
}

/// Decides whether `consent`, whose stored status is `status`, lets `holder` answer `query`
/// at `now`.
pub fn check_consent(
    consent: &Consent,
    status: ConsentStatus,
    query: &Query,
    holder: &AgencyId,
    now: Timestamp,
) -> Result<ConsentScope, RefusalReason> {
    if consent.passport_id != query.passport_id {
        return Err(RefusalReason::ConsentPassportMismatch);
    }
    match status {
        ConsentStatus::Revoked => return Err(RefusalReason::ConsentRevoked),
        ConsentStatus::Superseded => return Err(RefusalReason::ConsentSuperseded),
        ConsentStatus::Expired => return Err(RefusalReason::ConsentExpired),
        ConsentStatus::Active => {}
    }
    if now < consent.valid_from {
        return Err(RefusalReason::ConsentNotYetValid);
    }
    if now >= consent.valid_until {
        return Err(RefusalReason::ConsentExpired);
    }
    if !consent.is_grantee(&query.requester) {
        return Err(RefusalReason::RequesterNotGrantee);
    }
    if consent.purpose != query.purpose {
        return Err(RefusalReason::PurposeNotCovered);
    }
    let scope = consent
        .scope_for(holder)
        .ok_or(RefusalReason::HolderNotCovered)?;
    let request = query
        .request_for(holder)
        .ok_or(RefusalReason::NotAddressed)?;
    if request.categories.is_empty() {
        return Err(RefusalReason::NotAddressed);
    }
    if request
        .categories
        .iter()
        .any(|c| !scope.categories.contains(c))
    {
        return Err(RefusalReason::CategoryNotCovered);
    }
    let mut categories = request.categories.clone();
    categories.sort();
    categories.dedup();
    Ok(ConsentScope {
        categories,
        records_from: consent.records_from,
        records_until: consent.records_until,
    })
}
