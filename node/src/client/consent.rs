//! Client-side consent: building and signing the artefact (with fresh salts and commitments per
//! holder), recording it through the home node, revoking, looking consents up.

use rand::RngCore;
use sha2::{Digest, Sha256};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::{
    Collection, Consent, ConsentRevocation, ConsentStatus, HolderScope,
};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::identifiers::{commitment, SubjectIdentifier, SALT_LEN};
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId};
use throughgate_protocol::messages::{
    ClientOp, ClientResponse, ConsentDelivery, ConsentSummary, HolderSubject,
};
use throughgate_protocol::time::{Date, Timestamp};

use super::{unexpected, ClientError, HomeClient};

/// What `tg consent revoke --passport` did.
#[derive(Debug, Clone, Default)]
pub struct WithdrawAll {
    /// The consents withdrawn, each with its deliveries.
    pub revoked: Vec<(ConsentId, Vec<ConsentDelivery>)>,
    /// Active consents recorded at other agencies: withdraw them there.
    pub elsewhere: Vec<ConsentSummary>,
}

/// What a consent will say, before it is signed.
#[derive(Debug, Clone)]
pub struct ConsentPlan {
    /// The person.
    pub passport_id: PassportId,
    /// The purpose.
    pub purpose: Purpose,
    /// Per holder: the person's identifier there and the categories covered.
    pub holders: Vec<(AgencyId, SubjectIdentifier, Vec<Category>)>,
    /// Who may receive the records.
    pub grantees: Vec<AgencyId>,
    /// Valid from.
    pub valid_from: Timestamp,
    /// Valid until.
    pub valid_until: Timestamp,
    /// Earliest date records may be about.
    pub records_from: Option<Date>,
    /// Latest date records may be about.
    pub records_until: Option<Date>,
    /// Lawful basis.
    pub legal_basis: String,
    /// Jurisdiction.
    pub jurisdiction: String,
    /// How consent was collected.
    pub collection: Collection,
    /// The privacy notice text shown to the person (its SHA-256 is signed).
    pub privacy_notice: String,
    /// The consent this one replaces.
    pub supersedes: Option<ConsentId>,
}

/// A consent signed by the caseworker, ready to send to the home node.
#[derive(Debug, Clone)]
pub struct SignedConsent {
    /// The artefact with the caseworker's signature.
    pub envelope: Envelope,
    /// Each holder's identifier and salt (sent only to the home node, which sends each holder
    /// its own).
    pub subjects: Vec<HolderSubject>,
    /// The new consent's id.
    pub consent_id: ConsentId,
    /// When it supersedes another: that one's revocation, for the agencies the new consent
    /// leaves out.
    pub retire: Option<Envelope>,
}

impl HomeClient {
    /// Builds and signs (as the caller) the consent artefact, with a fresh salt per holder.
    pub fn sign_consent(&self, plan: &ConsentPlan) -> SignedConsent {
        let mut holders = Vec::new();
        let mut subjects = Vec::new();
        for (agency, id, cats) in &plan.holders {
            let mut salt = [0u8; SALT_LEN];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            holders.push(HolderScope {
                agency: agency.clone(),
                categories: cats.clone(),
                subject_commitment: commitment(agency, id, &salt),
            });
            subjects.push(HolderSubject {
                agency: agency.clone(),
                identifier: id.clone(),
                salt,
            });
        }
        let cred = self.credential();
        let consent_id = ConsentId::random();
        let consent = Consent {
            consent_id: consent_id.clone(),
            passport_id: plan.passport_id.clone(),
            purpose: plan.purpose,
            purpose_text: plan.purpose.describe().to_owned(),
            holders,
            grantees: plan.grantees.clone(),
            valid_from: plan.valid_from,
            valid_until: plan.valid_until,
            records_from: plan.records_from,
            records_until: plan.records_until,
            legal_basis: plan.legal_basis.clone(),
            jurisdiction: plan.jurisdiction.clone(),
            collection: plan.collection.clone(),
            privacy_notice_sha256: Sha256::digest(plan.privacy_notice.as_bytes()).into(),
            recorded_by: cred.agency.clone(),
            recorded_by_person: cred.person_id.clone(),
            recorded_at: self.clock().now(),
            supersedes: plan.supersedes.clone(),
            credential: self.credential_envelope().clone(),
        };
        let envelope = Envelope::seal(&consent, &[(SignerRole::Person, self.key())]);
        let retire = plan.supersedes.as_ref().map(|old| {
            let rev = ConsentRevocation {
                consent_id: old.clone(),
                passport_id: plan.passport_id.clone(),
                revoked_by: cred.agency.clone(),
                revoked_by_person: cred.person_id.clone(),
                revoked_at: self.clock().now(),
                reason: format!("superseded by {consent_id}"),
                credential: self.credential_envelope().clone(),
            };
            Envelope::seal(&rev, &[(SignerRole::Person, self.key())])
        });
        SignedConsent {
            envelope,
            subjects,
            consent_id,
            retire,
        }
    }

