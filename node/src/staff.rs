//! Staff credentials: issuing them under the node key; withdrawal at the issuing node
//! (effective at once: the node refuses the person's connections and requests) and its
//! announcement to every member through the durable outbox, so holders refuse any query that
//! still carries the withdrawn credential (defence in depth against a query countersigned
//! before the withdrawal, or a compromised home node).

use throughgate_protocol::credential::{CredentialAck, CredentialRevocation};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::messages::{ClientResponse, ErrorCode, StaffSummary};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::db::{Db, OutboxPayload, StoredStaff};
use crate::keyring::NodeKey;
use crate::queue::Outbox;
use crate::state::NodeState;
use crate::trust::Trust;

/// What issuing, withdrawing and listing staff credentials uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Staffing<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// The node key, which signs credentials.
    pub key: &'a NodeKey,
    /// Storage: staff credentials and withdrawn ones.
    pub db: &'a Db,
    /// The clock.
    pub clock: &'a Clock,
    /// The manifest and the staff keys in force.
    pub trust: &'a Trust,
    /// The audit log.
    pub audit: &'a AuditLog,
    /// The delivery queue (announcing a withdrawal).
    pub outbox: &'a Outbox,
}

impl<'a> Staffing<'a> {
    /// The parts of `state` that staff credentials use.
    pub fn of(state: &'a NodeState) -> Self {
        Staffing {
            agency: &state.agency,
            key: &state.key,
            db: &state.db,
            clock: &state.clock,
            trust: &state.trust,
            audit: &state.audit,
            outbox: &state.outbox,
        }
    }
}

type OpResult = Result<ClientResponse, (ErrorCode, String)>;

/// Longest credential a node issues, in days.
pub const MAX_CREDENTIAL_DAYS: u32 = 400;

/// A credential for `credential` signed by the node key `node_key`, as the node stores it
/// (used by the API and by `tg node init`).
pub fn issue_credential(
    node_key: &throughgate_protocol::keys::SecretKey,
    credential: throughgate_protocol::credential::Credential,
) -> StoredStaff {
    let env = Envelope::seal(
        &credential,
        &[(throughgate_protocol::envelope::SignerRole::Node, node_key)],
    );
    StoredStaff {
        credential: env,
        body: credential,
        revoked_at: None,
        revoked_by: None,
    }
}

fn internal(e: impl std::fmt::Display) -> (ErrorCode, String) {
    tracing::error!(error = %e, "staff operation failed");
    (
        ErrorCode::Internal,
        "storage failure; see the node's log".into(),
    )
}

/// Logs an administrative `action` taken by `operator`; a failure to log is an internal error
/// carrying its message.
pub(crate) async fn log_by(
    audit: &AuditLog,
    operator: &StoredStaff,
    action: &str,
    detail: String,
) -> Result<(), (ErrorCode, String)> {
    audit
        .log_admin(Some(&operator.body.person_id), action, detail)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))
}

/// Logs `credential_issued` for the credentials `tg node init` issued offline (the first
/// operator), which no log could record then. Called once the audit writer runs and before the
/// node serves: only when the log is still empty, so those entries come first and are never
/// written twice. Returns how many were logged (their receipts arrive asynchronously).
pub fn log_offline_issued(state: &Staffing<'_>) -> Result<usize, crate::store::StoreError> {
    if state.audit.latest().is_some() {
        return Ok(0);
    }
    let staff = state.db.all_staff()?;
    for s in &staff {
        let pending =
            state
                .audit
                .submit(throughgate_protocol::audit::AuditEvent::CredentialIssued {
                    person_id: s.body.person_id.clone(),
                    roles: s.body.roles.clone(),
                    not_after: s.body.not_after,
                });
        tokio::spawn(async move {
            if let Err(e) = pending.wait().await {
                tracing::error!(error = %e, "could not log a credential issued at init");
            }
        });
    }
    Ok(staff.len())
}

/// Withdraws a member of staff's credential (operator).
pub async fn revoke(state: &Staffing<'_>, operator: &StoredStaff, person: &PersonId) -> OpResult {
    let staff = state.db.staff(person).map_err(internal)?.ok_or((
        ErrorCode::NotFound,
        format!("no staff credential for {person} here"),
    ))?;
    if staff.revoked_at.is_some() {
        return Err((
            ErrorCode::BadRequest,
            format!("{person}'s credential is already revoked"),
        ));
    }
    let staff = withdraw(state, operator, staff).await?;
    Ok(ClientResponse::Staff(vec![summary(state, &staff)]))
}

