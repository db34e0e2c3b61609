//! The holder's checks on a query before consent: requester, node and caseworker signatures,
//! the caseworker's credential, freshness, replay, addressing; and the shape of its answer.

use throughgate_protocol::credential::{Credential, StaffRole, CLOCK_SKEW_SECS};
use throughgate_protocol::envelope::{Envelope, MessageKind, SignerRole};
use throughgate_protocol::ids::{AgencyId, ConsentId, PersonId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{
    query_digest, ErrorCode, HolderRequest, Query, RefusalReason,
};
use throughgate_protocol::time::Timestamp;

use super::{case, refusal_of, send_query};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft;
use crate::identity::{issue, Actor};
use crate::now;
use crate::peer::End;

/// The query cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Query;
    vec![
        case!(a, "query.no_consent", "a valid query naming no consent is refused no_consent", no_consent),
        case!(a, "query.unknown_consent", "a valid query naming a consent the target never received is refused no_consent", unknown_consent),
        case!(a, "query.response_verifies", "the answer is a response signed only by the target's node key, naming the query's digest, id, passport and the target, dated within the query's window", response_verifies),
        case!(a, "query.expired", "a query past its expiry is refused query_expired", expired),
        case!(a, "query.not_yet_valid", "a query issued 10 minutes in the future is refused query_not_yet_valid", not_yet_valid),
        case!(a, "query.small_skew_tolerated", "a query issued 20 s in the future (within the 60 s skew) is processed (no_consent)", small_skew_tolerated),
        case!(a, "query.lifetime_too_long", "a query living an hour is refused query_lifetime_too_long", lifetime_too_long),
        case!(a, "query.lifetime_at_limit_accepted", "a query living exactly 300 s is processed (no_consent)", lifetime_at_limit),
        case!(a, "query.expiry_before_issue", "a query expiring before it was issued is refused query_lifetime_too_long or query_expired", expiry_before_issue),
        case!(a, "query.replayed", "the same signed query sent twice is refused query_replayed the second time", replayed),
        case!(a, "query.replayed_across_connections", "a query replayed on a new connection is refused query_replayed", replayed_across_connections),
        case!(a, "query.replayed_id_new_body", "a new query reusing a seen query id is refused query_replayed", replayed_id_new_body),
        case!(a, "query.requester_mismatch", "a query naming another member as requester, validly signed by it, sent by the suite, is refused requester_mismatch", requester_mismatch),
        case!(a, "query.requester_not_member", "a query naming a requester that is not a member is refused requester_not_authorised", requester_not_member),
        case!(a, "query.credential_stranger", "a caseworker credential signed by a key not listed for the requester is refused credential_invalid", credential_stranger),
        case!(a, "query.credential_expired", "an expired caseworker credential is refused credential_expired", credential_expired),
        case!(a, "query.credential_not_yet_valid", "a credential valid only from next hour is refused credential_expired", credential_not_yet_valid),
        case!(a, "query.credential_role", "a credential without the caseworker role (dpo, operator) is refused credential_role", credential_role),
        case!(a, "query.credential_other_agency", "a credential naming another agency than the requester is refused credential_invalid", credential_other_agency),
        case!(a, "query.credential_person_mismatch", "a query naming another caseworker than its credential is refused credential_invalid", credential_person_mismatch),
        case!(a, "query.credential_bad_name", "a credential with an empty display name is refused credential_invalid", credential_bad_name),
        case!(a, "query.credential_not_a_credential", "a query whose credential is an envelope of another kind is refused credential_invalid", credential_not_a_credential),
        case!(a, "query.caseworker_signature_missing", "a query signed by the node only is refused caseworker_signature_invalid", caseworker_signature_missing),
        case!(a, "query.caseworker_signature_wrong_key", "a query whose person signature is by another key than the credential's is refused caseworker_signature_invalid", caseworker_signature_wrong_key),
        case!(a, "query.caseworker_signature_wrong_domain", "a caseworker signature made in role node but labelled person is refused caseworker_signature_invalid", caseworker_signature_wrong_domain),
        case!(a, "query.not_addressed", "a query asking only another holder is refused not_addressed", not_addressed),
        case!(a, "query.no_requests", "a query asking no holder at all is refused not_addressed", no_requests),
        case!(a, "query.invalid_id_shape", "a query whose query id has the wrong shape gets error malformed", invalid_id_shape),
        case!(a, "query.nonce_wrong_length", "a query with a 15-byte nonce gets error malformed", nonce_wrong_length),
        case!(a, "query.unknown_purpose", "a query with an unknown purpose code gets error malformed", unknown_purpose),
        case!(a, "query.holder_named_twice", "a validly signed query naming the target twice in its requests gets error malformed (one request per holder)", holder_named_twice),
        case!(a, "query.duplicate_field", "a query body with the field nonce twice, signed as sent, gets error malformed", duplicate_field),
        case!(a, "query.absent_nullable_key", "a query body without its consent_id key (null would be right), signed as sent, gets error malformed: every key is required", absent_nullable_key),
        case!(a, "query.indefinite_length", "a query body whose top-level map has indefinite length (0xbf ... 0xff), signed as sent, gets error malformed: indefinite lengths are refused everywhere", indefinite_length),
        case!(a, "query.vectors_malformed_bodies", "every protocol vector of a query envelope whose body is invalid (bad passport id, short nonce, text timestamp, unknown category) gets error malformed", vectors_malformed_bodies),
    ]
}

