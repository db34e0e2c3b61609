//! The subject-access report as the person reads it (`tg audit report --for-person`): plain
//! English, no ids or codes but one reference number. What was shared, by whom, with whom,
//! when and why; what was refused and why; what the person agreed to, when, and when they
//! withdrew; which organisations answered and which did not.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use throughgate_node::client::{merged_entries, SubjectAccessReport};
use throughgate_protocol::audit::{AuditEntry, AuditEvent};
use throughgate_protocol::category::Category;
use throughgate_protocol::consent::ConsentStatus;
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{ConsentSummary, HolderStatus, Outcome, RefusalReason};

use crate::render::status_words;
use crate::render_html::{esc, PRINT_CSS};
use crate::vocabulary::{uk_date, uk_time};

/// The report's reference number: twelve digits from the passport and the time the report was
/// produced, so the person and the office can refer to it without any id.
pub fn reference(r: &SubjectAccessReport) -> String {
    let digest = Sha256::new()
        .chain_update(r.passport_id.as_str())
        .chain_update(r.generated_at.0.to_be_bytes())
        .finalize();
    let mut n = 0u64;
    for b in digest.iter().take(8) {
        n = (n << 8) | u64::from(*b);
    }
    let d = format!("{:012}", n % 1_000_000_000_000);
    format!(
        "{}-{}-{}",
        d.get(..4).unwrap_or(""),
        d.get(4..8).unwrap_or(""),
        d.get(8..).unwrap_or("")
    )
}

/// An organisation's name, or a plain phrase when the manifest does not name it.
fn org(m: &Manifest, a: &AgencyId) -> String {
    m.member(a).map_or_else(
        || "an organisation no longer in the federation".to_owned(),
        |x| x.name.clone(),
    )
}

