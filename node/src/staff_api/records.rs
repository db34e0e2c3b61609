//! Erasure and rectification: an operator deletes the records held about one subject (all of
//! them, those of one kind, or one record), in one atomic write. The deletion is logged with
//! its counts per kind and never the subject's identifier, a record id or any record's content:
//! the identifier is personal data, and the log outlives the records.

use std::collections::BTreeMap;

use throughgate_protocol::identifiers::{normalise, IdScheme};
use throughgate_protocol::ids::RecordId;
use throughgate_protocol::messages::{ClientResponse, DeletionReport, ErrorCode, KindCount};
use throughgate_protocol::record::valid_name;

use crate::audit::AuditLog;
use crate::db::StoredStaff;
use crate::records_writer::RecordsWriter;
use crate::state::NodeState;

/// What deleting records uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Erasure<'a> {
    /// The identifier scheme subjects are named in.
    pub id_scheme: IdScheme,
    /// The only way to the record store.
    pub records_writer: &'a RecordsWriter,
    /// Where the deletion is logged.
    pub audit: &'a AuditLog,
}

impl<'a> Erasure<'a> {
    /// The parts of `state` that deleting records uses.
    pub fn of(state: &'a NodeState) -> Self {
        Erasure {
            id_scheme: state.config.id_scheme,
            records_writer: &state.records_writer,
            audit: &state.audit,
        }
    }
}

/// The most records one deletion removes in its single atomic write; a subject with more is
/// deleted a kind at a time.
pub const MAX_DELETE: usize = 100_000;