async fn no_consent(ctx: &Ctx) -> CaseResult {
    refusal_of(
        ctx,
        &craft::unconsented_query(ctx, &ctx.me),
        RefusalReason::NoConsent,
    )
    .await
}

async fn unknown_consent(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    q.consent_id = Some(ConsentId::random());
    let conn = ctx.conn().await?;
    let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
    let r = check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    ensure(
        r.consent_id.is_none() || r.consent_id == q.consent_id,
        || "the refusal names a consent other than the query's".into(),
    )?;
    Ok("refused: no_consent".into())
}

async fn response_verifies(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let conn = ctx.conn().await?;
    let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
    let r = check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    let renv = answer.envelope();
    ensure(renv.kind == MessageKind::Response, || {
        format!("answer kind {}", renv.kind)
    })?;
    ensure(
        renv.sigs.len() == 1
            && renv
                .sigs
                .iter()
                .all(|s| s.role == SignerRole::Node && s.key == ctx.target().key),
        || {
            format!(
                "response carries {} signatures, not exactly one by the target's node key",
                renv.sigs.len()
            )
        },
    )?;
    ensure(r.query_digest == query_digest(&env), || {
        "digest mismatch".into()
    })?;
    ensure(
        r.as_of.plus_secs(CLOCK_SKEW_SECS) >= q.issued_at
            && r.as_of <= q.expires_at.plus_secs(CLOCK_SKEW_SECS),
        || format!("as_of {} outside the query's window", r.as_of),
    )?;
    ensure(r.records.is_empty() && r.withheld.is_empty(), || {
        "a refusal carries records or withheld entries".into()
    })?;
    Ok(format!(
        "signed by {}, digest, ids and window match",
        ctx.target().key.fingerprint()
    ))
}

fn timed(ctx: &Ctx, issued: Timestamp, expires: Timestamp) -> Query {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    q.issued_at = issued;
    q.expires_at = expires;
    q
}

async fn expired(ctx: &Ctx) -> CaseResult {
    let t = now();
    let q = timed(ctx, t.minus_secs(120), t.minus_secs(60));
    refusal_of(ctx, &q, RefusalReason::QueryExpired).await
}

async fn not_yet_valid(ctx: &Ctx) -> CaseResult {
    let t = now();
    let q = timed(ctx, t.plus_secs(600), t.plus_secs(660));
    refusal_of(ctx, &q, RefusalReason::QueryNotYetValid).await
}

async fn small_skew_tolerated(ctx: &Ctx) -> CaseResult {
    let t = now();
    let q = timed(ctx, t.plus_secs(20), t.plus_secs(80));
    refusal_of(ctx, &q, RefusalReason::NoConsent)
        .await
        .map(|_| "processed: no_consent".into())
}

async fn lifetime_too_long(ctx: &Ctx) -> CaseResult {
    let t = now();
    let q = timed(ctx, t, t.plus_secs(3600));
    refusal_of(ctx, &q, RefusalReason::QueryLifetimeTooLong).await
}

async fn lifetime_at_limit(ctx: &Ctx) -> CaseResult {
    let t = now();
    let q = timed(
        ctx,
        t,
        t.plus_secs(throughgate_protocol::query_check::MAX_QUERY_LIFETIME_SECS),
    );
    refusal_of(ctx, &q, RefusalReason::NoConsent)
        .await
        .map(|_| "processed: no_consent".into())
}

