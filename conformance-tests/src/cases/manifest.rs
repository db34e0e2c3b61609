//! Manifest exchange (`manifest_sync`): the target answers with the manifest it trusts; it
//! never adopts an older version, a different document under its own version, an expired,
//! under-signed or self-governed one, another federation's, or one that drops the target; it
//! adopts a newer version signed by its governance threshold.
//!
//! The cases that need a governance-signed manifest need a governance key of the target's
//! federation in the identity file (`governance_key`); the suite cannot sign real federations'
//! manifests, so without one they are `unsupported`. They leave the target trusting a newer
//! version (`manifest.newer_adopted`, which runs last): use a test federation.

use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{verify_manifest, Governance, Manifest, Member, MemberRole};
use throughgate_protocol::messages::{ErrorCode, ManifestSync, RefusalReason};

use super::{case, refusal_of};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::craft;
use crate::now;
use crate::peer::Conn;

/// The manifest cases (`manifest.newer_adopted` last: it changes what the target trusts).
pub fn cases() -> Vec<Case> {
    let a = Area::Manifest;
    vec![
        case!(a, "manifest.sync_answered", "a manifest_sync is answered with a manifest_sync signed by the target, carrying the manifest it trusts: valid and unexpired, listing the target with the key it presented and the suite as a requester", sync_answered),
        case!(a, "manifest.own_version_idempotent", "offering the target its own manifest back changes nothing: it answers with the same version and document", own_version_idempotent),
        case!(a, "manifest.other_federation_not_adopted", "a newer manifest of another federation, validly signed by its own governance, is not adopted", other_federation_not_adopted),
        case!(a, "manifest.under_signed_not_adopted", "a newer version signed by a key not among the governance keys is not adopted: the target keeps answering with its own version", under_signed_not_adopted),
        case!(a, "manifest.self_governed_not_adopted", "a newer version naming new governance keys and signed only by them (not chained to the trusted governance) is not adopted", self_governed_not_adopted),
        case!(a, "manifest.malformed_sync", "a manifest_sync whose body does not decode gets error malformed", malformed_sync),
        case!(a, "manifest.sync_bad_signature", "a manifest_sync signed by a key that is not the suite's node key gets error bad_signature, and the target does not act on the manifest inside", sync_bad_signature),
        case!(a, "manifest.rollback_not_adopted", "an older version, governance-signed, is not adopted (rollback): the target keeps answering with its newer version [needs governance_key]", rollback_not_adopted),
        case!(a, "manifest.same_version_different_not_adopted", "a different document under the trusted version number, governance-signed, is not adopted [needs governance_key]", same_version_different_not_adopted),
        case!(a, "manifest.expired_not_adopted", "a newer version that has already expired, governance-signed, is not adopted [needs governance_key]", expired_not_adopted),
        case!(a, "manifest.witness_threshold_too_high_not_adopted", "a newer version whose witness_threshold exceeds the number of other members a log can have, governance-signed, is not adopted [needs governance_key]", witness_threshold_too_high_not_adopted),
        case!(a, "manifest.without_target_not_adopted", "a newer version that no longer lists the target, governance-signed, is not adopted [needs governance_key]", without_target_not_adopted),
        case!(a, "manifest.newer_adopted", "a newer version signed by the governance threshold is adopted: the target answers with it from then on and still serves the suite [needs governance_key]", newer_adopted),
    ]
}

/// Offers `manifest` to the target in a `manifest_sync` signed by the suite's node; returns the
/// manifest the target answers with (envelope and body).
async fn sync(
    ctx: &Ctx,
    conn: &Conn,
    manifest: &Envelope,
) -> Result<(Envelope, Manifest), CaseError> {
    let env = Envelope::seal(
        &ManifestSync {
            manifest: manifest.clone(),
        },
        &[(SignerRole::Node, ctx.me.node_key())],
    );
    let (_, answer) = conn.request_expect::<ManifestSync>(&env).await?;
    let m: Manifest = answer.manifest.open().map_err(|e| {
        CaseError::Fail(format!(
            "the manifest in the target's manifest_sync does not decode: {e}"
        ))
    })?;
    Ok((answer.manifest, m))
}

/// A manifest of a federation of its own (only the suite, its own governance key): offered to
/// learn what the target trusts without offering it anything it could adopt.
fn stranger_manifest(ctx: &Ctx, version: u64) -> Envelope {
    let t = now();
    let gov = SecretKey::generate();
    let body = Manifest {
        federation: "tg-conformance-elsewhere".into(),
        version,
        issued_at: t.minus_secs(60),
        expires_at: t.plus_secs(3600),
        members: vec![Member {
            id: ctx.me.agency().clone(),
            name: "Conformance suite".into(),
            sector: ctx.me.member.sector,
            addresses: vec!["127.0.0.1:9".into()],
            node_keys: vec![ctx.me.node_key().public()],
            categories: Vec::new(),
            id_scheme: ctx.subject.scheme,
            roles: vec![MemberRole::Requester],
            retired_keys: vec![],
        }],
        governance: Governance {
            keys: vec![gov.public()],
            threshold: 1,
        },
        witness_threshold: 0,
    };
    Envelope::seal(&body, &[(SignerRole::Governance, &gov)])
}

