//! Audit: every response carries a receipt proving its logged decision; checkpoints are signed
//! by the target's key and only ever grow; a later checkpoint is consistent with an earlier
//! one; a DPO's audit query from the suite's agency is answered with the entries about a
//! passport the suite queried, each proven; and the target, as a witness of the suite's own
//! log, cosigns consistent checkpoints and refuses forks, rewrites, shrinks and bad signatures.

use throughgate_protocol::audit::{
    origin, verify_audit_answer, verify_receipt, AuditEntry, AuditEvent, ProofHash, VerifiedReceipt,
};
use throughgate_protocol::checkpoint::{Checkpoint, SignedCheckpoint};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::{AgencyId, PassportId, PersonId, QueryId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::merkle::{consistency_proof, leaf_hash, root_from_leaves, Hash};
use throughgate_protocol::messages::{
    AckOutcome, AuditAnswer, AuditQuery, ErrorCode, Outcome, Query, RefusalReason, Response,
    WitnessOutcome, WitnessRequest, WitnessResponse,
};
use throughgate_protocol::note::NoteSignature;
use throughgate_protocol::witness::verify_cosignature;

use super::{ask, case, grant, linked, send_query};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft;
use crate::identity::{issue, Actor, Caseworker, MemberIdentity};
use crate::now;
use crate::peer::Conn;

/// The audit cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Audit;
    vec![
        case!(a, "audit.receipt_refused", "a refusal (no_consent) carries a receipt that verifies with the target's key and proves a logged decision matching the response (digest, ids, outcome, reason, consent, record count)", receipt_refused),
        case!(a, "audit.receipt_not_held", "a not_held answer under a consent for a person the target does not hold carries a receipt proving the matching decision", receipt_not_held),
        case!(a, "audit.receipt_under_consent", "an answer under a linked consent (a disclosure, or a policy refusal) carries a receipt proving the matching decision, with the number of records released", receipt_under_consent),
        case!(a, "audit.response_witness_evidence", "a response's witnessed checkpoint, when present, is of the target's log, signed by its node key, linked to the receipt's checkpoint by its consistency proof, with every cosignature line by another member of the target's manifest valid; the result names the witnessing verdict (witnessed, not_yet_witnessed, not_required)", response_witness_evidence),
        case!(a, "audit.checkpoint_signed_by_target", "every receipt's checkpoint is a C2SP checkpoint of origin throughgate/<target>/audit, signed under that name by the target's node key, covering the receipt's entry", checkpoint_signed_by_target),
        case!(a, "audit.inclusion_proofs_verify", "8 decisions in a row each carry an inclusion proof that verifies under its checkpoint; leaf indexes strictly increase and checkpoints never shrink", inclusion_proofs_verify),
        case!(a, "audit.consistency_over_time", "a checkpoint the target signed earlier is a prefix of a later one: the same entry's inclusion proofs under both share every left subtree", consistency_over_time),
        case!(a, "audit.dpo_query_answered", "an audit query from the suite's DPO about a passport the suite consented and queried is answered with a signed audit_answer: the consent and decision entries, each proven under its checkpoint, and a receipt of the access naming the suite's DPO", dpo_query_answered),
        case!(a, "audit.dpo_query_needs_dpo_role", "an audit query whose credential lacks the dpo role gets error forbidden", dpo_query_needs_dpo_role),
        case!(a, "audit.dpo_query_requester_mismatch", "an audit query naming another agency as requester, sent by the suite, gets error forbidden", dpo_query_requester_mismatch),
        case!(a, "audit.dpo_query_bad_signature", "an audit query whose DPO signature is by another key than the credential's gets error bad_signature", dpo_query_bad_signature),
        case!(a, "audit.dpo_query_expired", "an expired audit query gets error bad_request", dpo_query_expired),
        case!(a, "audit.dpo_query_replayed", "the same audit query sent twice gets error bad_request the second time", dpo_query_replayed),
        case!(a, "audit.witness_cosigns", "the target cosigns the suite's own log: a first checkpoint on its signature alone (when it holds none) and a consistent extension with its proof, each with a cosignature/v1 line by its key under throughgate/<target>/witness", witness_cosigns),
        case!(a, "audit.witness_conflict", "a witness request whose old_size is not what the target holds gets outcome conflict with known_size", witness_conflict),
        case!(a, "audit.witness_refuses_bad_signature", "a checkpoint signed by a key other than the suite's node key, or of another log's origin, is refused and not stored", witness_refuses_bad_signature),
        case!(a, "audit.witness_request_unsigned", "a witness request not signed by the sending node gets error bad_signature", witness_request_unsigned),
        case!(a, "audit.witness_refuses_inconsistent", "a larger checkpoint from a rewritten history, with that history's consistency proof, is refused and not stored [offers the second identity's log if any: after this alarm a witness may refuse that log outright]", witness_refuses_inconsistent),
        case!(a, "audit.witness_refuses_fork", "a checkpoint of the size the target holds but another root (a fork) is refused and not stored [second identity's log if any; passes too if the target already refuses that log outright, as after an earlier alarm]", witness_refuses_fork),
        case!(a, "audit.witness_refuses_shrink", "a checkpoint smaller than the one the target holds is refused [second identity's log if any; passes too if the target already refuses that log outright]", witness_refuses_shrink),
    ]
}

