//! `tg consent`: record consent (reading the person exactly what they agree to), revoke it,
//! list the consent register, show one consent with its delivery status.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use throughgate_node::client::{ConsentPlan, HomeClient, Profile};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::{Collection, CollectionMethod, ConsentStatus};
use throughgate_protocol::identifiers::SubjectIdentifier;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{Ack, AckSubject, ClientOp, ClientResponse, ConsentFilter};
use throughgate_protocol::time::Date;

use crate::render::{bold, table};
use crate::Global;

/// The standard privacy notice shown to the person (its SHA-256 goes into the consent).
pub const PRIVACY_NOTICE: &str = include_str!("../../docs/privacy-notice.txt");

/// Consent commands.
#[derive(Debug, Subcommand)]
pub enum ConsentCmd {
    /// Record a person's consent and deliver it to every agency it names.
    Grant(GrantArgs),
    /// Withdraw a consent; every agency it names stops answering under it.
    Revoke(RevokeArgs),
    /// List the consents your node knows (the consent register).
    List(ListArgs),
    /// Show one consent and, at the recording agency, its delivery to each agency.
    Show(ShowArgs),
    /// Alias of show: per-agency delivery status of a consent.
    Status(ShowArgs),
}

/// Arguments of `tg consent grant`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The person's passport id; omit to enrol them and mint a new one.
    #[arg(long)]
    pub passport: Option<PassportId>,
    /// The person's identifier at each holder: AGENCY=VALUE (repeatable), e.g.
    /// nhs-wy=9434765919. Only that holder ever receives it.
    #[arg(long = "id", value_name = "AGENCY=VALUE", required = true)]
    pub ids: Vec<String>,
    /// Limit what a holder shares: AGENCY=CATEGORY[,CATEGORY...] (repeatable). Default: every
    /// category the holder holds, except `risk` (which must be asked for explicitly).
    #[arg(long = "share", value_name = "AGENCY=CATEGORIES")]
    pub shares: Vec<String>,
    /// Agencies allowed to receive the records (repeatable).
    #[arg(long = "grantee", required = true)]
    pub grantees: Vec<AgencyId>,
    /// What the records may be used for: resettlement, continuity_of_care, public_protection or
    /// safeguarding.
    #[arg(long, default_value = "resettlement")]
    pub purpose: Purpose,
    /// Days the consent stays valid (at most what the home node allows; 400 by default).
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=i64::from(throughgate_protocol::consent::MAX_VALIDITY_DAYS)))]
    pub valid_days: u32,
    /// Earliest date records may be about (YYYY-MM-DD).
    #[arg(long)]
    pub records_from: Option<Date>,
    /// Latest date records may be about (YYYY-MM-DD).
    #[arg(long)]
    pub records_until: Option<Date>,
    /// How consent was collected: signed_paper_form, in_cell_device or verbal_witnessed.
    #[arg(long, default_value = "signed_paper_form")]
    pub method: CollectionMethod,
    /// Reference to the evidence (form number, device transaction, witness record).
    #[arg(long)]
    pub reference: String,
    /// The lawful basis.
    #[arg(
        long,
        default_value = "UK GDPR Art. 6(1)(e) and 9(2)(h); DPA 2018 Sch. 1"
    )]
    pub legal_basis: String,
    /// The law the consent is given under, as recorded in it.
    #[arg(long, default_value = "England and Wales")]
    pub jurisdiction: String,
    /// The privacy notice shown to the person (default: the standard notice).
    #[arg(long)]
    pub privacy_notice: Option<PathBuf>,
    /// A consent this one replaces.
    #[arg(long)]
    pub supersedes: Option<ConsentId>,
    /// Skip the confirmation (after reading the statement to the person).
    #[arg(long)]
    pub yes: bool,
}

/// Arguments of `tg consent revoke`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["consent", "passport"]))]
pub struct RevokeArgs {
    /// The consent to withdraw (its id, as `tg consent list` shows it).
    pub consent: Option<ConsentId>,
    /// Withdraw every active consent for this passport recorded at your agency, at once.
    #[arg(long)]
    pub passport: Option<PassportId>,
    /// Why.
    #[arg(long, default_value = "withdrawn by the person")]
    pub reason: String,
}