    /// Sends a signed consent to the home node, which countersigns, stores and delivers it.
    pub async fn record_consent(
        &self,
        signed: SignedConsent,
    ) -> Result<Vec<ConsentDelivery>, ClientError> {
        match self
            .call(ClientOp::GrantConsent {
                consent: signed.envelope,
                subjects: signed.subjects,
                retire: signed.retire,
            })
            .await?
        {
            ClientResponse::ConsentRecorded { deliveries, .. } => Ok(deliveries),
            other => Err(unexpected(&other)),
        }
    }

    /// One consent as the home node holds it: the artefact, its status, its deliveries.
    pub async fn show_consent(
        &self,
        id: &ConsentId,
    ) -> Result<(Consent, ConsentStatus, Vec<ConsentDelivery>), ClientError> {
        match self
            .call(ClientOp::ShowConsent {
                consent_id: id.clone(),
            })
            .await?
        {
            ClientResponse::ConsentDetail {
                consent,
                status,
                deliveries,
            } => {
                let c = consent
                    .open()
                    .map_err(|e| ClientError::Protocol(format!("stored consent: {e}")))?;
                Ok((c, status, deliveries))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a consent recorded at this agency; the home node delivers the revocation.
    pub async fn revoke_consent(
        &self,
        id: &ConsentId,
        reason: &str,
    ) -> Result<Vec<ConsentDelivery>, ClientError> {
        let (current, _, _) = self.show_consent(id).await?;
        let cred = self.credential();
        let rev = ConsentRevocation {
            consent_id: id.clone(),
            passport_id: current.passport_id,
            revoked_by: cred.agency.clone(),
            revoked_by_person: cred.person_id.clone(),
            revoked_at: self.clock().now(),
            reason: reason.to_owned(),
            credential: self.credential_envelope().clone(),
        };
        let env = Envelope::seal(&rev, &[(SignerRole::Person, self.key())]);
        match self
            .call(ClientOp::RevokeConsent { revocation: env })
            .await?
        {
            ClientResponse::ConsentDetail { deliveries, .. } => Ok(deliveries),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes consent `id` and every consent it replaced, directly or through others, that was
    /// recorded at this agency and is not withdrawn already (a holder that refused the
    /// replacing consent may still hold the one it replaced active). Returns each consent
    /// withdrawn with its deliveries, `id` first.
    pub async fn revoke_with_replaced(
        &self,
        id: &ConsentId,
        reason: &str,
    ) -> Result<Vec<(ConsentId, Vec<ConsentDelivery>)>, ClientError> {
        let me = self.credential().agency.clone();
        let mut out = vec![(id.clone(), self.revoke_consent(id, reason).await?)];
        let (mut current, _, _) = self.show_consent(id).await?;
        // A chain of replacements is short; the bound only guards against a cycle.
        for _ in 0..256 {
            let Some(prev) = current.supersedes.clone() else {
                break;
            };
            let (consent, status, _) = match self.show_consent(&prev).await {
                Ok(found) => found,
                Err(e) if e.code() == Some(throughgate_protocol::messages::ErrorCode::NotFound) => {
                    break
                }
                Err(e) => return Err(e),
            };
            if consent.recorded_by != me || out.iter().any(|(c, _)| c == &prev) {
                break;
            }
            if status != ConsentStatus::Revoked {
                out.push((prev.clone(), self.revoke_consent(&prev, reason).await?));
            }
            current = consent;
        }
        Ok(out)
    }

    /// The consents about `passport` that the home node knows, in any status.
    pub async fn consents_of(
        &self,
        passport: &PassportId,
    ) -> Result<Vec<ConsentSummary>, ClientError> {
        let op = ClientOp::ListConsents(throughgate_protocol::messages::ConsentFilter {
            passport_id: Some(passport.clone()),
            ..Default::default()
        });
        match self.call(op).await? {
            ClientResponse::Consents(l) => Ok(l),
            other => Err(unexpected(&other)),
        }
    }

    /// Withdraws every consent for `passport` recorded at the caller's agency (the only ones it
    /// may withdraw) that is not withdrawn already: active ones, and superseded ones too, since
    /// a holder that refused the consent replacing one may still hold it active. Returns each
    /// withdrawn consent with its deliveries, and the active consents recorded at other
    /// agencies, which only those agencies can withdraw.
    pub async fn revoke_all(
        &self,
        passport: &PassportId,
        reason: &str,
    ) -> Result<WithdrawAll, ClientError> {
        let me = self.credential().agency.clone();
        let mut out = WithdrawAll::default();
        for c in self.consents_of(passport).await? {
            if !matches!(c.status, ConsentStatus::Active | ConsentStatus::Superseded) {
                continue;
            }
            if c.recorded_by == me {
                let deliveries = self.revoke_consent(&c.consent_id, reason).await?;
                out.revoked.push((c.consent_id, deliveries));
            } else if c.status == ConsentStatus::Active {
                out.elsewhere.push(c);
            }
        }
        Ok(out)
    }

    /// Why there is no consent to query `passport` under, when the person had one: among the
    /// consents naming the caller's agency as a grantee, if none is active, the one that ended
    /// last (withdrawn, expired or superseded). `None` when one is active, or there never was
    /// one.
    pub async fn ended_consent(
        &self,
        passport: &PassportId,
    ) -> Result<Option<ConsentSummary>, ClientError> {
        let me = &self.credential().agency;
        let mine: Vec<ConsentSummary> = self
            .consents_of(passport)
            .await?
            .into_iter()
            .filter(|c| c.grantees.contains(me))
            .collect();
        if mine.iter().any(|c| c.status == ConsentStatus::Active) {
            return Ok(None);
        }
        // Within one second, a withdrawal says more than an expiry, which says more than a
        // supersession.
        let rank = |s: ConsentStatus| match s {
            ConsentStatus::Revoked => 3,
            ConsentStatus::Expired => 2,
            _ => 1,
        };
        Ok(mine
            .into_iter()
            .max_by_key(|c| (c.status_since, rank(c.status))))
    }

    /// The consent to query under: `given` if the home node knows it (`None` if it does not,
    /// leaving holders to decide), else the one active consent for `passport` that names the
    /// caller's agency as a grantee, when every consent naming it (in any status) was recorded
    /// by one agency. Otherwise the caseworker must choose: any caseworker can record a consent
    /// for a passport id, so picking one (the newest, or the only one left after the person
    /// withdrew theirs) would let one caseworker's consent decide what another's passport
    /// shows. `None` when no consent naming the caller's agency is active.
    pub async fn consent_for(
        &self,
        passport: &PassportId,
        given: Option<&ConsentId>,
    ) -> Result<Option<Consent>, ClientError> {
        if let Some(id) = given {
            return match self.show_consent(id).await {
                Ok((c, _, _)) => Ok(Some(c)),
                Err(e) if e.code() == Some(throughgate_protocol::messages::ErrorCode::NotFound) => {
                    Ok(None)
                }
                Err(e) => Err(e),
            };
        }
        let me = &self.credential().agency;
        let mine: Vec<ConsentSummary> = self
            .consents_of(passport)
            .await?
            .into_iter()
            .filter(|c| c.grantees.contains(me))
            .collect();
        let active: Vec<&ConsentSummary> = mine
            .iter()
            .filter(|c| c.status == ConsentStatus::Active)
            .collect();
        let one_recorder = mine
            .iter()
            .all(|c| mine.first().is_some_and(|f| f.recorded_by == c.recorded_by));
        match active.as_slice() {
            [] => Ok(None),
            [one] if one_recorder => Ok(Some(self.show_consent(&one.consent_id).await?.0)),
            _ => {
                let list: Vec<String> = mine
                    .iter()
                    .map(|c| {
                        format!(
                            "{} ({}, {}, recorded by {} on {})",
                            c.consent_id,
                            c.status,
                            c.purpose,
                            c.recorded_by,
                            c.valid_from.date()
                        )
                    })
                    .collect();
                Err(ClientError::AmbiguousConsent(format!(
                    "passport {passport} has consents naming your agency from more than one recording, or more than one active: {}; choose the one the person gave for this purpose with --consent ID (`tg consent show ID` shows each)",
                    list.join("; ")
                )))
            }
        }
    }
}