// ---------------------------------------------------------------------------------------------
// Receipts.

/// Verifies a response's receipt as the target's, and that it proves the decision the response
/// reports.
fn decision_receipt(ctx: &Ctx, q: &Query, r: &Response) -> Result<VerifiedReceipt, CaseError> {
    let target = ctx.target();
    let v = verify_receipt(&r.receipt, &target.agency, &[target.key]).map_err(|e| {
        CaseError::Fail(format!(
            "the receipt of a {} response does not verify: {e}",
            r.outcome
        ))
    })?;
    let AuditEvent::Decision(d) = &v.entry.event else {
        return fail(format!(
            "the receipt proves a {} entry, not a decision",
            v.entry.event
        ));
    };
    let records = u32::try_from(r.records.len()).unwrap_or(u32::MAX);
    ensure(d.query_digest == r.query_digest, || {
        "the logged decision names another query digest".into()
    })?;
    ensure(
        d.query_id == q.query_id && d.passport_id == q.passport_id,
        || "the logged decision names another query or passport".into(),
    )?;
    ensure(d.outcome == r.outcome && d.reason == r.reason, || {
        format!(
            "the logged decision is {} ({:?}), the response {} ({:?})",
            d.outcome, d.reason, r.outcome, r.reason
        )
    })?;
    ensure(d.consent_id == r.consent_id, || {
        "the logged decision names another consent".into()
    })?;
    ensure(d.records == records, || {
        format!(
            "the logged decision released {} records, the response carries {records}",
            d.records
        )
    })?;
    ensure(
        d.requester == q.requester && d.caseworker == q.caseworker,
        || "the logged decision names another requester or caseworker".into(),
    )?;
    ensure(d.purpose == q.purpose, || {
        "the logged decision names another purpose".into()
    })?;
    Ok(v)
}

fn receipt_detail(r: &Response, v: &VerifiedReceipt) -> String {
    format!(
        "{} response; receipt proves entry {} under checkpoint size {}",
        r.outcome,
        r.receipt.leaf_index,
        v.checkpoint.checkpoint().size
    )
}

async fn receipt_refused(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let q = craft::unconsented_query(ctx, &ctx.me);
    let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
    let r = check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    let v = decision_receipt(ctx, &q, &r)?;
    conn.close();
    Ok(receipt_detail(&r, &v))
}

async fn response_witness_evidence(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let manifest = super::manifest::trusted(ctx, &conn).await?;
    let q = craft::unconsented_query(ctx, &ctx.me);
    let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
    let r = check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    let (_, verdict) = throughgate_protocol::bundle::verify_response_witnessed(
        answer.envelope(),
        &env,
        &q,
        &ctx.target().agency,
        &manifest,
        None,
    )
    .map_err(|e| CaseError::Fail(format!("the response does not verify: {e}")))?;
    Ok(format!(
        "witnessing: {} (threshold {}); witnessed checkpoint {}, requester view {}",
        verdict.name(),
        manifest.witness_threshold,
        if r.witnessed.is_some() {
            "present"
        } else {
            "absent"
        },
        r.requester_view
            .as_ref()
            .map_or_else(|| "absent".to_owned(), |v| format!("size {}", v.size))
    ))
}

async fn receipt_not_held(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.unknown_subject);
    grant(ctx, &conn, &ctx.me, &d, &[AckOutcome::NotHeld]).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
    let r = check::outcome(ctx.target(), &env, &q, &answer, Outcome::NotHeld)?;
    let v = decision_receipt(ctx, &q, &r)?;
    conn.close();
    Ok(receipt_detail(&r, &v))
}

async fn receipt_under_consent(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
    let r = check::response(ctx.target(), &env, &q, &answer)?;
    match (r.outcome, r.reason) {
        (Outcome::Disclosed, _) | (Outcome::Refused, Some(RefusalReason::PolicyWithholdsAll)) => {}
        _ => {
            return fail(format!(
                "expected a disclosure (or policy_withholds_all) under a linked consent, got {}",
                answer.describe()
            ))
        }
    }
    let v = decision_receipt(ctx, &q, &r)?;
    conn.close();
    Ok(format!(
        "{} records; {}",
        r.records.len(),
        receipt_detail(&r, &v)
    ))
}

/// Opens a checkpoint as the target's: its origin and a signature by the target's key under it.
fn open_checkpoint(ctx: &Ctx, text: &str) -> Result<SignedCheckpoint, CaseError> {
    let o = origin(&ctx.target().agency);
    SignedCheckpoint::open(text.as_bytes(), &o, &o, &ctx.target().key).map_err(|e| {
        CaseError::Fail(format!(
            "checkpoint is not the target's log signed by its key: {e}"
        ))
    })
}