/// Arguments of `tg consent list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this person's.
    #[arg(long)]
    pub passport: Option<PassportId>,
    /// Only this status: active, revoked, superseded or expired.
    #[arg(long)]
    pub status: Option<ConsentStatus>,
    /// Only consents naming this holder.
    #[arg(long)]
    pub holder: Option<AgencyId>,
    /// Only consents naming this grantee.
    #[arg(long)]
    pub grantee: Option<AgencyId>,
    /// Only consents for this purpose.
    #[arg(long)]
    pub purpose: Option<Purpose>,
    /// Only consents that end within this many days.
    #[arg(long)]
    pub expiring_within_days: Option<u64>,
}

/// Arguments of `tg consent show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The consent's id, as `tg consent list` shows it.
    pub consent: ConsentId,
}

/// The statement to read to the person.
pub fn statement(plan: &ConsentPlan, m: &Manifest, recorder: &str) -> String {
    let name = |a: &AgencyId| {
        m.member(a)
            .map(|x| x.name.clone())
            .unwrap_or_else(|| a.to_string())
    };
    let mut s = String::new();
    s.push_str(&format!(
        "{}\n\n",
        bold("Please read this to the person before they agree.")
    ));
    s.push_str(&format!("You agree that, {}:\n", plan.purpose.describe()));
    for (a, _, cats) in &plan.holders {
        let list: Vec<String> = cats.iter().map(|c| c.title().to_lowercase()).collect();
        s.push_str(&format!(
            "  - {} may share your {} records\n",
            name(a),
            list.join(", ")
        ));
    }
    let to: Vec<String> = plan.grantees.iter().map(name).collect();
    s.push_str(&format!("with {} only.\n", to.join(" and ")));
    s.push_str(&format!(
        "This agreement lasts from {} until {}.\n",
        plan.valid_from.date(),
        plan.valid_until.date()
    ));
    match (plan.records_from, plan.records_until) {
        (None, None) => {}
        (f, u) => s.push_str(&format!(
            "Only records about {} to {} are covered.\n",
            f.map_or("any earlier date".into(), |d| d.to_string()),
            u.map_or("today".into(), |d| d.to_string())
        )),
    }
    s.push_str(&format!(
        "You can withdraw it at any time by telling a caseworker at {}; from then on nothing more is shared under it, or under any earlier agreement it replaced.\n",
        recorder
    ));
    s.push_str("Every time your information is shared it is logged, and you can ask who saw it.\n");
    s.push_str(&format!(
        "Recorded as: {} ({}); lawful basis: {}; {}.\n",
        plan.collection.method, plan.collection.reference, plan.legal_basis, plan.jurisdiction
    ));
    s
}

/// Runs a consent command.
pub async fn run(g: &Global, cmd: ConsentCmd) -> Result<u8> {
    let profile = Profile::load(&g.profile_path())?;
    let client = g.client_for(&profile).await?;
    let code = match cmd {
        ConsentCmd::Grant(a) => grant(g, &client, a).await?,
        ConsentCmd::Revoke(a) => revoke(g, &client, a).await?,
        ConsentCmd::List(a) => list(g, &client, a).await?,
        ConsentCmd::Show(a) | ConsentCmd::Status(a) => show(g, &client, &a.consent).await?,
    };
    client.close().await;
    Ok(code)
}

fn parse_pair(s: &str) -> Result<(AgencyId, &str)> {
    crate::cmd_manifest::agency_pair(s, "nhs-wy=9434765919", "tg manifest show")
}

