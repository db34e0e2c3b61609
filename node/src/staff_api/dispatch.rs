//! The API a member of staff's CLI uses on its home node. Every request is signed by the
//! caller's key (the same key the TLS handshake authenticated) and checked against the caller's
//! roles: caseworkers record consent and assemble passports; DPOs review; operators run the node.

use std::sync::Arc;

use throughgate_protocol::consent::{ConsentRevocation, ConsentStatus};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::messages::{
    ClientOp, ClientRequest, ClientResponse, ConsentFilter, ConsentSummary, ErrorCode,
};

use crate::clock::Clock;
use crate::db::{Db, StoredStaff};
use crate::requester::consent_out::Recorder;
use crate::staff::Staffing;
use crate::staff_api::audit::{Auditor, CheckpointView};
use crate::staff_api::backup::Archiver;
use crate::staff_api::records::Erasure;
use crate::staff_api::rotation::Rotator;
use crate::staff_api::status::StatusView;
use crate::state::NodeState;
use crate::transport::write_envelope;

/// How far a request's timestamp may be from the node's clock, in seconds.
const CLIENT_SKEW_SECS: u64 = 300;

/// Handles one client request; writes progress frames to `send` for assemblies and returns the
/// final answer.
pub async fn handle(
    state: &Arc<NodeState>,
    staff: &Arc<StoredStaff>,
    env: &Envelope,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    budget: &Arc<crate::budget::ConnectionBudget>,
) -> Envelope {
    if env
        .verify_by(SignerRole::Person, &staff.body.public_key)
        .is_err()
    {
        return state.key.error(
            ErrorCode::BadSignature,
            "the request is not signed by the caller's key",
        );
    }
    let req: ClientRequest = match env.open() {
        Ok(r) => r,
        Err(e) => return state.key.error(ErrorCode::Malformed, e.to_string()),
    };
    let now = state.clock.now();
    if req.issued_at.0.abs_diff(now.0) > CLIENT_SKEW_SECS {
        return state.key.error(
            ErrorCode::BadRequest,
            "the request's timestamp is far from the node's clock; check this computer's clock",
        );
    }
    let roles = &staff.body.roles;
    let need = |role: StaffRole| -> Result<(), Envelope> {
        if roles.contains(&role) {
            Ok(())
        } else {
            Err(state.key.error(
                ErrorCode::Forbidden,
                format!(
                    "this needs the {role} role; {} holds {}",
                    staff.body.person_id,
                    list_roles(roles)
                ),
            ))
        }
    };
    let result = match req.op {
        ClientOp::Assemble { query, progress } => match need(StaffRole::Caseworker) {
            Err(e) => return e,
            Ok(())
                if !state
                    .caseworker_rate
                    .allow(&format!("staff/{}", staff.body.person_id)) =>
            {
                state.metrics.limit("caseworker_rate");
                Err((
                    ErrorCode::RateLimited,
                    "you are assembling passports too fast; slow down and retry".into(),
                ))
            }
            Ok(()) => assemble(state, staff, query, progress, send).await,
        },
        ClientOp::GrantConsent {
            consent,
            subjects,
            retire,
        } => match need(StaffRole::Caseworker) {
            Err(e) => return e,
            Ok(()) => crate::requester::consent_out::record(
                &Recorder::of(state),
                staff,
                consent,
                &subjects,
                retire,
            )
            .await
            .map_err(record_err),
        },
        ClientOp::RevokeConsent { revocation } => match need(StaffRole::Caseworker) {
            Err(e) => return e,
            Ok(()) => {
                crate::requester::consent_out::revoke(&Recorder::of(state), staff, revocation)
                    .await
                    .map_err(record_err)
            }
        },
        ClientOp::ListConsents(filter) => {
            let logged = if need(StaffRole::Caseworker).is_err() {
                if let Err(e) = need(StaffRole::Dpo) {
                    return e;
                }
                // A DPO reviewing the register is logged like their audit reads (caseworkers'
                // own status checks are not).
                crate::staff_api::audit::log_access(
                    &Auditor::of(state),
                    staff,
                    filter.passport_id.clone(),
                    "consent_register",
                )
                .await
            } else {
                Ok(())
            };
            logged.and_then(|()| list_consents(&state.db, &state.clock, &filter))
        }
        ClientOp::ShowConsent { consent_id } => {
            let as_dpo = need(StaffRole::Caseworker).is_err();
            if as_dpo {
                if let Err(e) = need(StaffRole::Dpo) {
                    return e;
                }
            }
            match state.db.consent(&consent_id) {
                Ok(Some(c)) => {
                    let logged = if as_dpo {
                        crate::staff_api::audit::log_access(
                            &Auditor::of(state),
                            staff,
                            Some(c.body.passport_id.clone()),
                            "consent_show",
                        )
                        .await
                    } else {
                        Ok(())
                    };
                    logged.and_then(|()| {
                        state
                            .db
                            .deliveries(&consent_id)
                            .map(|deliveries| ClientResponse::ConsentDetail {
                                status: c.status_at(now),
                                consent: c.envelope,
                                deliveries,
                            })
                            .map_err(internal)
                    })
                }
                Ok(None) => Err((
                    ErrorCode::NotFound,
                    format!("no consent {consent_id} is known here"),
                )),
                Err(e) => Err(internal(e)),
            }
        }
        ClientOp::ImportRecords {
            format,
            dry_run,
            total_bytes,
            sha256,
            sync,
        } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                let request = crate::staff_api::import::ImportRequest {
                    format,
                    dry_run,
                    total_bytes,
                    sha256,
                    sync,
                };
                crate::staff_api::import::import(state, staff, request, recv, budget).await
            }
        },
        ClientOp::DeleteRecords {
            subject,
            kind,
            record_id,
        } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                crate::staff_api::records::delete(
                    &Erasure::of(state),
                    staff,
                    &subject,
                    kind.as_deref(),
                    record_id.as_ref(),
                )
                .await
            }
        },
        ClientOp::AddStaff {
            person_id,
            display_name,
            roles: new_roles,
            public_key,
            valid_days,
        } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                add_staff(
                    &Staffing::of(state),
                    person_id,
                    display_name,
                    new_roles,
                    public_key,
                    valid_days,
                )
                .await
            }
        },
        ClientOp::ReissueStaff {
            person_id,
            public_key,
            valid_days,
        } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                crate::staff::reissue(
                    &Staffing::of(state),
                    staff,
                    &person_id,
                    public_key,
                    valid_days,
                )
                .await
            }
        },
        ClientOp::ListStaff => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => list_staff(&Staffing::of(state)),
        },
        ClientOp::Status => status(&StatusView::of(state)),
        ClientOp::GetManifest => state
            .trust
            .manifest_envelope()
            .map(ClientResponse::Manifest)
            .ok_or((ErrorCode::Internal, "node has no manifest".into())),
        ClientOp::AuditSearch(filter) => match need(StaffRole::Dpo) {
            Err(e) => return e,
            Ok(()) => crate::staff_api::audit::search(&Auditor::of(state), staff, filter).await,
        },
        ClientOp::AuditVerify => match need(StaffRole::Dpo) {
            Err(e) => return e,
            Ok(()) => crate::staff_api::audit::verify(&Auditor::of(state), staff).await,
        },
        ClientOp::AuditReport { query, federation } => match need(StaffRole::Dpo) {
            Err(e) => return e,
            Ok(()) => {
                crate::staff_api::audit::report(
                    &Auditor::of(state),
                    &state.peers,
                    state.config.limits.request_timeout(),
                    staff,
                    query,
                    federation,
                )
                .await
            }
        },
        ClientOp::PublishManifest { manifest } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => match refuse_stranding(&Staffing::of(state), &manifest) {
                Err(e) => Err(e),
                Ok(()) => match crate::workers::manifest_sync::adopt(
                    state,
                    &manifest,
                    None,
                    Some(&staff.body.person_id),
                )
                .await
                {
                    Ok(_) => state
                        .trust
                        .manifest_envelope()
                        .map(ClientResponse::Manifest)
                        .ok_or((ErrorCode::Internal, "node has no manifest".into())),
                    Err(e) => Err((ErrorCode::BadRequest, e.to_string())),
                },
            },
        },
        ClientOp::RevokeStaff { person_id } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => crate::staff::revoke(&Staffing::of(state), staff, &person_id).await,
        },
        ClientOp::RotateKey => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                return match crate::staff_api::rotation::rotate_op(&Rotator::of(state), staff).await
                {
                    Ok(env) => env,
                    Err((code, msg)) => state.key.error(code, msg),
                }
            }
        },
        ClientOp::ReissueCredentials => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                let staffing = Staffing::of(state);
                crate::staff::reissue_under_current_key(&staffing, Some(&staff.body.person_id))
                    .await
                    .map(|done| {
                        ClientResponse::Staff(
                            done.iter()
                                .map(|s| crate::staff::summary(&staffing, s))
                                .collect(),
                        )
                    })
            }
        },
        ClientOp::RefreshCredential => {
            crate::staff::current_credential(&Staffing::of(state), staff)
        }
        ClientOp::Backup => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                crate::staff_api::backup::stream_backup(&Archiver::of(state), staff, send).await
            }
        },
        ClientOp::ExportRecords { format } => match need(StaffRole::Operator) {
            Err(e) => return e,
            Ok(()) => {
                crate::staff_api::backup::stream_export(&Archiver::of(state), staff, format, send)
                    .await
            }
        },
        ClientOp::WitnessReset { peer } => {
            if need(StaffRole::Dpo).is_err() {
                if let Err(e) = need(StaffRole::Operator) {
                    return e;
                }
            }
            match crate::workers::witness::reset_baseline(
                &crate::workers::witness::Witness::of(state),
                &peer,
                &staff.body.person_id,
            )
            .await
            {
                Ok(()) => crate::staff_api::audit::checkpoints(&CheckpointView::of(state)),
                Err(crate::workers::witness::ResetError::Refused(msg)) => {
                    Err((ErrorCode::BadRequest, msg))
                }
                Err(crate::workers::witness::ResetError::Node(e)) => {
                    Err((ErrorCode::Internal, e.to_string()))
                }
            }
        }
        ClientOp::AuditCheckpoints => {
            if need(StaffRole::Dpo).is_err() {
                if let Err(e) = need(StaffRole::Operator) {
                    return e;
                }
            }
            crate::staff_api::audit::checkpoints(&CheckpointView::of(state))
        }
    };
    match result {
        Ok(body) => state.key.seal(&body),
        Err((code, msg)) => state.key.error(code, msg),
    }
}