async fn checkpoint_signed_by_target(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let q = craft::unconsented_query(ctx, &ctx.me);
        let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
        let r = check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
        let cp = open_checkpoint(ctx, &r.receipt.checkpoint)?;
        let c = cp.checkpoint();
        ensure(r.receipt.leaf_index < c.size, || {
            format!(
                "entry {} is outside the checkpoint of size {}",
                r.receipt.leaf_index, c.size
            )
        })?;
        ensure(cp.to_text() == r.receipt.checkpoint, || {
            "the checkpoint does not re-serialise to the text received".into()
        })?;
        sizes.push(c.size);
    }
    conn.close();
    Ok(format!(
        "origin {}, signed by {}; sizes {sizes:?}",
        origin(&ctx.target().agency),
        ctx.target().key.fingerprint()
    ))
}

async fn inclusion_proofs_verify(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let mut last: Option<(u64, u64)> = None;
    for i in 0..8 {
        let q = craft::unconsented_query(ctx, &ctx.me);
        let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
        let r = check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
        let v = decision_receipt(ctx, &q, &r)
            .map_err(|e| CaseError::Fail(format!("decision {i}: {e}")))?;
        let index = r.receipt.leaf_index;
        let size = v.checkpoint.checkpoint().size;
        if let Some((li, ls)) = last {
            ensure(index > li, || {
                format!("decision {i} was logged at {index}, not after the previous one at {li}")
            })?;
            ensure(size >= ls, || {
                format!("the checkpoint shrank from size {ls} to {size}")
            })?;
        }
        last = Some((index, size));
    }
    conn.close();
    let (li, ls) = last.unwrap_or_default();
    Ok(format!("8 proofs verified; last entry {li} of {ls}"))
}

/// The left siblings of an RFC 9162 inclusion proof (those hashed in on the left), lowest level
/// first: the perfect subtrees covering every leaf before `index`. The same entry's proofs in a
/// tree and in any larger tree have the same left siblings exactly when the first `index + 1`
/// leaves are the same; when `index` is the last leaf of the first tree, that is consistency.
pub fn left_siblings(index: u64, size: u64, proof: &[ProofHash]) -> Option<Vec<Hash>> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut out = Vec::new();
    for p in proof {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            out.push(p.0);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(out)
}

async fn consistency_over_time(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    // A decision that is the last entry of its checkpoint (a batch of its own).
    let mut early = None;
    for _ in 0..6 {
        let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
        let r = check::response(ctx.target(), &env, &q, &answer)?;
        let v = decision_receipt(ctx, &q, &r)?;
        let size = v.checkpoint.checkpoint().size;
        if r.receipt.leaf_index + 1 == size {
            early = Some((r.receipt, v.checkpoint));
            break;
        }
    }
    let Some((receipt, cp1)) = early else {
        return fail(
            "no receipt of 6 named a checkpoint ending at its own entry (busy log?); cannot compare checkpoints",
        );
    };
    // More entries, then the same entry proven under a later checkpoint.
    let q = craft::unconsented_query(ctx, &ctx.me);
    send_query(&conn, &ctx.me, &q).await?;
    let dpo = dpo(&ctx.me, vec![StaffRole::Dpo]);
    let (qenv, _) = audit_query(&ctx.me, &dpo, d.consent.passport_id.clone(), |_| {});
    let (aenv, a) = conn.request_expect::<AuditAnswer>(&qenv).await?;
    verify_audit_answer(&aenv, &qenv, &ctx.target().agency, &[ctx.target().key])
        .map_err(|e| CaseError::Fail(format!("the audit answer does not verify: {e}")))?;
    let cp2 = open_checkpoint(ctx, &a.checkpoint)?;
    let (s1, s2) = (cp1.checkpoint().size, cp2.checkpoint().size);
    ensure(s2 > s1, || {
        format!("the later checkpoint (size {s2}) is not larger than the earlier ({s1})")
    })?;
    let later = a
        .entries
        .iter()
        .find(|e| e.leaf_index == receipt.leaf_index)
        .ok_or_else(|| {
            CaseError::Fail(format!(
                "the audit answer omits entry {} about the passport",
                receipt.leaf_index
            ))
        })?;
    ensure(later.entry == receipt.entry, || {
        format!(
            "entry {} changed between the two checkpoints",
            receipt.leaf_index
        )
    })?;
    let left1 = left_siblings(receipt.leaf_index, s1, &receipt.proof);
    let left2 = left_siblings(receipt.leaf_index, s2, &later.proof);
    ensure(left1.is_some() && left1 == left2, || {
        format!(
            "the checkpoint of size {s1} is not a prefix of the checkpoint of size {s2}: the log was rewritten"
        )
    })?;
    conn.close();
    Ok(format!(
        "checkpoint size {s1} is a prefix of size {s2} (entry {})",
        receipt.leaf_index
    ))
}

