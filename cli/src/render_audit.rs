//! Rendering of audit entries and subject-access reports: text, JSON and a printable HTML page.

use std::fmt::Write as _;

use throughgate_node::client::{merged_entries, SubjectAccessReport};
use throughgate_protocol::audit::{AuditEntry, AuditEvent};
use throughgate_protocol::messages::{HolderStatus, IndexedEntry};

use crate::render::{incomplete_sentence, status_words, table, Missing};
use crate::render_html::{esc, PRINT_CSS};

/// One line describing what an entry records (passport ids, agency and staff ids; no names).
pub fn describe(e: &AuditEntry) -> String {
    match &e.event {
        AuditEvent::Decision(d) => {
            let consent = d
                .consent_id
                .as_ref()
                .map_or_else(|| "no consent".to_owned(), |c| format!("consent {c}"));
            let head = format!(
                "query {} from {} ({}) for {} under {consent}",
                d.query_id, d.requester, d.caseworker, d.purpose
            );
            match d.outcome {
                throughgate_protocol::messages::Outcome::Disclosed => format!(
                    "DISCLOSED {} records ({}) to {}; fields {}{}",
                    d.records,
                    d.categories
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    head,
                    if d.fields.is_empty() {
                        "none".to_owned()
                    } else {
                        d.fields.join(", ")
                    },
                    if d.withheld.is_empty() {
                        String::new()
                    } else {
                        format!("; withheld {}", d.withheld.fields.join(", "))
                    }
                ),
                throughgate_protocol::messages::Outcome::Refused => {
                    format!(
                        "REFUSED ({}) {head}",
                        d.reason.map(|r| r.as_str()).unwrap_or("unspecified")
                    )
                }
                throughgate_protocol::messages::Outcome::NotHeld => format!("NOT HELD: {head}"),
            }
        }
        AuditEvent::QuerySent {
            query_id,
            caseworker,
            consent_id,
            purpose,
            holders,
            ..
        } => format!(
            "query {query_id} sent by {caseworker} for {purpose} under {} to {}",
            consent_id
                .as_ref()
                .map_or_else(|| "no consent".to_owned(), ToString::to_string),
            holders
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AuditEvent::ConsentRecorded(c) => format!(
            "consent {} recorded by {} for {}",
            c.consent_id,
            c.person.as_ref().map_or("?", |p| p.as_str()),
            c.purpose
        ),
        AuditEvent::ConsentRegistered(c) => format!(
            "consent {} from {} registered ({})",
            c.consent_id,
            c.recorded_by,
            c.linkage.map_or("stored", |l| l.as_str())
        ),
        AuditEvent::ConsentRevoked(c) => format!(
            "consent {} revoked{}",
            c.consent_id,
            c.person
                .as_ref()
                .map(|p| format!(" by {p}"))
                .unwrap_or_default()
        ),
        AuditEvent::ConsentExpired(c) => format!("consent {} expired", c.consent_id),
        AuditEvent::ConsentSuperseded(c) => format!("consent {} superseded", c.consent_id),
        AuditEvent::CredentialIssued {
            person_id,
            roles,
            not_after,
        } => format!(
            "credential issued to {person_id} ({}) until {not_after}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AuditEvent::Admin {
            person_id,
            action,
            detail,
        } => {
            format!(
                "{action} by {}: {detail}",
                person_id.as_ref().map_or("system", |p| p.as_str())
            )
        }
        AuditEvent::AuditAccess {
            agency,
            dpo,
            action,
            ..
        } => format!("audit access ({action}) by DPO {dpo} of {agency}"),
        AuditEvent::WitnessAlarm { peer, detail } => {
            format!("WITNESS ALARM about {peer}: {detail}")
        }
        AuditEvent::Redaction { from, to, cutoff } => format!(
            "retention redacts the content of entries {from} to {} (logged before {cutoff})",
            to.saturating_sub(1)
        ),
    }
}

/// A table of entries.
pub fn entries_table(entries: &[IndexedEntry]) -> String {
    let mut t = table(&["#", "at", "event", "passport", "what"]);
    for e in entries {
        t.add_row(vec![
            e.index.to_string(),
            e.entry.at.to_string(),
            e.entry.event.name().to_owned(),
            e.entry
                .event
                .passport()
                .map(ToString::to_string)
                .unwrap_or_default(),
            describe(&e.entry),
        ]);
    }
    t.to_string()
}

/// The agencies whose part of a report is missing: no answer, or an answer that did not verify.
pub(crate) fn report_missing(r: &SubjectAccessReport) -> Vec<Missing> {
    r.sources
        .iter()
        .filter(|s| !s.verified || s.status != HolderStatus::Answered)
        .map(|s| Missing {
            agency: s.agency.to_string(),
            name: s.name.clone(),
            status: s.status.as_str().to_owned(),
            why: if s.status == HolderStatus::Answered {
                format!(
                    "its answer failed verification: {}",
                    s.problem.clone().unwrap_or_default()
                )
            } else {
                status_words(s.status, s.problem.as_deref())
            },
        })
        .collect()
}

/// The report as text.
pub fn report_text(r: &SubjectAccessReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "SUBJECT ACCESS REPORT  {}", r.passport_id);
    let gaps = report_missing(r);
    if !gaps.is_empty() {
        let _ = writeln!(out, "{}", incomplete_sentence("report", &gaps));
    }
    let _ = writeln!(
        out,
        "Produced {} by DPO {} of {} from {}.\n",
        r.generated_at,
        r.requested_by,
        r.agency,
        if r.federation {
            "every agency in the federation"
        } else {
            "this agency's log only"
        }
    );
    let mut t = table(&["agency", "name", "status", "entries", "verified"]);
    for s in &r.sources {
        t.add_row(vec![
            s.agency.to_string(),
            s.name.clone(),
            s.status.as_str().to_owned(),
            s.entries.len().to_string(),
            if s.verified {
                format!("yes (checkpoint {})", s.checkpoint_size.unwrap_or(0))
            } else {
                format!("NO: {}", s.problem.clone().unwrap_or_default())
            },
        ]);
    }
    let _ = writeln!(out, "{t}\n");
    let _ = writeln!(
        out,
        "WHO SAW WHAT, WHEN AND WHY (all agencies, oldest first)"
    );
    for (agency, e) in merged_entries(r) {
        let _ = writeln!(out, "  {}  at {agency:<16} {}", e.at, describe(e));
    }
    out
}