/// Revokes `staff`'s credential, stores and announces the revocation, and logs it. Returns the
/// revoked record.
async fn withdraw(
    state: &Staffing<'_>,
    operator: &StoredStaff,
    mut staff: StoredStaff,
) -> Result<StoredStaff, (ErrorCode, String)> {
    let person = staff.body.person_id.clone();
    let person = &person;
    if &operator.body.person_id == person {
        return Err((
            ErrorCode::BadRequest,
            "you cannot revoke your own credential; ask another operator".into(),
        ));
    }
    let now = state.clock.now();
    staff.revoked_at = Some(now);
    staff.revoked_by = Some(operator.body.person_id.clone());
    state.db.put_staff(&staff).map_err(internal)?;
    state.trust.add_staff(staff.clone());
    state
        .db
        .put_revoked_credential(state.agency, &staff.body.public_key, now)
        .map_err(internal)?;
    let rev = CredentialRevocation {
        agency: state.agency.clone(),
        person_id: person.clone(),
        public_key: staff.body.public_key,
        revoked_at: now,
    };
    let env = state.key.seal(&rev);
    let recipients: Vec<AgencyId> = state
        .trust
        .manifest()
        .map(|m| {
            m.members
                .iter()
                .map(|x| x.id.clone())
                .filter(|a| a != state.agency)
                .collect()
        })
        .unwrap_or_default();
    let items = recipients
        .into_iter()
        .map(|r| {
            (
                r,
                OutboxPayload::CredentialRevoke {
                    person_id: person.clone(),
                    envelope: env.clone(),
                },
            )
        })
        .collect();
    state
        .outbox
        .enqueue(items, crate::store::WriteBatch::new(), now)
        .map_err(internal)?;
    log_by(
        state.audit,
        operator,
        "credential_revoked",
        format!("credential of {person} withdrawn and announced to every member"),
    )
    .await?;
    tracing::info!(person = %person, by = %operator.body.person_id, "credential revoked");
    Ok(staff)
}

/// Replaces `person`'s credential with one for `public_key`: the old one is revoked (and
/// announced, unless it already was) and a new one issued with the same name and roles. Both
/// are logged.
pub async fn reissue(
    state: &Staffing<'_>,
    operator: &StoredStaff,
    person: &PersonId,
    public_key: throughgate_protocol::keys::PublicKey,
    valid_days: u32,
) -> OpResult {
    let old = state.db.staff(person).map_err(internal)?.ok_or((
        ErrorCode::NotFound,
        format!("no staff credential for {person} here; issue one with `tg staff add`"),
    ))?;
    if valid_days == 0 || valid_days > MAX_CREDENTIAL_DAYS {
        return Err((
            ErrorCode::BadRequest,
            format!("valid days must be between 1 and {}", MAX_CREDENTIAL_DAYS),
        ));
    }
    if public_key == old.body.public_key
        || state
            .db
            .staff_by_key(&public_key)
            .map_err(internal)?
            .is_some()
        || state
            .trust
            .manifest()
            .is_some_and(|m| m.member_by_key(&public_key).is_some())
    {
        return Err((
            ErrorCode::BadRequest,
            "the new key must be a fresh key that no one else holds".into(),
        ));
    }
    if old.revoked_at.is_none() {
        withdraw(state, operator, old.clone()).await?;
    }
    let now = state.clock.now();
    let cred = throughgate_protocol::credential::Credential {
        person_id: person.clone(),
        display_name: old.body.display_name.clone(),
        agency: state.agency.clone(),
        roles: old.body.roles.clone(),
        public_key,
        not_before: now,
        not_after: now.plus_secs(u64::from(valid_days) * 86_400),
    };
    let staff = issue_credential(&state.key.current(), cred);
    state.db.put_staff(&staff).map_err(internal)?;
    state.trust.add_staff(staff.clone());
    state
        .audit
        .append(throughgate_protocol::audit::AuditEvent::CredentialIssued {
            person_id: staff.body.person_id.clone(),
            roles: staff.body.roles.clone(),
            not_after: staff.body.not_after,
        })
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    tracing::info!(person = %person, by = %operator.body.person_id, "credential reissued");
    Ok(ClientResponse::Credential(staff.credential))
}

/// Whether `s` is a credential still in force at `now`: not revoked and within its window.
fn in_force(s: &StoredStaff, now: throughgate_protocol::time::Timestamp) -> bool {
    s.revoked_at.is_none() && now < s.body.not_after
}

/// The node key that signed `s`.
fn issuer_of(s: &StoredStaff) -> Option<throughgate_protocol::keys::PublicKey> {
    s.credential
        .signers(throughgate_protocol::envelope::SignerRole::Node)
        .next()
        .copied()
}

/// The credentials in force that `manifest` would strand: signed by a key it does not list for
/// this agency. Retiring a key must wait until this is empty.
pub fn stranded_by(
    state: &Staffing<'_>,
    manifest: &throughgate_protocol::manifest::Manifest,
) -> Result<Vec<StoredStaff>, (ErrorCode, String)> {
    let keys = manifest
        .member(state.agency)
        .map(|m| m.node_keys.clone())
        .unwrap_or_default();
    let now = state.clock.now();
    Ok(state
        .db
        .all_staff()
        .map_err(internal)?
        .into_iter()
        .filter(|s| in_force(s, now) && issuer_of(s).is_none_or(|k| !keys.contains(&k)))
        .collect())
}