// ---------------------------------------------------------------------------------------------
// Audit queries.

/// A DPO of `actor`'s agency with `roles`, credential issued by the agency's node key.
fn dpo(actor: &Actor, roles: Vec<StaffRole>) -> Caseworker {
    let t = now();
    let person = PersonId::new("conformance-dpo").unwrap_or_else(|_| actor.cw.person.clone());
    issue(
        &actor.member,
        &person,
        roles,
        t.minus_secs(60),
        t.plus_secs(3600),
        actor.node_key(),
    )
}

/// An audit query about `passport` by `dpo` of `actor`'s agency, edited by `edit`, signed by
/// the DPO (person) and the agency's node.
fn audit_query(
    actor: &Actor,
    dpo: &Caseworker,
    passport: PassportId,
    edit: impl FnOnce(&mut AuditQuery),
) -> (Envelope, AuditQuery) {
    let t = now();
    let mut q = AuditQuery {
        query_id: QueryId::random(),
        passport_id: passport,
        requester: actor.agency().clone(),
        dpo: dpo.person.clone(),
        credential: dpo.credential.clone(),
        issued_at: t,
        expires_at: t.plus_secs(60),
    };
    edit(&mut q);
    let env = Envelope::seal(
        &q,
        &[
            (SignerRole::Person, &dpo.key),
            (SignerRole::Node, actor.node_key()),
        ],
    );
    (env, q)
}

async fn dpo_query_answered(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
    check::response(ctx.target(), &env, &q, &answer)?;
    let dpo = dpo(&ctx.me, vec![StaffRole::Dpo]);
    let passport = d.consent.passport_id.clone();
    let (qenv, aq) = audit_query(&ctx.me, &dpo, passport.clone(), |_| {});
    let (aenv, a) = conn.request_expect::<AuditAnswer>(&qenv).await?;
    let target = ctx.target();
    ensure(a.holder == target.agency, || {
        format!("the answer names holder {}", a.holder)
    })?;
    let entries = verify_audit_answer(&aenv, &qenv, &target.agency, &[target.key])
        .map_err(|e| CaseError::Fail(format!("the audit answer does not verify: {e}")))?;
    for (i, e) in &entries {
        ensure(e.event.passport() == Some(&passport), || {
            format!("entry {i} ({}) is not about the passport asked", e.event)
        })?;
    }
    let has = |f: &dyn Fn(&AuditEntry) -> bool| entries.iter().any(|(_, e)| f(e));
    ensure(
        has(&|e| matches!(&e.event, AuditEvent::Decision(x) if x.query_id == q.query_id)),
        || "the answer lacks the decision on the suite's query".into(),
    )?;
    ensure(
        has(&|e| {
            matches!(&e.event,
                AuditEvent::ConsentRegistered(c) | AuditEvent::ConsentRecorded(c)
                    if c.consent_id == d.consent.consent_id)
        }),
        || "the answer lacks the registration of the suite's consent".into(),
    )?;
    let access = verify_receipt(&a.access_receipt, &target.agency, &[target.key])
        .map_err(|e| CaseError::Fail(format!("the access receipt does not verify: {e}")))?;
    match &access.entry.event {
        AuditEvent::AuditAccess {
            agency,
            dpo: who,
            passport_id,
            ..
        } if agency == ctx.me.agency()
            && who == &aq.dpo
            && passport_id.as_ref() == Some(&passport) => {}
        other => {
            return fail(format!(
            "the access receipt proves a {other} entry, not the suite DPO's access to the passport"
        ))
        }
    }
    conn.close();
    Ok(format!(
        "{} entries about the passport, each proven; access logged at {}",
        entries.len(),
        a.access_receipt.leaf_index
    ))
}

/// Sends an audit query and expects an error with `code`.
async fn audit_error(ctx: &Ctx, env: &Envelope, code: ErrorCode) -> CaseResult {
    let conn = ctx.conn().await?;
    let answer = conn.request_typed::<AuditAnswer>(env).await?;
    conn.close();
    match answer {
        Err(e) if e.code == code => Ok(format!("error {}", e.code)),
        Err(e) => fail(format!(
            "expected error {code}, got error {} ({})",
            e.code, e.message
        )),
        Ok(_) => fail(format!("expected error {code}, got an audit_answer")),
    }
}

async fn dpo_query_needs_dpo_role(ctx: &Ctx) -> CaseResult {
    let cw = dpo(&ctx.me, vec![StaffRole::Caseworker, StaffRole::Operator]);
    let (env, _) = audit_query(&ctx.me, &cw, PassportId::random(), |_| {});
    audit_error(ctx, &env, ErrorCode::Forbidden).await
}

