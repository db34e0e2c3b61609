//! Every case, by area, and the small flows many of them share.

pub mod audit;
pub mod consent;
pub mod envelope;
pub mod limits;
pub mod manifest;
pub mod minimisation;
pub mod query;
pub mod transport;

use throughgate_protocol::category::Category;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::messages::{AckOutcome, AckSubject, Query, RefusalReason, Response};

use crate::case::{Case, CaseError, Ctx};
use crate::check;
use crate::craft::{self, Draft};
use crate::identity::Actor;
use crate::peer::{Answer, Conn};

/// Builds a [`Case`] from an area, id, expectation and async fn.
macro_rules! case {
    ($area:expr, $id:literal, $expect:literal, $f:path) => {
        $crate::case::Case {
            id: $id,
            area: $area,
            expect: $expect,
            run: |ctx| Box::pin($f(ctx)),
        }
    };
}
pub(crate) use case;

/// Every case, in run order.
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(transport::cases());
    v.extend(envelope::cases());
    v.extend(query::cases());
    v.extend(consent::cases());
    v.extend(minimisation::cases());
    v.extend(limits::cases());
    v.extend(audit::cases());
    v.extend(manifest::cases());
    v
}

/// Seals `q` as `actor` and sends it on `conn`.
pub async fn send_query(
    conn: &Conn,
    actor: &Actor,
    q: &Query,
) -> Result<(Envelope, Answer), CaseError> {
    let env = craft::seal_query(actor, q);
    let answer = conn.request(&env).await?;
    Ok((env, answer))
}

/// Sends an already sealed query and expects a refusal with `reason`.
pub async fn expect_refusal(
    ctx: &Ctx,
    conn: &Conn,
    env: &Envelope,
    q: &Query,
    reason: RefusalReason,
) -> Result<Response, CaseError> {
    let answer = conn.request(env).await?;
    check::refused(ctx.target(), env, q, &answer, reason)
}

/// Sends `q` (sealed normally as the first identity) and expects a refusal with `reason`.
pub async fn refusal_of(ctx: &Ctx, q: &Query, reason: RefusalReason) -> Result<String, CaseError> {
    let conn = ctx.conn().await?;
    let (env, answer) = send_query(&conn, &ctx.me, q).await?;
    check::refused(ctx.target(), &env, q, &answer, reason)?;
    conn.close();
    Ok(format!("refused: {reason}"))
}

/// Sends a sealed query envelope as the first identity and expects a refusal with `reason`.
pub async fn refusal_of_env(
    ctx: &Ctx,
    env: &Envelope,
    reason: RefusalReason,
) -> Result<String, CaseError> {
    let q: Query = env
        .open()
        .map_err(|e| CaseError::Fail(format!("suite built an undecodable query: {e}")))?;
    let conn = ctx.conn().await?;
    expect_refusal(ctx, &conn, env, &q, reason).await?;
    conn.close();
    Ok(format!("refused: {reason}"))
}

/// Grants a draft to the target as `actor` and expects one of `outcomes`.
pub async fn grant(
    ctx: &Ctx,
    conn: &Conn,
    actor: &Actor,
    d: &Draft,
    outcomes: &[AckOutcome],
) -> Result<AckOutcome, CaseError> {
    let env = craft::grant_draft(ctx, actor, d);
    let answer = conn.request(&env).await?;
    let a = check::ack(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Grant,
        outcomes,
    )?;
    Ok(a.outcome)
}

/// A consent for the subject, recorded by the first identity and linked at the target.
pub async fn linked(ctx: &Ctx, conn: &Conn) -> Result<Draft, CaseError> {
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    grant(ctx, conn, &ctx.me, &d, &[AckOutcome::Linked]).await?;
    Ok(d)
}

/// Queries under a draft's consent as `actor`, asking `categories`.
pub async fn ask(
    ctx: &Ctx,
    conn: &Conn,
    actor: &Actor,
    d: &Draft,
    categories: Vec<Category>,
) -> Result<(Envelope, Query, Answer), CaseError> {
    let q = craft::query(
        ctx,
        actor,
        d.consent.passport_id.clone(),
        Some(d.consent.consent_id.clone()),
        categories,
    );
    let (env, answer) = send_query(conn, actor, &q).await?;
    Ok((env, q, answer))
}

/// Queries under a draft's consent as the first identity for the target's categories and
/// expects a refusal with `reason`.
pub async fn ask_expect_refusal(
    ctx: &Ctx,
    conn: &Conn,
    d: &Draft,
    reason: RefusalReason,
) -> Result<Response, CaseError> {
    let (env, q, answer) = ask(ctx, conn, &ctx.me, d, ctx.categories.clone()).await?;
    check::refused(ctx.target(), &env, &q, &answer, reason)
}

/// A category not in `cats` (there are nine; a target never holds them all in a consent).
pub fn category_outside(cats: &[Category]) -> Option<Category> {
    Category::ALL.into_iter().find(|c| !cats.contains(c))
}