/// The report as a self-contained printable HTML page. Every row names the agency whose log
/// holds it (id and name) and whether that agency's answer verified; the sources table gives
/// each agency's status, checkpoint and the time the report was produced (its as-of time).
pub fn report_html(r: &SubjectAccessReport) -> String {
    let source_of = |a: &str| r.sources.iter().find(|s| s.agency.as_str() == a);
    let mut rows = String::new();
    for (agency, e) in merged_entries(r) {
        let src = source_of(agency.as_str());
        let name = src.map_or("", |s| s.name.as_str());
        let verified = src.is_some_and(|s| s.verified);
        let _ = writeln!(
            rows,
            "<tr class=\"{}\"><td>{}</td><td><span class=\"agency-id\">{}</span> ({})</td><td>{}</td><td>{}</td><td class=\"verify {}\">{}</td></tr>",
            esc(e.event.name()),
            esc(&e.at.to_string()),
            esc(agency.as_str()),
            esc(name),
            esc(e.event.name()),
            esc(&describe(e)),
            if verified { "ok" } else { "bad" },
            if verified { "verified" } else { "NOT verified" }
        );
    }
    let mut sources = String::new();
    for s in &r.sources {
        let _ = writeln!(
            sources,
            "<tr><td class=\"agency-id\">{}</td><td>{}</td><td>{}</td><td>{}{}</td><td><time>{}</time></td><td class=\"verify {}\">{}</td></tr>",
            esc(s.agency.as_str()),
            esc(&s.name),
            esc(s.status.as_str()),
            s.entries.len(),
            if s.truncated { " (more held)" } else { "" },
            esc(&r.generated_at.to_string()),
            if s.verified { "ok" } else { "bad" },
            if s.verified {
                format!(
                    "verified (signed checkpoint of size {})",
                    s.checkpoint_size.unwrap_or(0)
                )
            } else {
                format!(
                    "NOT verified: {}",
                    esc(&s.problem.clone().unwrap_or_default())
                )
            }
        );
    }
    let gaps = report_missing(r);
    let banner = if gaps.is_empty() {
        "<p id=\"verification\" class=\"banner ok\">Complete: every agency asked answered, and every answer verified against its signed log.</p>".to_owned()
    } else {
        let items: String = gaps
            .iter()
            .map(|x| {
                format!(
                    "<li data-agency=\"{}\"><strong>{}</strong> ({}) {}</li>",
                    esc(&x.agency),
                    esc(&x.name),
                    esc(&x.agency),
                    esc(&x.why)
                )
            })
            .collect();
        format!(
            "<div id=\"incomplete\" class=\"banner bad\" role=\"alert\"><p>{}</p><ul>{items}</ul><p>Entries from those agencies are missing or unproven; run the report again when they are reachable.</p></div>",
            esc(&incomplete_sentence("report", &gaps))
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Subject access report {pid}</title>
<style>
{PRINT_CSS}
tr.disclosed td {{ background: #fff6e0; }} tr.refused td {{ background: #f3f3f3; }}
#entries td:first-child {{ white-space: nowrap; }} h2 {{ break-after: avoid; }}
</style></head>
<body>
<table class="sheet">
<thead><tr><td><div class="running">Subject access report (evidence version) &middot; passport <strong>{pid}</strong> &middot; produced {at}</div></td></tr></thead>
<tbody><tr><td>
<h1 id="title">Subject access report</h1>
<p class="meta">Passport <strong id="passport">{pid}</strong>. Produced {at} by data-protection officer {dpo} of {agency}, from {scope}. The version to hand to the person: <code>tg audit report --for-person</code>.</p>
{banner}
<h2>Sources</h2>
<table id="sources"><tr><th>Agency</th><th>Name</th><th>Status</th><th>Entries</th><th>As of</th><th>Integrity</th></tr>
{sources}</table>
<h2>Who saw what, when and why</h2>
<table id="entries"><thead><tr><th>When</th><th>Where logged</th><th>Event</th><th>Details</th><th>Integrity</th></tr></thead>
{rows}</table>
<p class="meta">Every entry marked verified was checked against its agency's signed, tamper-evident log (inclusion proof to a signed checkpoint). Entries logged in the same second are shown cause before effect: a consent's recording before its registration, a query before the decisions it asked for.</p>
</td></tr></tbody>
</table>
</body></html>
"#,
        pid = esc(r.passport_id.as_str()),
        at = esc(&r.generated_at.to_string()),
        dpo = esc(r.requested_by.as_str()),
        agency = esc(r.agency.as_str()),
        scope = if r.federation {
            "every agency in the federation"
        } else {
            "this agency's log only"
        },
    )
}
