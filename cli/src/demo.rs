//! `tg demo`: the six-agency demo federation on loopback, end to end. Real nodes (each its own
//! QUIC endpoint, sled store in a temporary folder and key), synthetic records, one person's
//! consent recorded at the prison, their passport assembled by a probation caseworker, and a
//! refused request for a person who gave no consent.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::{Collection, CollectionMethod};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId};
use throughgate_protocol::messages::{ClientOp, ClientResponse, DeliveryState};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};

use crate::cmd_consent::{statement, PRIVACY_NOTICE};
use crate::cmd_passport::{assemble, passport_exit};
use crate::render::{self, bold};
use crate::Global;
use throughgate_node::client::ConsentPlan;

/// Arguments of `tg demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Synthetic people whose records the agencies hold.
    #[arg(long, default_value_t = 300)]
    pub people: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Save the passport bundle and the manifest in this folder (as `passport.tgp` and
    /// `manifest.tgm`) to try `tg passport verify` afterwards, with the printable passport
    /// (`passport.html`), the DPO's subject-access report (`report.html`) and the version of
    /// it to hand to the person (`report-person.html`, and as text `report-person.txt`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Stop this agency's node once the consent has reached it, before the passport is
    /// assembled: to see what an incomplete passport and report look like.
    #[arg(long, value_name = "AGENCY")]
    pub unreachable: Option<AgencyId>,
}

/// Prints the demo's narration: on stdout for people, on stderr with `--json` (so stdout carries
/// exactly one JSON document).
macro_rules! say {
    ($g:expr, $($arg:tt)*) => {
        if $g.json {
            eprintln!($($arg)*);
        } else {
            println!($($arg)*);
        }
    };
}

fn step(g: &Global, n: u32, text: &str) {
    say!(g, "\n{}", bold(&format!("[{n}] {text}")));
}