async fn dpo_query_requester_mismatch(ctx: &Ctx) -> CaseResult {
    let other = match &ctx.second {
        Some(s) => s.clone(),
        None => Actor::new(MemberIdentity {
            agency: AgencyId::new("tg-conformance-stranger")
                .map_err(|e| CaseError::Fail(e.to_string()))?,
            key: SecretKey::generate(),
            sector: ctx.me.member.sector,
        })
        .map_err(CaseError::Fail)?,
    };
    let dpo = dpo(&other, vec![StaffRole::Dpo]);
    let (env, _) = audit_query(&other, &dpo, PassportId::random(), |_| {});
    audit_error(ctx, &env, ErrorCode::Forbidden).await
}

async fn dpo_query_bad_signature(ctx: &Ctx) -> CaseResult {
    let dpo_a = dpo(&ctx.me, vec![StaffRole::Dpo]);
    let mut dpo_b = dpo(&ctx.me, vec![StaffRole::Dpo]);
    // B's key signs, A's credential is carried.
    dpo_b.credential = dpo_a.credential.clone();
    let (env, _) = audit_query(&ctx.me, &dpo_b, PassportId::random(), |_| {});
    audit_error(ctx, &env, ErrorCode::BadSignature).await
}

async fn dpo_query_expired(ctx: &Ctx) -> CaseResult {
    let dpo = dpo(&ctx.me, vec![StaffRole::Dpo]);
    let t = now();
    let (env, _) = audit_query(&ctx.me, &dpo, PassportId::random(), |q| {
        q.issued_at = t.minus_secs(120);
        q.expires_at = t.minus_secs(60);
    });
    audit_error(ctx, &env, ErrorCode::BadRequest).await
}

async fn dpo_query_replayed(ctx: &Ctx) -> CaseResult {
    let dpo = dpo(&ctx.me, vec![StaffRole::Dpo]);
    let (env, _) = audit_query(&ctx.me, &dpo, PassportId::random(), |_| {});
    let conn = ctx.conn().await?;
    conn.request_expect::<AuditAnswer>(&env)
        .await
        .map_err(|e| CaseError::Fail(format!("first sending: {e}")))?;
    conn.close();
    audit_error(ctx, &env, ErrorCode::BadRequest).await
}

// ---------------------------------------------------------------------------------------------
// Witnessing the suite's own log.
//
// A witness keeps, per peer, the newest checkpoint of the peer's log it cosigned. The cases
// that only need a witness in good standing offer the first identity's log. The cases that show
// the target a forked, rewritten or shrunk log offer the second identity's log when the
// identity file has one, and run last: after an alarm a witness may refuse that log until its
// operator resets the baseline (the reference keeps a standing alarm), so a later run would
// find the log refused outright.

/// The largest log the suite rebuilds (a target already holding more of the suite's log than
/// this, from earlier runs, is beyond what a case should compute).
const MAX_SUITE_LOG: u64 = 1 << 20;

/// One of the suite's agencies' audit logs, as the target witnesses it: deterministic leaves
/// (so later runs extend what earlier runs showed the target), checkpoints of origin
/// `throughgate/<agency>/audit` signed by the agency's node key. `fork` gives another history
/// for the same origin from that entry on.
struct SuiteLog {
    origin: String,
    key: SecretKey,
    fork: Option<u64>,
}

impl SuiteLog {
    fn new(actor: &Actor) -> SuiteLog {
        SuiteLog {
            origin: origin(actor.agency()),
            key: actor.node_key().clone(),
            fork: None,
        }
    }

    /// The same origin and key, with every leaf from `from` on different.
    fn forked(actor: &Actor, from: u64) -> SuiteLog {
        SuiteLog {
            fork: Some(from),
            ..SuiteLog::new(actor)
        }
    }

    fn leaves(&self, n: u64) -> Result<Vec<Hash>, CaseError> {
        if n > MAX_SUITE_LOG {
            return fail(format!(
                "the target holds a checkpoint of {n} entries of the suite's log; the suite rebuilds at most {MAX_SUITE_LOG}"
            ));
        }
        let pk = self.key.public().to_hex();
        Ok((0..n)
            .map(|i| {
                let branch = match self.fork {
                    Some(f) if i >= f => "fork",
                    _ => "main",
                };
                leaf_hash(format!("tg-conformance witness log {pk} {branch} entry {i}").as_bytes())
            })
            .collect())
    }

    fn checkpoint_by(&self, size: u64, key: &SecretKey, origin: &str) -> Result<String, CaseError> {
        let root = root_from_leaves(&self.leaves(size)?);
        Checkpoint::new(origin, size, root)
            .sign(origin, key)
            .map(|s| s.to_text())
            .map_err(|e| CaseError::Fail(format!("suite checkpoint: {e}")))
    }

    fn checkpoint(&self, size: u64) -> Result<String, CaseError> {
        self.checkpoint_by(size, &self.key, &self.origin)
    }