/// Re-issues under the node's current key every credential in force that another key signed:
/// the very same body (staff id, name, roles, the person's key, validity window), only newly
/// signed, so nothing is widened and the holder's key is unchanged. Revoked and expired
/// credentials are left as they are. Each is logged (`credential_reissued`). Returns those
/// re-issued.
pub async fn reissue_under_current_key(
    state: &Staffing<'_>,
    by: Option<&PersonId>,
) -> Result<Vec<StoredStaff>, (ErrorCode, String)> {
    let key = state.key.current();
    let current = key.public();
    let now = state.clock.now();
    let mut done = Vec::new();
    for old in state.db.all_staff().map_err(internal)? {
        let issuer = issuer_of(&old);
        if !in_force(&old, now) || issuer == Some(current) {
            continue;
        }
        let staff = issue_credential(&key, old.body.clone());
        state.db.put_staff(&staff).map_err(internal)?;
        state.trust.add_staff(staff.clone());
        state
            .audit
            .log_admin(
                by,
                "credential_reissued",
                format!(
                    "credential of {} re-issued under node key {} (was signed by {}); same key, roles and validity",
                    staff.body.person_id,
                    current.fingerprint(),
                    issuer.map_or_else(|| "no key".to_owned(), |k| k.fingerprint())
                ),
            )
            .await
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        tracing::info!(person = %staff.body.person_id, "credential re-issued under the current node key");
        done.push(staff);
    }
    Ok(done)
}

/// The caller's credential as this node holds it now: after a key rotation, the one re-issued
/// under the current key. Looked up by the key that authenticated the caller, never built from
/// anything the caller sent.
pub fn current_credential(state: &Staffing<'_>, caller: &StoredStaff) -> OpResult {
    let stored = state
        .db
        .staff(&caller.body.person_id)
        .map_err(internal)?
        .filter(|s| s.body.public_key == caller.body.public_key && s.revoked_at.is_none())
        .ok_or((
            ErrorCode::Forbidden,
            "your credential is no longer held here; ask your node's operator".to_owned(),
        ))?;
    Ok(ClientResponse::Credential(stored.credential))
}

/// A credential as `tg staff list` shows it.
pub fn summary(state: &Staffing<'_>, s: &StoredStaff) -> StaffSummary {
    let issuer = s
        .credential
        .signers(throughgate_protocol::envelope::SignerRole::Node)
        .next()
        .copied();
    let now = state.clock.now();
    let issuer_current = match (state.trust.manifest(), issuer) {
        (Some(m), Some(k)) => m
            .member(state.agency)
            .is_some_and(|me| me.node_keys.contains(&k)),
        _ => false,
    };
    let st = if s.revoked_at.is_some() {
        "revoked"
    } else if now >= s.body.not_after {
        "expired"
    } else if now < s.body.not_before {
        "not_yet_valid"
    } else if !issuer_current {
        "issuer_retired"
    } else if issuer != Some(state.key.current().public()) {
        "previous_key"
    } else {
        "active"
    };
    StaffSummary {
        person_id: s.body.person_id.clone(),
        roles: s.body.roles.clone(),
        not_after: s.body.not_after,
        key_fingerprint: s.body.public_key.fingerprint(),
        display_name: s.body.display_name.clone(),
        issuer_key: issuer.map(|k| k.fingerprint()).unwrap_or_default(),
        state: st.into(),
        revoked_at: s.revoked_at,
        revoked_by: s.revoked_by.clone(),
    }
}

/// Records another agency's announcement that it withdrew a staff credential.
pub async fn receive_revocation(state: &Staffing<'_>, from: &AgencyId, env: &Envelope) -> Envelope {
    if let Err((code, why)) = state.trust.check_peer_signed(from, env) {
        return state.key.error(code, why);
    }
    let rev: CredentialRevocation = match env.open() {
        Ok(r) => r,
        Err(e) => return state.key.error(ErrorCode::Malformed, e.to_string()),
    };
    if &rev.agency != from {
        return state.key.error(
            ErrorCode::Forbidden,
            "an agency may only revoke its own staff's credentials",
        );
    }
    let fresh = match state.db.credential_revoked(from, &rev.public_key) {
        Ok(known) => !known,
        Err(e) => return state.key.error(ErrorCode::Internal, e.to_string()),
    };
    if fresh {
        if let Err(e) = state
            .db
            .put_revoked_credential(from, &rev.public_key, rev.revoked_at)
        {
            return state.key.error(ErrorCode::Internal, e.to_string());
        }
        let logged = state
            .audit
            .log_admin(
                None,
                "credential_revocation_received",
                format!("{from} withdrew the credential of {}", rev.person_id),
            )
            .await;
        if let Err(e) = logged {
            return state.key.error(ErrorCode::Internal, e.to_string());
        }
    }
    state.key.seal(&CredentialAck {
        agency: state.agency.clone(),
        issuer: from.clone(),
        person_id: rev.person_id,
        at: state.clock.now(),
    })
}