async fn grant(g: &Global, client: &HomeClient, a: GrantArgs) -> Result<u8> {
    let (_, m) = client.manifest().await?;
    let max_days = client.status().await?.max_consent_days;
    if a.valid_days > max_days {
        bail!(
            "--valid-days {}: your agency records consents for at most {max_days} days; give --valid-days {max_days} or less, and record a new consent with the person when it ends",
            a.valid_days
        );
    }
    let now = client.clock().now();
    let mut holders = Vec::new();
    for raw in &a.ids {
        let (agency, value) = parse_pair(raw)?;
        let member = m.member(&agency).ok_or_else(|| {
            anyhow!(
                "{agency} is not a member of the federation; `tg manifest show` lists the members"
            )
        })?;
        let id = SubjectIdentifier::parse(member.id_scheme, value)
            .map_err(|e| anyhow!("--id {agency}=...: {e}"))?;
        let cats = match a
            .shares
            .iter()
            .find(|s| s.starts_with(&format!("{agency}=")))
        {
            Some(s) => {
                let (_, list) = parse_pair(s)?;
                list.split(',')
                    .map(|c| c.trim().parse::<Category>().map_err(|e| anyhow!("{e}")))
                    .collect::<Result<Vec<_>>>()?
            }
            None => member
                .categories
                .iter()
                .copied()
                .filter(|c| *c != Category::Risk)
                .collect(),
        };
        if cats.is_empty() {
            bail!("{agency}: no categories to share (its only category is risk; ask for it with --share {agency}=risk)");
        }
        holders.push((agency, id, cats));
    }
    let notice = match &a.privacy_notice {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => PRIVACY_NOTICE.to_owned(),
    };
    if a.reference.trim().is_empty() {
        bail!(
            "--reference must name the evidence (form number, device transaction, witness record)"
        );
    }
    let plan = ConsentPlan {
        passport_id: a.passport.clone().unwrap_or_else(PassportId::random),
        purpose: a.purpose,
        holders,
        grantees: a.grantees.clone(),
        valid_from: now,
        valid_until: now.plus_secs(u64::from(a.valid_days) * 86_400),
        records_from: a.records_from,
        records_until: a.records_until,
        legal_basis: a.legal_basis.clone(),
        jurisdiction: a.jurisdiction.clone(),
        collection: Collection {
            method: a.method,
            reference: a.reference.clone(),
        },
        privacy_notice: notice,
        supersedes: a.supersedes.clone(),
    };
    if !a.yes {
        let recorder = m.member(&client.credential().agency).map_or_else(
            || client.credential().agency.to_string(),
            |x| x.name.clone(),
        );
        eprintln!("{}", statement(&plan, &m, &recorder));
        if !std::io::stdin().is_terminal() {
            bail!(
                "not confirmed: read the statement above to the person, then run again with --yes"
            );
        }
        eprint!("Does the person agree? [y/N] ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            eprintln!("Not recorded.");
            return Ok(crate::exit::FAILURE);
        }
    }
    let signed = client.sign_consent(&plan);
    let id = signed.consent_id.clone();
    let deliveries = client.record_consent(signed).await?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({"consent_id": id, "passport_id": plan.passport_id, "deliveries": deliveries})
        );
    } else {
        println!("Consent {id} recorded for passport {}.", plan.passport_id);
        println!(
            "Delivery to {} agencies is under way; check with `tg consent status {id}`.",
            deliveries.len()
        );
    }
    Ok(crate::exit::OK)
}

async fn revoke(g: &Global, client: &HomeClient, a: RevokeArgs) -> Result<u8> {
    let Some(passport) = &a.passport else {
        let Some(consent) = &a.consent else {
            bail!("name the consent to withdraw, or --passport PP to withdraw all of a person's");
        };
        let withdrawn = client.revoke_with_replaced(consent, &a.reason).await?;
        if g.json {
            let replaced: Vec<_> = withdrawn
                .iter()
                .skip(1)
                .map(|(id, d)| serde_json::json!({"consent_id": id, "deliveries": d}))
                .collect();
            let deliveries = withdrawn
                .first()
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({"consent_id": consent, "status": "revoked", "deliveries": deliveries, "replaced_also_revoked": replaced})
            );
        } else {
            for (id, deliveries) in &withdrawn {
                print_revoked(id, deliveries);
            }
        }
        return Ok(crate::exit::OK);
    };
    let done = client.revoke_all(passport, &a.reason).await?;
    if g.json {
        let revoked: Vec<_> = done
            .revoked
            .iter()
            .map(|(id, d)| serde_json::json!({"consent_id": id, "deliveries": d}))
            .collect();
        let elsewhere: Vec<_> = done
            .elsewhere
            .iter()
            .map(|c| serde_json::json!({"consent_id": c.consent_id, "recorded_by": c.recorded_by}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"passport_id": passport, "revoked": revoked, "recorded_elsewhere": elsewhere})
        );
    } else {
        if done.revoked.is_empty() {
            println!("No active consent for passport {passport} was recorded at your agency.");
        }
        for (id, deliveries) in &done.revoked {
            print_revoked(id, deliveries);
        }
        for c in &done.elsewhere {
            println!(
                "Consent {} was recorded at {}: only a caseworker there can withdraw it; tell the person, or contact that agency.",
                c.consent_id, c.recorded_by
            );
        }
    }
    Ok(if done.elsewhere.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::FAILURE
    })
}