    fn consistency(&self, old: u64, new: u64) -> Result<Vec<ProofHash>, CaseError> {
        if old == 0 || old == new {
            return Ok(Vec::new());
        }
        let leaves = self.leaves(new)?;
        consistency_proof(&leaves, old, new)
            .map(|p| p.into_iter().map(ProofHash).collect())
            .map_err(|e| CaseError::Fail(format!("suite consistency proof: {e}")))
    }
}

/// A witness request from `actor`'s node.
fn witness_request(
    actor: &Actor,
    old_size: u64,
    consistency: Vec<ProofHash>,
    checkpoint: String,
) -> Envelope {
    Envelope::seal(
        &WitnessRequest {
            old_size,
            consistency,
            checkpoint,
        },
        &[(SignerRole::Node, actor.node_key())],
    )
}

async fn offer(conn: &Conn, env: &Envelope) -> Result<WitnessResponse, CaseError> {
    conn.request_expect::<WitnessResponse>(env)
        .await
        .map(|(_, r)| r)
}

fn outcome_name(r: &WitnessResponse) -> String {
    let o = match r.outcome {
        WitnessOutcome::Cosigned => "cosigned",
        WitnessOutcome::Conflict => "conflict",
        WitnessOutcome::Refused => "refused",
    };
    match (&r.known_size, &r.detail) {
        (Some(k), _) => format!("{o} (known_size {k})"),
        (_, Some(d)) => format!("{o} ({})", d.chars().take(100).collect::<String>()),
        _ => o.to_owned(),
    }
}

/// What the target holds of a log.
enum Held {
    /// The size of the newest checkpoint it cosigned (0 for none).
    Size(u64),
    /// It refuses the log outright (a standing alarm), with its words.
    Alarm(String),
}

/// What the target holds of `actor`'s log: a request whose `old_size` cannot be right gets a
/// conflict naming the size held (nothing is stored); a log held in alarm is refused.
async fn held(conn: &Conn, actor: &Actor) -> Result<Held, CaseError> {
    let log = SuiteLog::new(actor);
    let env = witness_request(actor, u64::MAX, Vec::new(), log.checkpoint(1)?);
    let r = offer(conn, &env).await?;
    match (r.outcome, r.known_size) {
        (WitnessOutcome::Conflict, Some(k)) => Ok(Held::Size(k)),
        (WitnessOutcome::Refused, _) => Ok(Held::Alarm(outcome_name(&r))),
        _ => fail(format!(
            "a witness request with old_size 2^64-1 got {}, expected conflict with known_size",
            outcome_name(&r)
        )),
    }
}

/// The size the target holds of `actor`'s log, failing if it refuses the log outright.
async fn held_size(conn: &Conn, actor: &Actor) -> Result<u64, CaseError> {
    match held(conn, actor).await? {
        Held::Size(k) => Ok(k),
        Held::Alarm(why) => fail(format!(
            "the target refuses {a}'s log outright: {why}. That is a standing alarm, probably from an earlier run's fork cases without a [second] identity; have the target's operator reset it (`tg audit witness-reset --peer {a}` on the reference) and run again",
            a = actor.agency()
        )),
    }
}

/// Checks a cosignature line: by the target's key under `throughgate/<target>/witness`, over
/// the checkpoint's note text, dated within 5 minutes of now.
fn check_cosignature(ctx: &Ctx, checkpoint: &str, r: &WitnessResponse) -> Result<u64, CaseError> {
    let line = r
        .cosignature
        .as_deref()
        .ok_or_else(|| CaseError::Fail("cosigned without a cosignature line".into()))?;
    let sig = NoteSignature::parse(line)
        .map_err(|e| CaseError::Fail(format!("the cosignature line does not parse: {e}")))?;
    let text = SignedCheckpoint::parse(checkpoint.as_bytes())
        .map_err(|e| CaseError::Fail(format!("suite checkpoint: {e}")))?
        .note()
        .text()
        .to_owned();
    let name = format!("throughgate/{}/witness", ctx.target().agency);
    let ts = verify_cosignature(&text, &sig, &name, &ctx.target().key)
        .map_err(|e| CaseError::Fail(format!("the cosignature does not verify: {e}")))?;
    let t = now().0;
    ensure(ts.abs_diff(t) <= 300, || {
        format!(
            "the cosignature is dated {ts}, {} s from now",
            ts.abs_diff(t)
        )
    })?;
    Ok(ts)
}

/// Offers the genuine extension of `actor`'s log from `old` to `new`, and expects it cosigned.
async fn extend(
    ctx: &Ctx,
    conn: &Conn,
    actor: &Actor,
    old: u64,
    new: u64,
) -> Result<(), CaseError> {
    let log = SuiteLog::new(actor);
    let cp = log.checkpoint(new)?;
    let env = witness_request(actor, old, log.consistency(old, new)?, cp.clone());
    let r = offer(conn, &env).await?;
    if r.outcome != WitnessOutcome::Cosigned {
        return fail(format!(
            "a consistent checkpoint of size {new} (from {old}) got {}",
            outcome_name(&r)
        ));
    }
    check_cosignature(ctx, &cp, &r)?;
    Ok(())
}

