//! Minimisation: a disclosure carries only asked, consented, released categories and fields,
//! inside the consent's period; what was held back is named, never shown; `risk` never reaches
//! a non-justice agency for resettlement.

use std::collections::BTreeSet;

use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::messages::{AckOutcome, Outcome, RefusalReason, Response};

use super::{ask, case, grant};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft::{self, Draft};
use crate::identity::Actor;
use crate::now;
use crate::peer::Conn;

/// The minimisation cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Minimisation;
    vec![
        case!(a, "minimisation.records_match_claims", "every disclosed record is of an asked category not listed as withheld, and carries no field the response lists as withheld", records_match_claims),
        case!(a, "minimisation.only_asked_categories", "asking one category of several consented discloses records of that category only", only_asked_categories),
        case!(a, "minimisation.withheld_names_only", "withheld lists asked categories and kind.field names only, never values or identifiers", withheld_names_only),
        case!(a, "minimisation.no_local_identifier", "a disclosure never carries the person's identifier at the holder", no_local_identifier),
        case!(a, "minimisation.records_within_consent_period", "with a consent limited to records about the last and next 30 days, every disclosed record is about a date inside that period", records_within_period),
        case!(a, "minimisation.risk_only_not_disclosed", "asking only risk for resettlement as a non-justice agency discloses no risk record (policy_withholds_all or an empty disclosure)", risk_only_not_disclosed),
        case!(a, "minimisation.risk_withheld_among_others", "asking every category plus risk for resettlement as a non-justice agency discloses no risk record and names risk as withheld", risk_withheld_among_others),
    ]
}

/// Checks a disclosure against what it claims and what was asked.
fn matches_claims(r: &Response, asked: &[Category]) -> Result<(), CaseError> {
    let withheld_cats: BTreeSet<Category> = r.withheld.categories.iter().copied().collect();
    if let Some(c) = withheld_cats.iter().find(|c| !asked.contains(c)) {
        return fail(format!("withheld names category {c}, which was not asked"));
    }
    let mut ids = BTreeSet::new();
    for rec in &r.records {
        if !asked.contains(&rec.category) {
            return fail(format!(
                "record {} is of category {}, not asked",
                rec.record_id, rec.category
            ));
        }
        if withheld_cats.contains(&rec.category) {
            return fail(format!(
                "record {} is of category {}, which the response says was withheld",
                rec.record_id, rec.category
            ));
        }
        if !ids.insert(rec.record_id.clone()) {
            return fail(format!("record {} disclosed twice", rec.record_id));
        }
    }
    for w in &r.withheld.fields {
        let Some((kind, field)) = w.split_once('.') else {
            return fail(format!("withheld field {w:?} is not kind.field"));
        };
        for rec in r.records.iter().filter(|x| x.kind == kind) {
            if field == "*" {
                return fail(format!(
                    "record {} is of kind {kind}, which the response says was withheld whole",
                    rec.record_id
                ));
            }
            if rec.fields.contains_key(field) {
                return fail(format!(
                    "record {} carries {kind}.{field}, which the response says was withheld",
                    rec.record_id
                ));
            }
        }
    }
    Ok(())
}

/// A consent linked at the target, recorded by `actor`, covering `categories`, then edited by
/// `edit` before signing.
async fn consent_for(
    ctx: &Ctx,
    conn: &Conn,
    actor: &Actor,
    categories: Vec<Category>,
    edit: impl FnOnce(&mut Draft),
) -> Result<Draft, CaseError> {
    let mut d = craft::draft(ctx, actor, &ctx.subject);
    for h in &mut d.consent.holders {
        h.categories = categories.clone();
    }
    edit(&mut d);
    grant(ctx, conn, actor, &d, &[AckOutcome::Linked]).await?;
    Ok(d)
}

/// Asks `asked` under a fresh consent covering `covered` and expects a disclosure.
async fn disclosure(
    ctx: &Ctx,
    covered: Vec<Category>,
    asked: Vec<Category>,
    edit: impl FnOnce(&mut Draft),
) -> Result<(Response, Vec<u8>), CaseError> {
    let conn = ctx.conn().await?;
    let d = consent_for(ctx, &conn, &ctx.me, covered, edit).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, asked).await?;
    let r = check::outcome(ctx.target(), &env, &q, &answer, Outcome::Disclosed)?;
    conn.close();
    Ok((r, answer.envelope().to_bytes()))
}

async fn records_match_claims(ctx: &Ctx) -> CaseResult {
    let (r, _) = disclosure(ctx, ctx.categories.clone(), ctx.categories.clone(), |_| {}).await?;
    matches_claims(&r, &ctx.categories)?;
    Ok(format!(
        "{} records, {} withheld fields, {} withheld categories: consistent",
        r.records.len(),
        r.withheld.fields.len(),
        r.withheld.categories.len()
    ))
}