/// The manifest the target trusts now.
async fn current(ctx: &Ctx, conn: &Conn) -> Result<(Envelope, Manifest), CaseError> {
    sync(ctx, conn, &stranger_manifest(ctx, 1)).await
}

/// Offers `offered`, expects the target to keep `before`, and checks again with a fresh probe.
async fn not_adopted(
    ctx: &Ctx,
    conn: &Conn,
    before: &Manifest,
    offered: &Envelope,
    what: &str,
) -> CaseResult {
    let (_, answered) = sync(ctx, conn, offered).await?;
    ensure(&answered == before, || {
        format!(
            "after {what} the target answers with version {} of {:?} (it trusted version {}): adopted",
            answered.version, answered.federation, before.version
        )
    })?;
    let (_, again) = current(ctx, conn).await?;
    ensure(&again == before, || {
        format!("after {what} the target trusts version {}", again.version)
    })?;
    Ok(format!(
        "{what} not adopted; the target keeps version {}",
        before.version
    ))
}

/// The governance key the identity file gives, if it can sign for the target's manifest alone.
fn governance<'a>(ctx: &'a Ctx, m: &Manifest) -> Result<&'a SecretKey, CaseError> {
    let Some(k) = ctx.governance.as_ref() else {
        return Err(CaseError::Unsupported(
            "needs a governance key of the target's federation (governance_key in the identity file)"
                .into(),
        ));
    };
    if !m.governance.keys.contains(&k.public()) {
        return Err(CaseError::Unsupported(format!(
            "the identity's governance key {} is not among the target manifest's governance keys",
            k.public().fingerprint()
        )));
    }
    if m.governance.threshold != 1 {
        return Err(CaseError::Unsupported(format!(
            "the target's manifest needs {} governance signatures; the identity file gives one key",
            m.governance.threshold
        )));
    }
    Ok(k)
}

fn seal(body: &Manifest, key: &SecretKey) -> Envelope {
    Envelope::seal(body, &[(SignerRole::Governance, key)])
}

async fn sync_answered(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (env, m) = current(ctx, &conn).await?;
    conn.close();
    let verified = verify_manifest(&env, None, now())
        .map_err(|e| CaseError::Fail(format!("the manifest the target trusts: {e}")))?;
    let target = ctx.target();
    let me = verified.member(&target.agency).ok_or_else(|| {
        CaseError::Fail(format!(
            "the manifest does not list the target {}",
            target.agency
        ))
    })?;
    ensure(me.node_keys.contains(&target.key), || {
        "the manifest does not list the key the target presented".into()
    })?;
    let suite = verified.member(ctx.me.agency()).ok_or_else(|| {
        CaseError::Fail(format!(
            "the manifest does not list the suite's {}",
            ctx.me.agency()
        ))
    })?;
    ensure(
        suite.node_keys.contains(&ctx.me.node_key().public()) && suite.is_requester(),
        || "the manifest does not list the suite's key as a requester".into(),
    )?;
    Ok(format!(
        "{:?} version {}, {} members, governance {}-of-{}",
        m.federation,
        m.version,
        m.members.len(),
        m.governance.threshold,
        m.governance.keys.len()
    ))
}

async fn own_version_idempotent(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (env, before) = current(ctx, &conn).await?;
    let r = not_adopted(ctx, &conn, &before, &env, "its own manifest").await;
    conn.close();
    r.map(|_| format!("version {} answered unchanged", before.version))
}

async fn other_federation_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let offered = stranger_manifest(ctx, before.version + 1);
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &offered,
        "another federation's manifest",
    )
    .await;
    conn.close();
    r
}

fn newer(before: &Manifest) -> Manifest {
    let mut m = before.clone();
    m.version += 1;
    m.issued_at = now().minus_secs(5);
    if m.expires_at <= m.issued_at {
        m.expires_at = m.issued_at.plus_secs(3600);
    }
    m
}

async fn under_signed_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let offered = seal(&newer(&before), &SecretKey::generate());
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &offered,
        "a version signed by an unlisted key",
    )
    .await;
    conn.close();
    r
}

async fn self_governed_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let usurper = SecretKey::generate();
    let mut body = newer(&before);
    body.governance = Governance {
        keys: vec![usurper.public()],
        threshold: 1,
    };
    let offered = seal(&body, &usurper);
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &offered,
        "a version signed only by the new governance it names",
    )
    .await;
    conn.close();
    r
}