/// The identity whose log the alarm-raising cases offer: the second one if configured.
fn alarm_actor(ctx: &Ctx) -> &Actor {
    ctx.second.as_ref().unwrap_or(&ctx.me)
}

/// For an alarm-raising case: the size the target holds of `actor`'s log, extended to at
/// least `min`; `None` if the target already refuses that log outright.
async fn alarm_start(
    ctx: &Ctx,
    conn: &Conn,
    actor: &Actor,
    min: u64,
) -> Result<Option<u64>, CaseError> {
    match held(conn, actor).await? {
        Held::Alarm(_) => Ok(None),
        Held::Size(h) if h >= min => Ok(Some(h)),
        Held::Size(h) => {
            extend(ctx, conn, actor, h, min).await?;
            Ok(Some(min))
        }
    }
}

/// Offers `env`, which the target must refuse and must not store: afterwards it still holds
/// size `h` of the log, or refuses the log outright (a standing alarm).
async fn refused_not_stored(
    conn: &Conn,
    actor: &Actor,
    env: &Envelope,
    h: u64,
    what: &str,
) -> CaseResult {
    let r = offer(conn, env).await?;
    if r.outcome != WitnessOutcome::Refused {
        return fail(format!("{what} got {}, expected refused", outcome_name(&r)));
    }
    match held(conn, actor).await? {
        Held::Size(k) if k == h => Ok(format!("{what}: refused; size {h} still held")),
        Held::Alarm(_) => Ok(format!(
            "{what}: refused; the target now refuses {}'s log outright (standing alarm)",
            actor.agency()
        )),
        Held::Size(k) => fail(format!(
            "{what} was refused, but the target now holds size {k} instead of {h}"
        )),
    }
}

/// For an alarm-raising case when the target already refuses the log outright: the bad
/// checkpoint must be refused too.
async fn refused_in_alarm(conn: &Conn, actor: &Actor, env: &Envelope, what: &str) -> CaseResult {
    let r = offer(conn, env).await?;
    if r.outcome != WitnessOutcome::Refused {
        return fail(format!("{what} got {}, expected refused", outcome_name(&r)));
    }
    Ok(format!(
        "{what}: refused (the target already refuses {}'s log outright, from an earlier alarm)",
        actor.agency()
    ))
}

async fn witness_cosigns(ctx: &Ctx) -> CaseResult {
    let me = &ctx.me;
    let conn = ctx.conn().await?;
    let h = held_size(&conn, me).await?;
    let mut done = Vec::new();
    let mut at = h;
    if h == 0 {
        // The first checkpoint: accepted on its signature alone.
        extend(ctx, &conn, me, 0, 3).await?;
        done.push("first checkpoint (size 3) cosigned".to_owned());
        at = 3;
    }
    extend(ctx, &conn, me, at, at + 4).await?;
    done.push(format!("extension {at} -> {} cosigned", at + 4));
    let now_held = held_size(&conn, me).await?;
    ensure(now_held == at + 4, || {
        format!(
            "after cosigning size {} the target says it holds {now_held}",
            at + 4
        )
    })?;
    conn.close();
    Ok(done.join("; "))
}

async fn witness_conflict(ctx: &Ctx) -> CaseResult {
    let me = &ctx.me;
    let conn = ctx.conn().await?;
    let h = held_size(&conn, me).await?;
    let log = SuiteLog::new(me);
    let wrong = h + 1;
    let env = witness_request(me, wrong, Vec::new(), log.checkpoint(h + 2)?);
    let r = offer(&conn, &env).await?;
    conn.close();
    match (r.outcome, r.known_size) {
        (WitnessOutcome::Conflict, Some(k)) if k == h => {
            Ok(format!("old_size {wrong}: conflict, known_size {k}"))
        }
        _ => fail(format!(
            "old_size {wrong} while the target holds {h}: got {}, expected conflict with known_size {h}",
            outcome_name(&r)
        )),
    }
}

async fn witness_refuses_bad_signature(ctx: &Ctx) -> CaseResult {
    let me = &ctx.me;
    let conn = ctx.conn().await?;
    let h = held_size(&conn, me).await?;
    let log = SuiteLog::new(me);
    let new = h + 2;
    let stranger = SecretKey::generate();
    let forged = log.checkpoint_by(new, &stranger, &log.origin)?;
    let env = witness_request(me, h, log.consistency(h, new)?, forged);
    let first =
        refused_not_stored(&conn, me, &env, h, "a checkpoint signed by another key").await?;
    let other_origin = format!("{}-other", log.origin);
    let elsewhere = log.checkpoint_by(new, &log.key, &other_origin)?;
    let env = witness_request(me, h, log.consistency(h, new)?, elsewhere);
    let second = refused_not_stored(&conn, me, &env, h, "a checkpoint of another origin").await?;
    // Neither raised an alarm: the genuine checkpoint is still cosigned.
    extend(ctx, &conn, me, h, new).await?;
    conn.close();
    Ok(format!("{first}; {second}; the genuine one then cosigned"))
}