async fn expiry_before_issue(ctx: &Ctx) -> CaseResult {
    let t = now();
    let q = timed(ctx, t, t.minus_secs(1));
    let conn = ctx.conn().await?;
    let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
    let r = check::refused_any(
        ctx.target(),
        &env,
        &q,
        &answer,
        &[
            RefusalReason::QueryLifetimeTooLong,
            RefusalReason::QueryExpired,
        ],
    )?;
    conn.close();
    Ok(format!(
        "refused: {}",
        r.reason.map(|x| x.as_str()).unwrap_or("")
    ))
}

async fn replayed(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let conn = ctx.conn().await?;
    let (env, first) = send_query(&conn, &ctx.me, &q).await?;
    check::refused(ctx.target(), &env, &q, &first, RefusalReason::NoConsent)
        .map_err(|e| CaseError::Fail(format!("first sending: {e}")))?;
    let second = conn.request(&env).await?;
    check::refused(
        ctx.target(),
        &env,
        &q,
        &second,
        RefusalReason::QueryReplayed,
    )?;
    conn.close();
    Ok("first no_consent, then query_replayed".into())
}

async fn replayed_across_connections(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let conn = ctx.conn().await?;
    let (env, first) = send_query(&conn, &ctx.me, &q).await?;
    check::refused(ctx.target(), &env, &q, &first, RefusalReason::NoConsent)
        .map_err(|e| CaseError::Fail(format!("first sending: {e}")))?;
    conn.close();
    let conn2 = ctx.conn().await?;
    let second = conn2.request(&env).await?;
    check::refused(
        ctx.target(),
        &env,
        &q,
        &second,
        RefusalReason::QueryReplayed,
    )?;
    conn2.close();
    Ok("query_replayed on a new connection".into())
}

async fn replayed_id_new_body(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let conn = ctx.conn().await?;
    let (env, first) = send_query(&conn, &ctx.me, &q).await?;
    check::refused(ctx.target(), &env, &q, &first, RefusalReason::NoConsent)
        .map_err(|e| CaseError::Fail(format!("first sending: {e}")))?;
    let mut q2 = craft::unconsented_query(ctx, &ctx.me);
    q2.query_id = q.query_id.clone();
    let (env2, second) = send_query(&conn, &ctx.me, &q2).await?;
    check::refused(
        ctx.target(),
        &env2,
        &q2,
        &second,
        RefusalReason::QueryReplayed,
    )?;
    conn.close();
    Ok("same id, new nonce and passport: query_replayed".into())
}

async fn requester_mismatch(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let Some(second) = &ctx.second else {
        // Without a second identity the suite cannot sign validly as another member; it names
        // the target itself as requester, which must be refused one way or another.
        let mut q = craft::unconsented_query(ctx, &ctx.me);
        q.requester = ctx.target().agency.clone();
        let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
        let r = check::refused_any(
            ctx.target(),
            &env,
            &q,
            &answer,
            &[
                RefusalReason::RequesterMismatch,
                RefusalReason::RequesterSignatureInvalid,
                RefusalReason::RequesterNotAuthorised,
            ],
        )?;
        conn.close();
        return Ok(format!(
            "refused {} (imprecise: no second identity configured)",
            r.reason.map(|x| x.as_str()).unwrap_or("")
        ));
    };
    let q = craft::unconsented_query(ctx, second);
    let (env, answer) = send_query(&conn, second, &q).await?;
    check::refused(
        ctx.target(),
        &env,
        &q,
        &answer,
        RefusalReason::RequesterMismatch,
    )?;
    conn.close();
    Ok(format!(
        "query by {} sent over {}'s connection: requester_mismatch",
        second.agency(),
        ctx.me.agency()
    ))
}

async fn requester_not_member(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    q.requester =
        AgencyId::new("tg-not-a-member").map_err(|e| CaseError::Fail(format!("suite: {e}")))?;
    refusal_of(ctx, &q, RefusalReason::RequesterNotAuthorised).await
}

/// Sends an unconsented query signed by `actor`'s caseworker and node.
async fn with_actor(ctx: &Ctx, actor: &Actor, reason: RefusalReason) -> CaseResult {
    let q = craft::unconsented_query(ctx, actor);
    let conn = ctx.conn().await?;
    let (env, answer) = send_query(&conn, actor, &q).await?;
    check::refused(ctx.target(), &env, &q, &answer, reason)?;
    conn.close();
    Ok(format!("refused: {reason}"))
}

fn actor_with(
    ctx: &Ctx,
    roles: Vec<StaffRole>,
    not_before: Timestamp,
    not_after: Timestamp,
    issuer: &SecretKey,
) -> Actor {
    let cw = issue(
        &ctx.me.member,
        &ctx.me.cw.person,
        roles,
        not_before,
        not_after,
        issuer,
    );
    Actor {
        member: ctx.me.member.clone(),
        cw,
    }
}