async fn only_asked_categories(ctx: &Ctx) -> CaseResult {
    let Some(first) = ctx.categories.first().copied() else {
        return fail("suite: no target categories");
    };
    let (r, _) = disclosure(ctx, ctx.categories.clone(), vec![first], |_| {}).await?;
    matches_claims(&r, &[first])?;
    Ok(format!("{} records, all {first}", r.records.len()))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

async fn withheld_names_only(ctx: &Ctx) -> CaseResult {
    let (r, _) = disclosure(ctx, ctx.categories.clone(), ctx.categories.clone(), |_| {}).await?;
    for w in &r.withheld.fields {
        let ok = match w.split_once('.') {
            Some((kind, field)) => is_name(kind) && (field == "*" || is_name(field)),
            None => false,
        };
        ensure(ok, || format!("withheld entry {w:?} is not kind.field"))?;
        ensure(!w.contains(ctx.subject.value.as_str()), || {
            "a withheld entry carries the person's identifier".into()
        })?;
    }
    matches_claims(&r, &ctx.categories)?;
    Ok(format!(
        "{} withheld entries, all kind.field names",
        r.withheld.fields.len()
    ))
}

async fn no_local_identifier(ctx: &Ctx) -> CaseResult {
    let (r, bytes) =
        disclosure(ctx, ctx.categories.clone(), ctx.categories.clone(), |_| {}).await?;
    let needle = ctx.subject.value.as_bytes();
    ensure(
        !needle.is_empty() && !bytes.windows(needle.len()).any(|w| w == needle),
        || {
            format!(
                "the response carries the person's {}",
                ctx.subject.scheme.title()
            )
        },
    )?;
    Ok(format!(
        "{} records; identifier absent from the {} response bytes",
        r.records.len(),
        bytes.len()
    ))
}

async fn records_within_period(ctx: &Ctx) -> CaseResult {
    let today = now().date();
    let (from, until) = (today.add_days(-30), today.add_days(30));
    let (r, _) = disclosure(ctx, ctx.categories.clone(), ctx.categories.clone(), |d| {
        d.consent.records_from = Some(from);
        d.consent.records_until = Some(until);
    })
    .await?;
    if let Some(bad) = r.records.iter().find(|x| x.about < from || x.about > until) {
        return fail(format!(
            "record {} is about {:?}, outside {from:?}..{until:?}",
            bad.record_id, bad.about
        ));
    }
    Ok(format!(
        "{} records inside the period, {} reported out of period",
        r.records.len(),
        r.withheld.records_out_of_period
    ))
}

/// The non-justice identity, or why the risk cases cannot run.
fn non_justice(ctx: &Ctx) -> Result<&Actor, CaseError> {
    if ctx.purpose != Purpose::Resettlement {
        return Err(CaseError::Unsupported(
            "the risk rule concerns purpose resettlement; the identity file sets another".into(),
        ));
    }
    ctx.non_justice().ok_or_else(|| {
        CaseError::Unsupported(
            "no identity outside the justice sector configured (add [second] with a non-justice sector)"
                .into(),
        )
    })
}

async fn risk_case(ctx: &Ctx, asked: Vec<Category>) -> Result<(Response, String), CaseError> {
    let actor = non_justice(ctx)?;
    let mut covered = ctx.categories.clone();
    if !covered.contains(&Category::Risk) {
        covered.push(Category::Risk);
    }
    let conn = ctx.conn_as(actor).await?;
    let d = consent_for(ctx, &conn, actor, covered, |_| {}).await?;
    let (env, q, answer) = ask(ctx, &conn, actor, &d, asked.clone()).await?;
    let r = check::response(ctx.target(), &env, &q, &answer)?;
    conn.close();
    match (r.outcome, r.reason) {
        (Outcome::Refused, Some(RefusalReason::PolicyWithholdsAll)) => {
            Ok((r, "refused policy_withholds_all".into()))
        }
        (Outcome::Disclosed, _) => {
            if let Some(x) = r.records.iter().find(|x| x.category == Category::Risk) {
                return fail(format!(
                    "risk record {} ({}) disclosed to {} ({} sector) for resettlement",
                    x.record_id,
                    x.kind,
                    actor.agency(),
                    actor.member.sector
                ));
            }
            matches_claims(&r, &asked)?;
            Ok((
                r,
                format!(
                    "disclosed without risk, as {} ({})",
                    actor.agency(),
                    actor.member.sector
                ),
            ))
        }
        _ => fail(format!(
            "expected a disclosure without risk or policy_withholds_all, got {}",
            answer.describe()
        )),
    }
}

async fn risk_only_not_disclosed(ctx: &Ctx) -> CaseResult {
    let (r, how) = risk_case(ctx, vec![Category::Risk]).await?;
    ensure(r.records.is_empty(), || {
        format!(
            "{} records disclosed for a risk-only query",
            r.records.len()
        )
    })?;
    Ok(how)
}

async fn risk_withheld_among_others(ctx: &Ctx) -> CaseResult {
    let mut asked = ctx.categories.clone();
    if !asked.contains(&Category::Risk) {
        asked.push(Category::Risk);
    }
    let (r, how) = risk_case(ctx, asked).await?;
    if r.outcome == Outcome::Disclosed {
        ensure(r.withheld.categories.contains(&Category::Risk), || {
            "risk was asked and covered but is not named in withheld.categories".into()
        })?;
    }
    Ok(format!("{how}; {} records", r.records.len()))
}