/// Deletes the records of one subject that match `kind` and `record_id` (when given), logs
/// the deletion, and reports what went.
pub async fn delete(
    state: &Erasure<'_>,
    staff: &StoredStaff,
    subject: &str,
    kind: Option<&str>,
    record_id: Option<&RecordId>,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let scheme = state.id_scheme;
    let subject = normalise(scheme, subject).map_err(|e| {
        (
            ErrorCode::BadRequest,
            format!("the subject is not an identifier under this node's scheme: {e}"),
        )
    })?;
    if let Some(k) = kind {
        if !valid_name(k) {
            return Err((
                ErrorCode::BadRequest,
                "the kind is not a record kind name (lowercase letters, digits and underscores)"
                    .to_owned(),
            ));
        }
    }
    let internal = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "records deletion failed");
        (
            ErrorCode::Internal,
            "storage failure; nothing was deleted; see the node's log".to_owned(),
        )
    };
    let write = state.records_writer.lock().await;
    let held = write
        .db()
        .records_of(&subject, MAX_DELETE.saturating_add(1))
        .map_err(internal)?;
    let going: Vec<_> = held
        .into_iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| record_id.is_none_or(|id| r.record_id == *id))
        .collect();
    if going.len() > MAX_DELETE {
        return Err((
            ErrorCode::TooLarge,
            format!("more than {MAX_DELETE} records match; delete them a kind at a time (--kind)"),
        ));
    }
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for r in &going {
        *kinds.entry(r.kind.clone()).or_default() += 1;
    }
    let keys: Vec<(String, String)> = going
        .iter()
        .map(|r| (r.subject.clone(), r.record_id.as_str().to_owned()))
        .collect();
    if !keys.is_empty() {
        write.db().delete_records(&keys).map_err(internal)?;
        write.db().flush().map_err(internal)?;
    }
    let report = DeletionReport {
        deleted: keys.len() as u64,
        kinds: kinds
            .into_iter()
            .map(|(kind, count)| KindCount { kind, count })
            .collect(),
    };
    let scope = match (kind, record_id) {
        (_, Some(_)) => "one record of one subject",
        (Some(_), None) => "one kind of one subject",
        (None, None) => "every record of one subject",
    };
    let by_kind = report
        .kinds
        .iter()
        .map(|k| format!("{} {}", k.kind, k.count))
        .collect::<Vec<_>>()
        .join(", ");
    let detail = format!(
        "{} records deleted ({scope}){}",
        report.deleted,
        if by_kind.is_empty() {
            String::new()
        } else {
            format!(": {by_kind}")
        }
    );
    if let Err(e) = state
        .audit
        .log_admin(Some(&staff.body.person_id), "records_delete", detail)
        .await
    {
        tracing::error!(error = %e, deleted = report.deleted, "records deleted but the deletion could not be logged");
        return Err((
            ErrorCode::Internal,
            format!(
                "{} records were deleted but the deletion could not be logged; see the node's log",
                report.deleted
            ),
        ));
    }
    tracing::info!(person = %staff.body.person_id, deleted = report.deleted, "records deleted");
    Ok(ClientResponse::RecordsDeleted(report))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use futures::FutureExt;
    use throughgate_protocol::audit::{AuditEntry, AuditEvent};
    use throughgate_protocol::credential::{Credential, StaffRole};
    use throughgate_protocol::ids::{AgencyId, PersonId};
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::time::Date;
    use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

    use super::*;
    use crate::clock::Clock;
    use crate::db::Db;
    use crate::keyring::NodeKey;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_deletion_waits_for_the_records_writer_then_deletes_one_subject_and_logs_only_counts()
    {
        let cfg = SynthConfig::new(3, 20, Date::parse("2026-03-02").unwrap());
        let records = records_for("nhs-wy", &generate_population(&cfg), &cfg).unwrap();
        let db = Db::new(Arc::new(MemoryStore::new()));
        db.put_records(&records).unwrap();
        let subject = records[0].subject.clone();
        let theirs = records.iter().filter(|r| r.subject == subject).count() as u64;
        assert!(theirs > 0 && theirs < records.len() as u64);
        let key = NodeKey::new(SecretKey::generate());
        let audit = AuditLog::open(
            db.clone(),
            key.clone(),
            AgencyId::new("nhs-wy").unwrap(),
            Clock::system(),
            Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap();
        audit.start().unwrap();
        let writer = RecordsWriter::new(db.clone());
        let erasure = Erasure {
            id_scheme: IdScheme::NhsNumber,
            records_writer: &writer,
            audit: &audit,
        };
        let now = Clock::system().now();
        let operator = crate::staff::issue_credential(
            &key.current(),
            Credential {
                person_id: PersonId::new("op-1").unwrap(),
                display_name: "Operator".into(),
                agency: AgencyId::new("nhs-wy").unwrap(),
                roles: vec![StaffRole::Operator],
                public_key: SecretKey::generate().public(),
                not_before: now.minus_secs(60),
                not_after: now.plus_secs(86_400),
            },
        );

        // While another change of the records holds the writer, the deletion does not start.
        let held = writer.lock().await;
        let mut deletion = std::pin::pin!(delete(&erasure, &operator, &subject, None, None));
        assert!((&mut deletion).now_or_never().is_none());
        assert_eq!(db.record_count().unwrap(), records.len() as u64);
        drop(held);

        let answer = deletion.await.unwrap();
        let ClientResponse::RecordsDeleted(report) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(report.deleted, theirs);
        assert_eq!(report.kinds.iter().map(|k| k.count).sum::<u64>(), theirs);
        assert!(db.records_of(&subject, usize::MAX).unwrap().is_empty());
        assert_eq!(db.record_count().unwrap(), records.len() as u64 - theirs);
        let logged: Vec<AuditEvent> = db
            .audit_entries(0, 10)
            .unwrap()
            .iter()
            .map(|(_, bytes)| AuditEntry::from_bytes(bytes).unwrap().event)
            .collect();
        let [AuditEvent::Admin { action, detail, .. }] = logged.as_slice() else {
            panic!("{logged:?}");
        };
        assert_eq!(action, "records_delete");
        assert!(
            detail.starts_with(&format!("{theirs} records deleted")),
            "{detail}"
        );
        assert!(!detail.contains(&subject), "{detail}");
    }
}