async fn credential_stranger(ctx: &Ctx) -> CaseResult {
    let t = now();
    let a = actor_with(
        ctx,
        vec![StaffRole::Caseworker],
        t.minus_secs(60),
        t.plus_secs(3600),
        &SecretKey::generate(),
    );
    with_actor(ctx, &a, RefusalReason::CredentialInvalid).await
}

async fn credential_expired(ctx: &Ctx) -> CaseResult {
    let t = now();
    let a = actor_with(
        ctx,
        vec![StaffRole::Caseworker],
        t.minus_secs(7200),
        t.minus_secs(3600),
        ctx.me.node_key(),
    );
    with_actor(ctx, &a, RefusalReason::CredentialExpired).await
}

async fn credential_not_yet_valid(ctx: &Ctx) -> CaseResult {
    let t = now();
    let a = actor_with(
        ctx,
        vec![StaffRole::Caseworker],
        t.plus_secs(3600),
        t.plus_secs(7200),
        ctx.me.node_key(),
    );
    with_actor(ctx, &a, RefusalReason::CredentialExpired).await
}

async fn credential_role(ctx: &Ctx) -> CaseResult {
    let t = now();
    let a = actor_with(
        ctx,
        vec![StaffRole::Dpo, StaffRole::Operator],
        t.minus_secs(60),
        t.plus_secs(3600),
        ctx.me.node_key(),
    );
    with_actor(ctx, &a, RefusalReason::CredentialRole).await
}

/// An actor whose credential body is `edit`ed before signing by the suite's node key.
fn actor_with_body(ctx: &Ctx, edit: impl FnOnce(&mut Credential)) -> Actor {
    let mut cw = ctx.me.cw.clone();
    let mut body = cw.body.clone();
    edit(&mut body);
    cw.credential = Envelope::seal(&body, &[(SignerRole::Node, ctx.me.node_key())]);
    cw.person = body.person_id.clone();
    cw.body = body;
    Actor {
        member: ctx.me.member.clone(),
        cw,
    }
}

async fn credential_other_agency(ctx: &Ctx) -> CaseResult {
    let other = ctx
        .second
        .as_ref()
        .map(|s| s.agency().clone())
        .unwrap_or_else(|| ctx.target().agency.clone());
    let a = actor_with_body(ctx, |b| b.agency = other);
    with_actor(ctx, &a, RefusalReason::CredentialInvalid).await
}

async fn credential_person_mismatch(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    q.caseworker =
        PersonId::new("someone-else").map_err(|e| CaseError::Fail(format!("suite: {e}")))?;
    refusal_of(ctx, &q, RefusalReason::CredentialInvalid).await
}

async fn credential_bad_name(ctx: &Ctx) -> CaseResult {
    let a = actor_with_body(ctx, |b| b.display_name = String::new());
    with_actor(ctx, &a, RefusalReason::CredentialInvalid).await
}

async fn credential_not_a_credential(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.me.clone();
    a.cw.credential = Envelope::seal_bytes(
        MessageKind::Error,
        a.cw.credential.body.clone(),
        &[(SignerRole::Node, ctx.me.node_key())],
    );
    with_actor(ctx, &a, RefusalReason::CredentialInvalid).await
}

async fn caseworker_signature_missing(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = Envelope::seal(&q, &[(SignerRole::Node, ctx.me.node_key())]);
    super::refusal_of_env(ctx, &env, RefusalReason::CaseworkerSignatureInvalid).await
}

async fn caseworker_signature_wrong_key(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = Envelope::seal(
        &q,
        &[
            (SignerRole::Person, &SecretKey::generate()),
            (SignerRole::Node, ctx.me.node_key()),
        ],
    );
    super::refusal_of_env(ctx, &env, RefusalReason::CaseworkerSignatureInvalid).await
}

async fn caseworker_signature_wrong_domain(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut env = Envelope::seal(&q, &[(SignerRole::Node, ctx.me.node_key())]);
    craft::foreign_signature(
        &mut env,
        &ctx.me.cw.key,
        MessageKind::Query,
        SignerRole::Node,
        SignerRole::Person,
    );
    super::refusal_of_env(ctx, &env, RefusalReason::CaseworkerSignatureInvalid).await
}

async fn not_addressed(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    q.requests = vec![HolderRequest {
        holder: ctx.me.agency().clone(),
        categories: ctx.categories.clone(),
    }];
    refusal_of(ctx, &q, RefusalReason::NotAddressed).await
}