fn print_revoked(
    consent: &ConsentId,
    deliveries: &[throughgate_protocol::messages::ConsentDelivery],
) {
    let n = deliveries
        .iter()
        .filter(|d| d.subject == AckSubject::Revoke)
        .count();
    println!(
        "Consent {consent} withdrawn here; telling {n} agencies: nothing more is shared under it."
    );
    println!("Check with `tg consent status {consent}`.");
}

async fn list(g: &Global, client: &HomeClient, a: ListArgs) -> Result<u8> {
    let list = match client
        .call(ClientOp::ListConsents(ConsentFilter {
            passport_id: a.passport,
            status: a.status,
            holder: a.holder,
            grantee: a.grantee,
            purpose: a.purpose,
            expires_before: a
                .expiring_within_days
                .map(|d| client.clock().now().plus_secs(d.saturating_mul(86_400))),
        }))
        .await?
    {
        ClientResponse::Consents(l) => l,
        _ => bail!("unexpected answer from the home node; tg and the node may be different versions: compare `tg --version` with `tg node status`"),
    };
    if g.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(crate::exit::OK);
    }
    let mut t = table(&[
        "consent",
        "passport",
        "purpose",
        "status",
        "recorded by",
        "valid until",
        "holders",
        "grantees",
    ]);
    for c in &list {
        t.add_row(vec![
            c.consent_id.to_string(),
            c.passport_id.to_string(),
            c.purpose.to_string(),
            c.status.to_string(),
            c.recorded_by.to_string(),
            c.valid_until.date().to_string(),
            c.holders.len().to_string(),
            c.grantees
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    println!("{t}\n{} consents", list.len());
    Ok(crate::exit::OK)
}

async fn show(g: &Global, client: &HomeClient, id: &ConsentId) -> Result<u8> {
    let (c, status, deliveries) = client.show_consent(id).await?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "consent_id": c.consent_id, "passport_id": c.passport_id, "status": status,
                "purpose": c.purpose, "purpose_text": c.purpose_text,
                "holders": c.holders.iter().map(|h| serde_json::json!({"agency": h.agency, "categories": h.categories})).collect::<Vec<_>>(),
                "grantees": c.grantees, "valid_from": c.valid_from.to_rfc3339(), "valid_until": c.valid_until.to_rfc3339(),
                "records_from": c.records_from, "records_until": c.records_until,
                "legal_basis": c.legal_basis, "jurisdiction": c.jurisdiction,
                "collection": {"method": c.collection.method, "reference": c.collection.reference},
                "privacy_notice_sha256": hex::encode(c.privacy_notice_sha256),
                "recorded_by": c.recorded_by, "recorded_by_person": c.recorded_by_person, "recorded_at": c.recorded_at.to_rfc3339(),
                "supersedes": c.supersedes,
                "deliveries": deliveries,
            })
        );
        return Ok(crate::exit::OK);
    }
    println!("{}", bold(&format!("Consent {}  ({status})", c.consent_id)));
    println!(
        "Passport {}; purpose {} ({})",
        c.passport_id, c.purpose, c.purpose_text
    );
    println!(
        "Valid {} to {}; recorded by {} at {} on {}",
        c.valid_from, c.valid_until, c.recorded_by_person, c.recorded_by, c.recorded_at
    );
    println!(
        "Collected by {} ({}); lawful basis {}; {}",
        c.collection.method, c.collection.reference, c.legal_basis, c.jurisdiction
    );
    for h in &c.holders {
        println!(
            "  holder {}: {}",
            h.agency,
            h.categories
                .iter()
                .map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "  grantees: {}",
        c.grantees
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(s) = &c.supersedes {
        println!("  supersedes {s}");
    }
    if !deliveries.is_empty() {
        let mut t = table(&["agency", "message", "state", "since", "attempts", "answer"]);
        for d in &deliveries {
            let answer = d
                .ack
                .as_ref()
                .and_then(|e| e.open::<Ack>().ok())
                .map(|a| {
                    format!(
                        "{}{}",
                        a.outcome.as_str(),
                        a.reason.map(|r| format!(": {r}")).unwrap_or_default()
                    )
                })
                .or_else(|| d.last_error.clone())
                .unwrap_or_default();
            t.add_row(vec![
                d.agency.to_string(),
                format!("{:?}", d.subject).to_lowercase(),
                d.state.as_str().to_owned(),
                d.since.to_string(),
                d.attempts.to_string(),
                answer,
            ]);
        }
        println!("{t}");
    }
    Ok(crate::exit::OK)
}