async fn witness_request_unsigned(ctx: &Ctx) -> CaseResult {
    let me = &ctx.me;
    let conn = ctx.conn().await?;
    let log = SuiteLog::new(me);
    let mut env = witness_request(me, 0, Vec::new(), log.checkpoint(1)?);
    env.sigs.clear();
    env.add_signature(SignerRole::Node, &SecretKey::generate());
    let r = conn.request_typed::<WitnessResponse>(&env).await?;
    conn.close();
    match r {
        Err(e) if e.code == ErrorCode::BadSignature => Ok("error bad_signature".into()),
        Err(e) => fail(format!(
            "expected error bad_signature, got error {} ({})",
            e.code, e.message
        )),
        Ok((_, w)) => fail(format!(
            "expected error bad_signature, got {}",
            outcome_name(&w)
        )),
    }
}

async fn witness_refuses_fork(ctx: &Ctx) -> CaseResult {
    let actor = alarm_actor(ctx);
    let conn = ctx.conn_as(actor).await?;
    let r = match alarm_start(ctx, &conn, actor, 2).await? {
        Some(h) => {
            let fork = SuiteLog::forked(actor, h - 1);
            let env = witness_request(actor, h, Vec::new(), fork.checkpoint(h)?);
            refused_not_stored(
                &conn,
                actor,
                &env,
                h,
                &format!("a second root for size {h}"),
            )
            .await
        }
        None => {
            let fork = SuiteLog::forked(actor, 0);
            let env = witness_request(actor, 0, Vec::new(), fork.checkpoint(2)?);
            refused_in_alarm(&conn, actor, &env, "a forked checkpoint").await
        }
    };
    conn.close();
    r
}

async fn witness_refuses_inconsistent(ctx: &Ctx) -> CaseResult {
    let actor = alarm_actor(ctx);
    let conn = ctx.conn_as(actor).await?;
    let r = match alarm_start(ctx, &conn, actor, 3).await? {
        Some(h) => {
            let fork = SuiteLog::forked(actor, h / 2);
            let new = h + 4;
            let env = witness_request(actor, h, fork.consistency(h, new)?, fork.checkpoint(new)?);
            let what = format!(
                "size {new} rewriting entries from {} (after size {h})",
                h / 2
            );
            refused_not_stored(&conn, actor, &env, h, &what).await
        }
        None => {
            let fork = SuiteLog::forked(actor, 1);
            let env = witness_request(actor, 0, Vec::new(), fork.checkpoint(4)?);
            refused_in_alarm(&conn, actor, &env, "a rewritten checkpoint").await
        }
    };
    conn.close();
    r
}

async fn witness_refuses_shrink(ctx: &Ctx) -> CaseResult {
    let actor = alarm_actor(ctx);
    let conn = ctx.conn_as(actor).await?;
    let log = SuiteLog::new(actor);
    let r = match alarm_start(ctx, &conn, actor, 2).await? {
        Some(h) => {
            let env = witness_request(actor, h, Vec::new(), log.checkpoint(h - 1)?);
            refused_not_stored(&conn, actor, &env, h, &format!("size {} after {h}", h - 1)).await
        }
        None => {
            let env = witness_request(actor, 0, Vec::new(), log.checkpoint(1)?);
            refused_in_alarm(&conn, actor, &env, "a smaller checkpoint").await
        }
    };
    conn.close();
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use throughgate_protocol::merkle::inclusion_proof;

    fn tree(n: u64, salt: &str) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("{salt}{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn left_siblings_show_consistency_and_catch_rewrites() {
        for s1 in 1..40u64 {
            for s2 in s1..70u64 {
                let leaves = tree(s2, "a");
                let last = s1 - 1;
                let p1: Vec<ProofHash> = inclusion_proof(&leaves, last, s1)
                    .unwrap()
                    .into_iter()
                    .map(ProofHash)
                    .collect();
                let p2: Vec<ProofHash> = inclusion_proof(&leaves, last, s2)
                    .unwrap()
                    .into_iter()
                    .map(ProofHash)
                    .collect();
                let l1 = left_siblings(last, s1, &p1).unwrap();
                assert_eq!(Some(l1.clone()), left_siblings(last, s2, &p2), "{s1} {s2}");
                // A tree rewritten before `last` has other left siblings.
                if s1 >= 2 {
                    let mut other = leaves.clone();
                    other[0] = leaf_hash(b"rewritten");
                    let p3: Vec<ProofHash> = inclusion_proof(&other, last, s2)
                        .unwrap()
                        .into_iter()
                        .map(ProofHash)
                        .collect();
                    assert_ne!(Some(l1), left_siblings(last, s2, &p3), "{s1} {s2}");
                }
            }
        }
    }
}