/// A list of names as people write it: `A`, `A and B`, `A, B and C`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Pathway names for the person, separated by semicolons (the names hold commas and "and").
fn categories(cats: &[Category]) -> String {
    cats.iter()
        .map(|c| match c {
            Category::FinanceAndId => "money and ID".to_owned(),
            other => other.title().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an organisation refused, as the person would be told it.
pub fn refusal_for_person(reason: Option<RefusalReason>) -> &'static str {
    use RefusalReason as R;
    match reason {
        Some(R::NoConsent) => "it held no agreement from you to share",
        Some(R::ConsentRevoked) => "you had withdrawn your agreement",
        Some(R::ConsentSuperseded) => "your agreement had been replaced by a newer one",
        Some(R::ConsentExpired) => "your agreement had ended",
        Some(R::ConsentNotYetValid) => "your agreement had not started yet",
        Some(R::ConsentPassportMismatch | R::SubjectMismatch) => {
            "it could not be sure the request was about you"
        }
        Some(R::RequesterNotGrantee) => "you had not agreed to share with that organisation",
        Some(R::PurposeNotCovered) => "you had not agreed to share for that reason",
        Some(R::HolderNotCovered) => "you had not agreed that this organisation may share",
        Some(R::CategoryNotCovered) => {
            "the request asked for information you had not agreed to share"
        }
        Some(R::PolicyWithholdsAll) => {
            "its own rules do not allow it to share that information with that organisation"
        }
        _ => "the request could not be checked as properly made, so nothing was shared",
    }
}

/// One thing that happened, in words.
struct Line {
    when: String,
    text: String,
}

/// The report's parts, in words.
struct Parts {
    agreed: Vec<Line>,
    shared: Vec<Line>,
    refused: Vec<Line>,
    answered: Vec<String>,
    unanswered: Vec<String>,
}

/// What the person agreed to, consent by consent; `org` names an agency.
fn consent_lines(org: impl Fn(&AgencyId) -> String, consents: &[ConsentSummary]) -> Vec<Line> {
    consents
        .iter()
        .map(|c| {
            let holders: Vec<String> = c.holders.iter().map(&org).collect();
            let grantees: Vec<String> = c.grantees.iter().map(&org).collect();
            let mut text = format!(
                "At {}, you agreed that {} may share information about you with {}, {}. Your agreement ran from {} until {}.",
                org(&c.recorded_by),
                and_list(&holders),
                and_list(&grantees),
                c.purpose.describe(),
                uk_date(c.valid_from.date()),
                uk_date(c.valid_until.date()),
            );
            match c.status {
                ConsentStatus::Active => text.push_str(" It is still in force."),
                ConsentStatus::Revoked => {
                    let _ = write!(
                        text,
                        " You withdrew it on {}; nothing has been shared under it since.",
                        uk_time(c.status_since)
                    );
                }
                ConsentStatus::Expired => {
                    let _ = write!(text, " It ended on {}.", uk_date(c.status_since.date()));
                }
                ConsentStatus::Superseded => {
                    let _ = write!(
                        text,
                        " It was replaced by a newer agreement on {}.",
                        uk_date(c.status_since.date())
                    );
                }
            }
            Line {
                when: uk_time(c.valid_from),
                text,
            }
        })
        .collect()
}

/// One log entry in words, with its part of the report (0 agreed, 1 shared, 2 refused); `None`
/// for entries the person's version leaves out. `org` names an agency.
fn entry_line(
    org: &dyn Fn(&AgencyId) -> String,
    logged_by: &AgencyId,
    e: &AuditEntry,
) -> Option<(u8, Line)> {
    let when = uk_time(e.at);
    let here = org(logged_by);
    let line = |text: String| Line {
        when: when.clone(),
        text,
    };
    Some(match &e.event {
        AuditEvent::ConsentRecorded(_) => (
            0,
            line(format!("{here} recorded your agreement to share.")),
        ),
        AuditEvent::ConsentRevoked(_) => (
            0,
            line(format!("{here} noted that you withdrew your agreement.")),
        ),
        AuditEvent::ConsentExpired(_) => (0, line(format!("Your agreement ended at {here}."))),
        AuditEvent::ConsentSuperseded(_) => (
            0,
            line(format!("At {here}, a newer agreement replaced an older one.")),
        ),
        AuditEvent::QuerySent {
            purpose, holders, ..
        } => (
            1,
            line(format!(
                "A caseworker at {here} asked {} for information about you, {}.",
                and_list(&holders.iter().map(org).collect::<Vec<_>>()),
                purpose.describe()
            )),
        ),
        AuditEvent::Decision(d) => match d.outcome {
            Outcome::Disclosed => {
                let records = format!(
                    "{} record{}",
                    d.records,
                    if d.records == 1 { "" } else { "s" }
                );
                let about = if d.categories.is_empty() {
                    String::new()
                } else {
                    format!(" (about: {})", categories(&d.categories))
                };
                let mut text = if &d.requester == logged_by {
                    format!(
                        "{here} added {records} of its own to your passport{about}, {}.",
                        d.purpose.describe()
                    )
                } else {
                    format!(
                        "{here} shared {records} with {}{about}, {}.",
                        org(&d.requester),
                        d.purpose.describe()
                    )
                };
                if !d.withheld.is_empty() {
                    text.push_str(
                        " It held back some details, because its own rules do not allow sharing them.",
                    );
                }
                (1, line(text))
            }
            Outcome::NotHeld => (
                1,
                line(format!(
                    "{} asked {here} for information about you; it holds none, so it shared nothing.",
                    org(&d.requester)
                )),
            ),
            Outcome::Refused => (
                2,
                line(format!(
                    "{here} refused to share information about you with {}, because {}.",
                    org(&d.requester),
                    refusal_for_person(d.reason)
                )),
            ),
        },
        AuditEvent::AuditAccess { agency, .. } => (
            1,
            line(format!(
                "The data protection officer of {} looked at this record of who saw your information.",
                org(agency)
            )),
        ),
        AuditEvent::Redaction { .. } => (
            1,
            line(format!(
                "{here} deleted the details of older entries, as its retention rules require."
            )),
        ),
        AuditEvent::ConsentRegistered(_)
        | AuditEvent::CredentialIssued { .. }
        | AuditEvent::Admin { .. }
        | AuditEvent::WitnessAlarm { .. } => return None,
    })
}

fn parts(r: &SubjectAccessReport, m: &Manifest, consents: &[ConsentSummary]) -> Parts {
    let mut p = Parts {
        agreed: consent_lines(|a| org(m, a), consents),
        shared: Vec::new(),
        refused: Vec::new(),
        answered: Vec::new(),
        unanswered: Vec::new(),
    };
    for (agency, e) in merged_entries(r) {
        match entry_line(&|a| org(m, a), agency, e) {
            // Without the consent register, the log's own consent events say what was agreed.
            Some((0, l)) if consents.is_empty() => p.agreed.push(l),
            Some((0, _)) | None => {}
            Some((2, l)) => p.refused.push(l),
            Some((_, l)) => {
                // The same event seen in several logs (a DPO's search of each) reads once.
                if !p
                    .shared
                    .iter()
                    .any(|x| x.when == l.when && x.text == l.text)
                {
                    p.shared.push(l);
                }
            }
        }
    }
    for s in &r.sources {
        let name = if s.name.is_empty() {
            org(m, &s.agency)
        } else {
            s.name.clone()
        };
        if s.status == HolderStatus::Answered && s.verified {
            p.answered.push(name);
        } else if s.status == HolderStatus::Answered {
            p.unanswered
                .push(format!("{name} (its answer could not be checked)"));
        } else {
            p.unanswered
                .push(format!("{name} ({})", status_words(s.status, None)));
        }
    }
    p
}

/// The person's report as text.
pub fn person_text(r: &SubjectAccessReport, m: &Manifest, consents: &[ConsentSummary]) -> String {
    let p = parts(r, m, consents);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "YOUR INFORMATION: WHO ASKED FOR IT, WHO SHARED IT, AND WHY"
    );
    let _ = writeln!(
        out,
        "Reference number {}. Produced on {} by the data protection officer of {}.",
        reference(r),
        uk_time(r.generated_at),
        org(m, &r.agency)
    );
    let _ = writeln!(out, "\nWHO ANSWERED");
    let _ = writeln!(out, "{}", limits(&p));
    let section = |out: &mut String, title: &str, lines: &[Line], none: &str| {
        let _ = writeln!(out, "\n{title}");
        if lines.is_empty() {
            let _ = writeln!(out, "  {none}");
        }
        for l in lines {
            let _ = writeln!(out, "  {}: {}", l.when, l.text);
        }
    };
    section(
        &mut out,
        "WHAT YOU AGREED TO",
        &p.agreed,
        "We found no agreement from you to share information.",
    );
    section(
        &mut out,
        "WHO ASKED AND WHAT WAS SHARED",
        &p.shared,
        "Nobody asked for or shared information about you.",
    );
    section(
        &mut out,
        "WHAT WAS REFUSED AND WHY",
        &p.refused,
        "Nothing was refused.",
    );
    let _ = writeln!(out, "\n{}", CONTACT);
    out
}

const CONTACT: &str = "If anything here looks wrong, or you want to withdraw your agreement, tell your caseworker or write to the data protection officer, quoting the reference number.";

fn limits(p: &Parts) -> String {
    let mut s = format!(
        "{} answered and {} included.",
        and_list(&p.answered),
        if p.answered.len() == 1 { "is" } else { "are" }
    );
    if p.answered.is_empty() {
        s = "No organisation answered.".to_owned();
    }
    if !p.unanswered.is_empty() {
        let _ = write!(
            s,
            " INCOMPLETE: {} did not answer, so anything they did with your information is not in this report; we will ask them again.",
            and_list(&p.unanswered)
        );
    }
    s
}

/// The person's report as a printable HTML page.
pub fn person_html(r: &SubjectAccessReport, m: &Manifest, consents: &[ConsentSummary]) -> String {
    let p = parts(r, m, consents);
    let reference = reference(r);
    let list = |lines: &[Line], none: &str| -> String {
        if lines.is_empty() {
            return format!("<p class=\"empty\">{}</p>", esc(none));
        }
        let rows: String = lines
            .iter()
            .map(|l| {
                format!(
                    "<tr><td class=\"when\">{}</td><td>{}</td></tr>\n",
                    esc(&l.when),
                    esc(&l.text)
                )
            })
            .collect();
        format!(
            "<table class=\"events\"><tr><th>When</th><th>What happened</th></tr>\n{rows}</table>"
        )
    };
    let banner = if p.unanswered.is_empty() {
        format!(
            "<p id=\"limits\" class=\"banner ok\">{}</p>",
            esc(&limits(&p))
        )
    } else {
        format!(
            "<p id=\"limits\" class=\"banner bad\">{}</p>",
            esc(&limits(&p))
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Your information: reference {reference}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
{PRINT_CSS}
body {{ font-size: 12pt; line-height: 1.4; }} td.when {{ white-space: nowrap; width: 13em; }}
.empty {{ color: #444; font-style: italic; }} section {{ break-inside: auto; }}
@media print {{ body {{ font-size: 11pt; }} }}
</style></head>
<body>
<table class="sheet">
<thead><tr><td><div class="running">Your information &middot; reference {reference} &middot; produced {at}</div></td></tr></thead>
<tbody><tr><td>
<h1 id="title">Your information: who asked for it, who shared it, and why</h1>
<p class="meta">Reference number <strong id="reference">{reference}</strong>. Produced on {at} by the data protection officer of {office}.</p>
<section id="answered"><h2>Who answered</h2>
{banner}</section>
<section id="agreed"><h2>What you agreed to</h2>
{agreed}</section>
<section id="shared"><h2>Who asked and what was shared</h2>
{shared}</section>
<section id="refused"><h2>What was refused and why</h2>
{refused}</section>
<footer>{contact}</footer>
</td></tr></tbody>
</table>
</body></html>
"#,
        at = esc(&uk_time(r.generated_at)),
        office = esc(&org(m, &r.agency)),
        agreed = list(
            &p.agreed,
            "We found no agreement from you to share information."
        ),
        shared = list(
            &p.shared,
            "Nobody asked for or shared information about you."
        ),
        refused = list(&p.refused, "Nothing was refused."),
        contact = esc(CONTACT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use throughgate_protocol::ids::{ConsentId, PassportId, PersonId};
    use throughgate_protocol::time::Date;

    #[test]
    fn what_the_person_agreed_to_says_when_and_when_they_withdrew() {
        let a = |s: &str| AgencyId::new(s).unwrap();
        let day = |d: &str| Date::parse(d).unwrap().start_timestamp();
        let c = ConsentSummary {
            consent_id: ConsentId::random(),
            passport_id: PassportId::random(),
            purpose: throughgate_protocol::category::Purpose::Resettlement,
            status: ConsentStatus::Revoked,
            recorded_by: a("hmp-leeds"),
            valid_from: day("2026-12-07"),
            valid_until: day("2027-06-05"),
            holders: vec![a("hmp-leeds"), a("nhs-wy")],
            grantees: vec![a("probation-yorks")],
            received_at: day("2026-12-07"),
            status_since: day("2026-12-20").plus_secs(14 * 3600 + 30 * 60),
            revoked_by: Some(PersonId::new("cw-1").unwrap()),
        };
        let names = |x: &AgencyId| match x.as_str() {
            "hmp-leeds" => "HMP Leeds".to_owned(),
            "nhs-wy" => "NHS West Yorkshire".to_owned(),
            _ => "Probation".to_owned(),
        };
        let lines = consent_lines(names, &[c]);
        assert_eq!(
            lines[0].text,
            "At HMP Leeds, you agreed that HMP Leeds and NHS West Yorkshire may share information about you with Probation, to plan and support your resettlement when you leave prison. Your agreement ran from 7 December 2026 until 5 June 2027. You withdrew it on 20 December 2026 at 14:30 GMT; nothing has been shared under it since."
        );
        assert_eq!(lines[0].when, "7 December 2026 at 00:00 GMT");
    }

    #[test]
    fn refusals_and_an_agencys_own_records_read_in_plain_words() {
        use throughgate_protocol::audit::DecisionEntry;
        use throughgate_protocol::messages::Withheld;
        let a = |s: &str| AgencyId::new(s).unwrap();
        let names = |x: &AgencyId| match x.as_str() {
            "nhs-wy" => "NHS West Yorkshire".to_owned(),
            _ => "Probation".to_owned(),
        };
        let decision = |outcome, reason, categories| AuditEntry {
            at: Date::parse("2026-12-07")
                .unwrap()
                .start_timestamp()
                .plus_secs(9 * 3600),
            node: a("nhs-wy"),
            event: AuditEvent::Decision(DecisionEntry {
                query_id: throughgate_protocol::ids::QueryId::random(),
                query_digest: [0; 32],
                passport_id: PassportId::random(),
                requester: a("probation-yorks"),
                caseworker: PersonId::new("cw-1").unwrap(),
                consent_id: None,
                purpose: throughgate_protocol::category::Purpose::Resettlement,
                outcome,
                reason,
                categories,
                fields: Vec::new(),
                records: 2,
                withheld: Withheld::default(),
                source: None,
            }),
        };
        let refused = decision(
            Outcome::Refused,
            Some(RefusalReason::ConsentRevoked),
            vec![],
        );
        let (part, line) = entry_line(&names, &a("nhs-wy"), &refused).unwrap();
        assert_eq!(part, 2);
        assert_eq!(line.when, "7 December 2026 at 09:00 GMT");
        assert_eq!(
            line.text,
            "NHS West Yorkshire refused to share information about you with Probation, because you had withdrawn your agreement."
        );
        let shared = decision(
            Outcome::Disclosed,
            None,
            vec![Category::Health, Category::DrugsAndAlcohol],
        );
        let (part, line) = entry_line(&names, &a("nhs-wy"), &shared).unwrap();
        assert_eq!(part, 1);
        assert_eq!(
            line.text,
            "NHS West Yorkshire shared 2 records with Probation (about: health; drugs and alcohol), to plan and support your resettlement when you leave prison."
        );
        let own = entry_line(&names, &a("probation-yorks"), &shared)
            .unwrap()
            .1;
        assert!(
            own.text.starts_with("Probation added 2 records of its own"),
            "{}",
            own.text
        );
    }

    #[test]
    fn lists_read_as_people_write_them() {
        let s = |v: &[&str]| and_list(&v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        assert_eq!(s(&[]), "");
        assert_eq!(s(&["A"]), "A");
        assert_eq!(s(&["A", "B"]), "A and B");
        assert_eq!(s(&["A", "B", "C"]), "A, B and C");
        assert_eq!(
            categories(&[Category::FinanceAndId, Category::EducationSkillsAndWork]),
            "money and ID; education, skills and work"
        );
    }
}