async fn no_requests(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    q.requests = Vec::new();
    refusal_of(ctx, &q, RefusalReason::NotAddressed).await
}

/// Sends a query whose CBOR body had one field replaced by `value` (signatures valid over the
/// bytes sent) and expects error malformed.
async fn with_field(ctx: &Ctx, field: &str, value: ciborium::Value) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut v =
        ciborium::Value::serialized(&q).map_err(|e| CaseError::Fail(format!("suite: {e}")))?;
    let ciborium::Value::Map(entries) = &mut v else {
        return fail("suite: query is not a map");
    };
    let mut found = false;
    for (k, val) in entries.iter_mut() {
        if k.as_text() == Some(field) {
            *val = value.clone();
            found = true;
        }
    }
    ensure(found, || format!("suite: no field {field}"))?;
    let body = craft::cbor(&v);
    malformed_body(ctx, body).await
}

async fn holder_named_twice(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    let first = q
        .requests
        .first()
        .cloned()
        .ok_or_else(|| CaseError::Fail("suite: the crafted query addresses nobody".into()))?;
    q.requests = vec![first.clone(), first];
    malformed_body(ctx, craft::cbor(&q)).await
}

/// Sends query `body`, signed as sent by the suite's caseworker and node, and expects error
/// malformed.
async fn malformed_body(ctx: &Ctx, body: Vec<u8>) -> CaseResult {
    let env = Envelope::seal_bytes(
        MessageKind::Query,
        body,
        &[
            (SignerRole::Person, &ctx.me.cw.key),
            (SignerRole::Node, ctx.me.node_key()),
        ],
    );
    let conn = ctx.conn().await?;
    let answer = conn
        .exchange_raw(&craft::frame(&env.to_bytes()), End::Finish)
        .await?;
    let e = check::error(&answer, &[ErrorCode::Malformed])?;
    conn.close();
    Ok(format!(
        "error malformed: {}",
        e.message.chars().take(100).collect::<String>()
    ))
}

async fn invalid_id_shape(ctx: &Ctx) -> CaseResult {
    with_field(ctx, "query_id", ciborium::Value::Text("qr-not-hex!".into())).await
}

async fn nonce_wrong_length(ctx: &Ctx) -> CaseResult {
    with_field(ctx, "nonce", ciborium::Value::Bytes(vec![7u8; 15])).await
}

async fn unknown_purpose(ctx: &Ctx) -> CaseResult {
    with_field(ctx, "purpose", ciborium::Value::Text("marketing".into())).await
}

async fn duplicate_field(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let body = craft::edit_map(&craft::cbor(&q), |m| {
        if let Some(nonce) = m
            .iter()
            .find(|(k, _)| k.as_text() == Some("nonce"))
            .cloned()
        {
            m.push(nonce);
        }
    })
    .ok_or_else(|| CaseError::Fail("suite: query is not a map".into()))?;
    malformed_body(ctx, body).await
}

async fn absent_nullable_key(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let body = craft::edit_map(&craft::cbor(&q), |m| {
        m.retain(|(k, _)| k.as_text() != Some("consent_id"));
    })
    .ok_or_else(|| CaseError::Fail("suite: query is not a map".into()))?;
    malformed_body(ctx, body).await
}

async fn indefinite_length(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let body = craft::indefinite_map(&craft::cbor(&q))
        .ok_or_else(|| CaseError::Fail("suite: query body is not a small map".into()))?;
    malformed_body(ctx, body).await
}

async fn vectors_malformed_bodies(ctx: &Ctx) -> CaseResult {
    let picked: Vec<_> = crate::vectors::VECTORS
        .iter()
        .filter(|v| v.group() == "body" && v.message == Some("query") && v.expect == "invalid")
        .filter_map(|v| v.bytes().map(|b| (v, craft::frame(&b))))
        .collect();
    if picked.is_empty() {
        return fail("the suite was built without protocol vectors (protocol/vectors/messages)");
    }
    let conn = ctx.conn().await?;
    let mut bad = Vec::new();
    for (v, bytes) in &picked {
        let answer = conn.exchange_raw(bytes, End::Finish).await?;
        if let Err(e) = check::error(&answer, &[ErrorCode::Malformed]) {
            bad.push(format!("{}: {e}", v.id));
        }
    }
    conn.close();
    if bad.is_empty() {
        Ok(format!(
            "{} vectors: {}",
            picked.len(),
            picked
                .iter()
                .map(|(v, _)| v.id)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        fail(bad.join("; "))
    }
}