type OpResult = Result<ClientResponse, (ErrorCode, String)>;

/// Refuses to publish a version that retires a key of this node too early: one that drops the
/// node's current key, or a key that signed staff credentials still in force that have not
/// been re-issued under the current key. (The offer is only read here; `adopt` verifies it.)
fn refuse_stranding(state: &Staffing<'_>, offered: &Envelope) -> Result<(), (ErrorCode, String)> {
    let Ok(m) = offered.open::<throughgate_protocol::manifest::Manifest>() else {
        return Ok(());
    };
    if state
        .trust
        .manifest()
        .is_some_and(|t| m.version <= t.version)
    {
        return Ok(());
    }
    let Some(me) = m.member(state.agency) else {
        return Ok(());
    };
    let current = state.key.current().public();
    if !me.node_keys.contains(&current) {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "manifest version {} does not list this node's current key {}; switch the node \
                 to its next key first (`tg node rotate-key`), then publish again",
                m.version,
                current.fingerprint()
            ),
        ));
    }
    let stranded = crate::staff::stranded_by(state, &m)?;
    if !stranded.is_empty() {
        let ids: Vec<String> = stranded
            .iter()
            .take(5)
            .map(|s| s.body.person_id.to_string())
            .collect();
        return Err((
            ErrorCode::BadRequest,
            format!(
                "manifest version {} retires a node key that signed {} staff credential(s) still \
                 in force ({}{}); re-issue them under the current key first with \
                 `tg staff reissue-credentials`, then publish again",
                m.version,
                stranded.len(),
                ids.join(", "),
                if stranded.len() > ids.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

fn list_roles(roles: &[StaffRole]) -> String {
    if roles.is_empty() {
        return "no roles".into();
    }
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn internal(e: crate::store::StoreError) -> (ErrorCode, String) {
    tracing::error!(error = %e, "storage failure");
    (
        ErrorCode::Internal,
        "storage failure; see the node's log".into(),
    )
}

fn record_err(e: crate::requester::consent_out::RecordError) -> (ErrorCode, String) {
    match e {
        crate::requester::consent_out::RecordError::Rejected(m) => (ErrorCode::BadRequest, m),
        crate::requester::consent_out::RecordError::Store(e) => internal(e),
        crate::requester::consent_out::RecordError::Audit(m) => (ErrorCode::Internal, m),
        crate::requester::consent_out::RecordError::RateLimited(m) => (ErrorCode::RateLimited, m),
    }
}

async fn assemble(
    state: &Arc<NodeState>,
    staff: &StoredStaff,
    query: Envelope,
    progress: bool,
    send: &mut quinn::SendStream,
) -> OpResult {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let work = crate::requester::fanout::assemble(state, staff, query, move |r| {
        if progress {
            let _ = tx.send(crate::requester::fanout::progress_frame(r));
        }
    });
    let mut work = std::pin::pin!(work);
    // Stream progress frames (when asked for) while the fan-out runs.
    let outcome = loop {
        tokio::select! {
            res = &mut work => break res,
            Some(frame) = rx.recv() => {
                let _ = write_envelope(send, &state.key.seal(&frame)).await;
            }
        }
    };
    while let Ok(frame) = rx.try_recv() {
        let _ = write_envelope(send, &state.key.seal(&frame)).await;
    }
    match outcome {
        Ok(a) => Ok(ClientResponse::Assembled {
            query: a.query,
            results: a.results,
            statement: a.statement,
        }),
        Err(e) => Err((ErrorCode::BadRequest, e.to_string())),
    }
}

fn list_consents(db: &Db, clock: &Clock, f: &ConsentFilter) -> OpResult {
    let now = clock.now();
    let all = match &f.passport_id {
        Some(p) => db.consents_of(p),
        None => db.all_consents(),
    }
    .map_err(internal)?;
    let list = all
        .into_iter()
        .filter(|c| f.status.is_none_or(|s| c.status_at(now) == s))
        .filter(|c| {
            f.holder
                .as_ref()
                .is_none_or(|h| c.body.scope_for(h).is_some())
        })
        .filter(|c| f.grantee.as_ref().is_none_or(|g| c.body.is_grantee(g)))
        .filter(|c| f.purpose.is_none_or(|p| c.body.purpose == p))
        .filter(|c| f.expires_before.is_none_or(|t| c.body.valid_until < t))
        .map(|c| ConsentSummary {
            status: c.status_at(now),
            consent_id: c.body.consent_id.clone(),
            passport_id: c.body.passport_id.clone(),
            purpose: c.body.purpose,
            recorded_by: c.body.recorded_by.clone(),
            valid_from: c.body.valid_from,
            valid_until: c.body.valid_until,
            holders: c.body.holders.iter().map(|h| h.agency.clone()).collect(),
            grantees: c.body.grantees.clone(),
            received_at: c.received_at,
            status_since: match c.status_at(now) {
                ConsentStatus::Expired => c.body.valid_until,
                _ => c.status_since,
            },
            revoked_by: c
                .revocation
                .as_ref()
                .and_then(|r| r.open::<ConsentRevocation>().ok())
                .map(|r| r.revoked_by_person),
        })
        .collect();
    Ok(ClientResponse::Consents(list))
}

async fn add_staff(
    state: &Staffing<'_>,
    person_id: throughgate_protocol::ids::PersonId,
    display_name: String,
    roles: Vec<StaffRole>,
    public_key: throughgate_protocol::keys::PublicKey,
    valid_days: u32,
) -> OpResult {
    if display_name.trim().is_empty()
        || display_name.len() > 128
        || display_name.chars().any(char::is_control)
    {
        return Err((
            ErrorCode::BadRequest,
            "the name must be 1-128 printable characters".into(),
        ));
    }
    if roles.is_empty() {
        return Err((
            ErrorCode::BadRequest,
            "give at least one role: caseworker, dpo or operator".into(),
        ));
    }
    if valid_days == 0 || valid_days > crate::staff::MAX_CREDENTIAL_DAYS {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "valid days must be between 1 and {}",
                crate::staff::MAX_CREDENTIAL_DAYS
            ),
        ));
    }
    if state
        .trust
        .manifest()
        .is_some_and(|m| m.member_by_key(&public_key).is_some())
    {
        return Err((
            ErrorCode::BadRequest,
            "that key is a node key; staff need their own key".into(),
        ));
    }
    // One person, one staff id: an id already issued (even revoked) is never given to someone
    // else, nor silently replaced.
    if let Some(existing) = state.db.staff(&person_id).map_err(internal)? {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "{person_id} already has a credential here ({}); to give them a new key use \
                 `tg staff reissue {person_id}`, for another person choose another staff id",
                match existing.revoked_at {
                    Some(t) => format!("revoked at {t}"),
                    None => format!("valid until {}", existing.body.not_after),
                }
            ),
        ));
    }
    if let Ok(Some(other)) = state.db.staff_by_key(&public_key) {
        if other.body.person_id != person_id {
            return Err((
                ErrorCode::BadRequest,
                format!("that key already belongs to {}", other.body.person_id),
            ));
        }
    }
    let now = state.clock.now();
    let cred = Credential {
        person_id,
        display_name,
        agency: state.agency.clone(),
        roles,
        public_key,
        not_before: now,
        not_after: now.plus_secs(u64::from(valid_days) * 86_400),
    };
    let staff = crate::staff::issue_credential(&state.key.current(), cred);
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
    tracing::info!(person = %staff.body.person_id, roles = %list_roles(&staff.body.roles), "credential issued");
    Ok(ClientResponse::Credential(staff.credential))
}

fn list_staff(state: &Staffing<'_>) -> OpResult {
    let staff = state.db.all_staff().map_err(internal)?;
    Ok(ClientResponse::Staff(
        staff
            .iter()
            .map(|s| crate::staff::summary(state, s))
            .collect(),
    ))
}

/// The node's status.
pub fn status(state: &StatusView<'_>) -> OpResult {
    match state.status() {
        Ok(status) => Ok(ClientResponse::Status(status)),
        Err(crate::state::NodeStatusError::NoManifest) => {
            Err((ErrorCode::Internal, "node has no manifest".into()))
        }
        Err(crate::state::NodeStatusError::Store(e)) => Err(internal(e)),
    }
}