async fn malformed_sync(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let env = Envelope::seal_bytes(
        throughgate_protocol::envelope::MessageKind::ManifestSync,
        vec![
            0xa1, 0x68, b'm', b'a', b'n', b'i', b'f', b'e', b's', b't', 0x01,
        ],
        &[(SignerRole::Node, ctx.me.node_key())],
    );
    let r = conn.request_typed::<ManifestSync>(&env).await?;
    conn.close();
    match r {
        Err(e) if e.code == ErrorCode::Malformed => Ok("error malformed".into()),
        Err(e) => fail(format!(
            "expected error malformed, got error {} ({})",
            e.code, e.message
        )),
        Ok(_) => fail("expected error malformed, got a manifest_sync"),
    }
}

async fn sync_bad_signature(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (mine, before) = current(ctx, &conn).await?;
    let stranger = SecretKey::generate();
    let env = Envelope::seal(
        &ManifestSync { manifest: mine },
        &[(SignerRole::Node, &stranger)],
    );
    let r = conn.request_typed::<ManifestSync>(&env).await?;
    let after = current(ctx, &conn).await;
    conn.close();
    match r {
        Err(e) if e.code == ErrorCode::BadSignature => {}
        Err(e) => {
            return fail(format!(
                "expected error bad_signature, got error {} ({})",
                e.code, e.message
            ))
        }
        Ok(_) => return fail("expected error bad_signature, got a manifest_sync"),
    }
    let (_, after) = after?;
    ensure(after == before, || {
        format!(
            "the target's manifest changed (version {} to {})",
            before.version, after.version
        )
    })?;
    Ok(format!(
        "error bad_signature; the target still trusts version {}",
        before.version
    ))
}

async fn rollback_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let gov = governance(ctx, &before)?;
    let Some(older) = before.version.checked_sub(1) else {
        return Err(CaseError::Unsupported(
            "the target trusts version 0; there is no older version".into(),
        ));
    };
    let mut body = before.clone();
    body.version = older;
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &seal(&body, gov),
        &format!("version {older}"),
    )
    .await;
    conn.close();
    r
}

async fn same_version_different_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let gov = governance(ctx, &before)?;
    let mut body = before.clone();
    body.issued_at = body.issued_at.minus_secs(1);
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &seal(&body, gov),
        &format!("another document as version {}", before.version),
    )
    .await;
    conn.close();
    r
}

async fn expired_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let gov = governance(ctx, &before)?;
    let mut body = newer(&before);
    let t = now();
    body.issued_at = t.minus_secs(7200);
    body.expires_at = t.minus_secs(3600);
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &seal(&body, gov),
        "an expired newer version",
    )
    .await;
    conn.close();
    r
}

async fn witness_threshold_too_high_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let gov = governance(ctx, &before)?;
    let mut body = newer(&before);
    body.witness_threshold = u32::try_from(body.members.len()).unwrap_or(u32::MAX);
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &seal(&body, gov),
        "a newer version asking every member, the log itself included, to witness",
    )
    .await;
    conn.close();
    r
}

/// The manifest the target trusts, as it answers a `manifest_sync`, verified now.
pub(crate) async fn trusted(ctx: &Ctx, conn: &Conn) -> Result<Manifest, CaseError> {
    let (env, _) = current(ctx, conn).await?;
    verify_manifest(&env, None, now())
        .map_err(|e| CaseError::Fail(format!("the manifest the target trusts: {e}")))
}

async fn without_target_not_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let gov = governance(ctx, &before)?;
    let mut body = newer(&before);
    let target: AgencyId = ctx.target().agency.clone();
    body.members.retain(|m| m.id != target);
    let r = not_adopted(
        ctx,
        &conn,
        &before,
        &seal(&body, gov),
        "a newer version without the target",
    )
    .await;
    conn.close();
    r
}

async fn newer_adopted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (_, before) = current(ctx, &conn).await?;
    let gov = governance(ctx, &before)?;
    let body = newer(&before);
    let (_, answered) = sync(ctx, &conn, &seal(&body, gov)).await?;
    ensure(answered == body, || {
        format!(
            "offered version {}, the target answers with version {}: not adopted",
            body.version, answered.version
        )
    })?;
    let (_, again) = current(ctx, &conn).await?;
    ensure(again == body, || {
        format!("the target went back to version {}", again.version)
    })?;
    // Offering the version it replaced is now a rollback.
    let (_, after_old) = sync(ctx, &conn, &seal(&before, gov)).await?;
    ensure(after_old == body, || {
        format!(
            "after adopting version {}, the old version {} was taken back",
            body.version, before.version
        )
    })?;
    conn.close();
    refusal_of(
        ctx,
        &craft::unconsented_query(ctx, &ctx.me),
        RefusalReason::NoConsent,
    )
    .await
    .map_err(|e| CaseError::Fail(format!("after the new manifest, a query: {e}")))?;
    Ok(format!(
        "version {} adopted (was {}); the old one then refused; queries still answered",
        body.version, before.version
    ))
}