/// Runs the demo.
pub async fn run(g: &Global, a: DemoArgs) -> Result<u8> {
    let started = Instant::now();
    step(g, 1, "Starting six agency nodes on loopback");
    if let Some(a) = &a.unreachable {
        if !throughgate_testkit::agencies::demo_agencies()
            .iter()
            .any(|d| d.id == a.as_str() && d.id != "probation-yorks")
        {
            bail!("--unreachable {a}: name one of the demo agencies other than probation-yorks (which assembles the passport): hmp-leeds, nhs-wy, leeds-college, leeds-cc or dwp");
        }
    }
    let mut fed = LocalFederation::start(FedOptions {
        people: a.people,
        seed: a.seed,
        ..FedOptions::default()
    })
    .await
    .context("starting the demo federation")?;
    let mut nodes = Vec::new();
    for n in &fed.nodes {
        nodes.push(serde_json::json!({
            "agency": n.id.as_str(),
            "name": n.agency.name,
            "address": n.addr.to_string(),
            "key": n.key.public().to_hex(),
        }));
        say!(
            g,
            "  {:<16} {:<36} {}  key {}",
            n.id.as_str(),
            n.agency.name,
            n.addr,
            n.key.public().fingerprint()
        );
    }
    say!(
        g,
        "  {} synthetic people; manifest v{} signed by governance key {}",
        fed.population.people.len(),
        fed.manifest_body.version,
        fed.governance.public().fingerprint()
    );

    let people = fed.population.people.len();
    let manifest_version = fed.manifest_body.version;
    let result = scenario(g, &mut fed, a.out.as_deref(), a.unreachable.as_ref()).await;
    fed.shutdown().await;
    let mut summary = result?;
    if g.json {
        if let Some(o) = summary.as_object_mut() {
            o.insert("nodes".into(), serde_json::Value::Array(nodes));
            o.insert("people".into(), people.into());
            o.insert("manifest_version".into(), manifest_version.into());
        }
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    say!(
        g,
        "\nDemo finished in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(crate::exit::OK)
}

/// Runs steps 2 to 4; returns what `--json` prints (the consent, the passport, the refusal).
async fn scenario(
    g: &Global,
    fed: &mut LocalFederation,
    out: Option<&std::path::Path>,
    unreachable: Option<&AgencyId>,
) -> Result<serde_json::Value> {
    // The person: someone every agency knows.
    let person = fed
        .population
        .people
        .iter()
        .find(|p| fed.nodes.iter().all(|n| p.is_known_to(n.agency)))
        .context("no synthetic person is known to all six agencies; try another --seed")?;
    let person = person.clone();
    let person = &person;
    let m = &fed.manifest_body.clone();

    step(g, 2, "A prison caseworker records the person's consent");
    let prison = fed.client("hmp-leeds", StaffRole::Caseworker).await?;
    let now = prison.clock().now();
    let holders = fed
        .nodes
        .iter()
        .map(|n| {
            let cats: Vec<Category> = n.agency.categories.to_vec();
            (n.id.clone(), person.identifier(n.agency.scheme), cats)
        })
        .collect();
    let plan = ConsentPlan {
        passport_id: PassportId::random(),
        purpose: Purpose::Resettlement,
        holders,
        grantees: vec![
            AgencyId::new("probation-yorks")?,
            AgencyId::new("leeds-cc")?,
        ],
        valid_from: now,
        valid_until: now.plus_secs(180 * 86_400),
        records_from: None,
        records_until: None,
        legal_basis: "UK GDPR Art. 6(1)(e) and 9(2)(h); DPA 2018 Sch. 1".into(),
        jurisdiction: "England and Wales".into(),
        collection: Collection {
            method: CollectionMethod::SignedPaperForm,
            reference: "HMPL-RP-0001".into(),
        },
        privacy_notice: PRIVACY_NOTICE.into(),
        supersedes: None,
    };
    if !g.json {
        let recorder = m.member(&prison.credential().agency).map_or_else(
            || prison.credential().agency.to_string(),
            |x| x.name.clone(),
        );
        for line in statement(&plan, m, &recorder).lines() {
            println!("  | {line}");
        }
    }
    let signed = prison.sign_consent(&plan);
    let consent_id = signed.consent_id.clone();
    prison.record_consent(signed).await?;
    say!(
        g,
        "  consent {consent_id} recorded for passport {}",
        plan.passport_id
    );
    let delivered = wait_delivered(g, &prison, &consent_id).await?;
    prison.close().await;
    if let Some(a) = unreachable {
        fed.stop(a.as_str()).await;
        say!(g, "  {a}'s node is stopped: it cannot answer from now on");
    }

    // Every node witnesses every other's log (each does so every few seconds anyway); one
    // round now lets the passport carry checkpoints cosigned by the manifest's quorum.
    fed.witness_round().await;
    step(g, 3, "A probation caseworker assembles the passport");
    let probation = fed.client("probation-yorks", StaffRole::Caseworker).await?;
    let (menv, _) = probation.manifest().await?;
    let consent = probation.consent_for(&plan.passport_id, None).await?;
    let t0 = Instant::now();
    let (bundle, v) = assemble(
        &probation,
        &menv,
        m,
        &plan.passport_id,
        consent.as_ref(),
        None,
        Purpose::Resettlement,
        &[],
        false,
    )
    .await?;
    let took = t0.elapsed();
    let passport_json = render::passport_json(&v, m);
    if !g.json {
        print!("{}", render::passport_text(&v, m));
    }
    say!(g, "  assembled and verified in {} ms", took.as_millis());
    say!(g, "  {}", render::witness_summary(&v));
    if let Some(dir) = out {
        crate::outfile::create_dir(dir)?;
        crate::outfile::write(&dir.join("passport.tgp"), bundle.to_bytes())?;
        crate::outfile::write(&dir.join("manifest.tgm"), fed.manifest.to_bytes())?;
        write_html(g, fed, dir, &v, &plan.passport_id).await?;
        say!(
            g,
            "  saved {} and {}; check with `tg passport verify {} --manifest {}`",
            dir.join("passport.tgp").display(),
            dir.join("manifest.tgm").display(),
            dir.join("passport.tgp").display(),
            dir.join("manifest.tgm").display()
        );
    }
    let code = passport_exit(&v);
    let stopped = |r: &throughgate_protocol::bundle::VerifiedResult| {
        unreachable.is_some_and(|a| &r.result.agency == a)
    };
    if (code != crate::exit::OK && unreachable.is_none())
        || v.results.iter().filter(|r| !stopped(r)).any(|r| {
            r.response
                .as_ref()
                .is_none_or(|x| x.outcome != throughgate_protocol::messages::Outcome::Disclosed)
        })
    {
        bail!("the demo passport did not assemble fully from all six agencies; run the demo again, and if it happens again report it as a bug with the output above");
    }

    step(
        g,
        4,
        "The same caseworker asks about a person who gave no consent",
    );
    let other = PassportId::random();
    let (_, v) = assemble(
        &probation,
        &menv,
        m,
        &other,
        None,
        None,
        Purpose::Resettlement,
        &[],
        false,
    )
    .await?;
    let mut t = render::table(&["agency", "outcome", "reason"]);
    for r in &v.results {
        let resp = r.response.as_ref();
        t.add_row(vec![
            r.result.agency.to_string(),
            resp.map_or_else(
                || r.result.status.as_str().to_owned(),
                |x| x.outcome.as_str().to_owned(),
            ),
            resp.and_then(|x| x.reason)
                .map(|x| x.as_str().to_owned())
                .unwrap_or_default(),
        ]);
    }
    if !g.json {
        println!("{t}");
        println!("  every agency refused, signed its refusal, and disclosed nothing");
    }
    let refused_json = render::passport_json(&v, m);
    let all_refused = v.results.iter().filter(|r| !stopped(r)).all(|r| {
        r.response.as_ref().is_some_and(|x| {
            x.outcome == throughgate_protocol::messages::Outcome::Refused && x.records.is_empty()
        })
    });
    probation.close().await;
    if !all_refused {
        bail!("a request without consent was not refused by every agency; this is a bug: report it with the output above");
    }
    Ok(serde_json::json!({
        "consent": {
            "consent_id": consent_id.to_string(),
            "passport_id": plan.passport_id.to_string(),
            "acknowledged_by": delivered,
        },
        "passport": passport_json,
        "assembled_ms": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        "without_consent": refused_json,
    }))
}

/// Saves the printable passport (`passport.html`) and the probation DPO's federated
/// subject-access report (`report.html`) beside the bundle.
async fn write_html(
    g: &Global,
    fed: &LocalFederation,
    dir: &std::path::Path,
    v: &throughgate_protocol::bundle::VerifiedBundle,
    passport: &PassportId,
) -> Result<()> {
    let m = &fed.manifest_body;
    let source = format!(
        "manifest version {} (saved as {})",
        m.version,
        dir.join("manifest.tgm").display()
    );
    let page = crate::render_html::passport_html(v, m, &source);
    crate::outfile::write(&dir.join("passport.html"), page)?;
    let dpo = fed.client("probation-yorks", StaffRole::Dpo).await?;
    let report = dpo.subject_access_report(m, passport, true).await;
    let consents = dpo.consents_of(passport).await;
    dpo.close().await;
    let (report, consents) = (report?, consents?);
    crate::outfile::write(
        &dir.join("report.html"),
        crate::render_audit::report_html(&report),
    )?;
    crate::outfile::write(
        &dir.join("report-person.html"),
        crate::render_person::person_html(&report, m, &consents),
    )?;
    crate::outfile::write(
        &dir.join("report-person.txt"),
        crate::render_person::person_text(&report, m, &consents),
    )?;
    say!(
        g,
        "  saved {}, {} and {} (printable HTML: the passport, the DPO's report, the person's report)",
        dir.join("passport.html").display(),
        dir.join("report.html").display(),
        dir.join("report-person.html").display()
    );
    Ok(())
}

/// Waits (on the consent's delivery status, not a fixed sleep) until every recipient has
/// acknowledged, or 10 seconds pass; returns how many recipients acknowledged.
async fn wait_delivered(
    g: &Global,
    client: &throughgate_node::client::HomeClient,
    id: &ConsentId,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let ClientResponse::ConsentDetail { deliveries, .. } = client
            .call(ClientOp::ShowConsent {
                consent_id: id.clone(),
            })
            .await?
        {
            let pending = deliveries
                .iter()
                .filter(|d| d.state == DeliveryState::Pending)
                .count();
            if pending == 0 {
                let linked = deliveries.len();
                say!(g, "  delivered to and acknowledged by {linked} agencies");
                return Ok(linked);
            }
            if Instant::now() > deadline {
                bail!("{pending} consent deliveries still pending after 10 s; the machine may be overloaded: run the demo again");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
