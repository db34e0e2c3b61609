//! Rendering for people: the passport, tables, and colour only on a terminal without NO_COLOR.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::IsTerminal;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::json;
use throughgate_protocol::bundle::{VerifiedBundle, VerifiedResult, WitnessVerdict};
use throughgate_protocol::category::Category;
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{HolderStatus, Outcome, Response, Withheld};
use throughgate_protocol::record::DisclosedRecord;

use crate::vocabulary::{
    records_age_words, summarise, uk_date, uk_date_str, uk_time, vocabulary, PathwaySummary,
    Sourced,
};

/// Whether to use ANSI styling on stdout.
pub fn styled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Bold text when styling.
pub fn bold(s: &str) -> String {
    if styled() {
        format!("\x1b[1m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// A table in the house style.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !styled() {
        t.force_no_tty();
    }
    t.set_header(headers.to_vec());
    if let Some(w) = sane_width(t.width()) {
        t.set_width(w);
    }
    t
}

/// The narrowest terminal a table is fitted to; narrower reports (some terminals and
/// multiplexers report 0 columns) get [`FALLBACK_WIDTH`].
const MIN_WIDTH: u16 = 40;
/// The width used when the terminal reports an unusable one.
const FALLBACK_WIDTH: u16 = 100;

/// The width to force on a table, given the width the terminal reports: none when it is usable
/// or unknown (output to a pipe is not wrapped).
fn sane_width(reported: Option<u16>) -> Option<u16> {
    reported.filter(|w| *w < MIN_WIDTH).map(|_| FALLBACK_WIDTH)
}

/// Words kept as abbreviations when a snake_case name is shown to people.
const ABBREVIATIONS: &[&str] = &[
    "id", "gp", "nhs", "ni", "dwp", "uc", "pip", "esa", "noms", "crn", "cv", "esol", "mot",
];

/// `id_document_application` -> `ID document application`, `gp_registration` ->
/// `GP registration`: underscores become spaces, the first letter is capitalised, and known
/// abbreviations are written in capitals.
pub fn humanize(name: &str) -> String {
    let words: Vec<String> = name
        .split('_')
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| {
            if ABBREVIATIONS.contains(&w) {
                w.to_uppercase()
            } else if i == 0 {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            } else {
                w.to_owned()
            }
        })
        .collect();
    words.join(" ")
}

// What the text and HTML passports both show, extracted once; each renderer keeps its own
// wording and markup.

/// The manifest name of agency `id`.
pub(crate) fn agency_name(m: &Manifest, id: &str) -> String {
    m.members
        .iter()
        .find(|x| x.id.as_str() == id)
        .map(|x| x.name.clone())
        .unwrap_or_else(|| "(not in manifest)".into())
}

/// A refusal's reason code.
pub(crate) fn refusal_code(resp: &Response) -> &'static str {
    resp.reason.map(|x| x.as_str()).unwrap_or("unspecified")
}

/// What a refusal's reason means.
pub(crate) fn refusal_explanation(resp: &Response) -> &'static str {
    resp.reason
        .map(|x| x.explain())
        .unwrap_or("no reason given")
}

/// Every agency part that carries a signed answer, with the answer.
pub(crate) fn answers(v: &VerifiedBundle) -> impl Iterator<Item = (&VerifiedResult, &Response)> {
    v.results
        .iter()
        .filter_map(|r| r.response.as_ref().map(|resp| (r, resp)))
}

/// The answers that withheld something by policy.
pub(crate) fn withholding(v: &VerifiedBundle) -> Vec<(&VerifiedResult, &Response)> {
    answers(v)
        .filter(|(_, resp)| !resp.withheld.is_empty())
        .collect()
}

/// The answers that refused.
pub(crate) fn refusals(v: &VerifiedBundle) -> Vec<(&VerifiedResult, &Response)> {
    answers(v)
        .filter(|(_, resp)| resp.outcome == Outcome::Refused)
        .collect()
}

/// What an answer withheld, by name in plain words (never a value): pathway titles, record
/// kinds with the details held back ("Medication on release (dose)"), and the count of records
/// outside the consented period; each `None` when there is none.
pub(crate) struct WithheldNames {
    pub categories: Option<String>,
    pub fields: Option<String>,
    pub out_of_period: Option<u32>,
}

pub(crate) fn withheld_names(w: &Withheld) -> WithheldNames {
    let voc = vocabulary();
    let mut by_kind: Vec<(String, Vec<String>)> = Vec::new();
    for f in &w.fields {
        let (kind, field) = f.split_once('.').unwrap_or((f.as_str(), "*"));
        let label = if field == "*" {
            "all details".to_owned()
        } else {
            voc.field_label(field).to_lowercase()
        };
        match by_kind.iter_mut().find(|(k, _)| k == kind) {
            Some((_, v)) => v.push(label),
            None => by_kind.push((kind.to_owned(), vec![label])),
        }
    }
    WithheldNames {
        categories: (!w.categories.is_empty()).then(|| {
            w.categories
                .iter()
                .map(|c| c.title())
                .collect::<Vec<_>>()
                .join(", ")
        }),
        fields: (!by_kind.is_empty()).then(|| {
            by_kind
                .iter()
                .map(|(k, f)| format!("{} ({})", voc.kind_label(k), f.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        }),
        out_of_period: (w.records_out_of_period > 0).then_some(w.records_out_of_period),
    }
}

/// One agency part's records in one pathway category.
pub(crate) type SourcedRecords<'a> = (&'a VerifiedResult, Vec<&'a DisclosedRecord>);

/// Disclosed records grouped by pathway category (in [`Category::ALL`] order), then by the
/// agency part they came from (in bundle order).
pub(crate) fn records_by_category(v: &VerifiedBundle) -> Vec<(Category, Vec<SourcedRecords<'_>>)> {
    let mut by_category: BTreeMap<usize, BTreeMap<usize, Vec<&DisclosedRecord>>> = BTreeMap::new();
    for (i, r) in v.results.iter().enumerate() {
        let Some(resp) = &r.response else { continue };
        for rec in &resp.records {
            let order = Category::ALL
                .iter()
                .position(|c| *c == rec.category)
                .unwrap_or(usize::MAX);
            by_category
                .entry(order)
                .or_default()
                .entry(i)
                .or_default()
                .push(rec);
        }
    }
    by_category
        .into_iter()
        .filter_map(|(order, by_part)| {
            let cat = *Category::ALL.get(order)?;
            let parts = by_part
                .into_iter()
                .filter_map(|(i, recs)| Some((v.results.get(i)?, recs)))
                .collect();
            Some((cat, parts))
        })
        .collect()
}

/// The person the passport is about, from the first identity record disclosed.
pub(crate) struct Person {
    /// Given and family name.
    pub name: String,
    /// Date of birth, as people write it.
    pub born: String,
    /// Release date, as people write it.
    pub release: String,
}

/// The person the passport is about, from the first identity record disclosed.
pub(crate) fn person(v: &VerifiedBundle) -> Option<Person> {
    let rec = answers(v)
        .flat_map(|(_, resp)| resp.records.iter())
        .find(|r| r.kind == "person_identity")?;
    let f = |k: &str| rec.fields.get(k).cloned().unwrap_or_default();
    let date = |k: &str| {
        let d = f(k);
        uk_date_str(&d).unwrap_or(d)
    };
    Some(Person {
        name: format!("{} {}", f("given_name"), f("family_name"))
            .trim()
            .to_owned(),
        born: date("date_of_birth"),
        release: date("release_date"),
    })
}

/// An agency whose part is missing from a passport, and why in words.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Missing {
    /// Its id.
    pub agency: String,
    /// Its name.
    pub name: String,
    /// The status code (`unreachable`, `timed_out`, `refused`, ...).
    pub status: String,
    /// Why, in words.
    pub why: String,
}

/// Why an agency with holder status `status` (and `detail`) gave no usable answer, in words.
pub(crate) fn status_words(status: HolderStatus, detail: Option<&str>) -> String {
    let base = match status {
        HolderStatus::Answered => "answered",
        HolderStatus::Unreachable => "could not be reached",
        HolderStatus::TimedOut => "did not answer in time",
        HolderStatus::Invalid => "its answer failed verification",
        HolderStatus::Error => "returned an error",
    };
    match detail {
        Some(d) if !d.is_empty() && status != HolderStatus::Unreachable => format!("{base} ({d})"),
        _ => base.to_owned(),
    }
}

/// The agencies whose part is missing: no answer, an answer that failed verification, or a
/// refusal (with its reason).
pub(crate) fn missing(v: &VerifiedBundle, m: &Manifest) -> Vec<Missing> {
    v.results
        .iter()
        .filter_map(|r| {
            let agency = r.result.agency.as_str();
            let (status, why) = if let Some(p) = &r.problem {
                (
                    "invalid".to_owned(),
                    format!("its answer failed verification: {p}"),
                )
            } else {
                match &r.response {
                    Some(resp) if resp.outcome == Outcome::Refused => (
                        "refused".to_owned(),
                        format!("refused: {}", refusal_explanation(resp)),
                    ),
                    Some(_) => return None,
                    None => (
                        r.result.status.as_str().to_owned(),
                        status_words(r.result.status, r.result.detail.as_deref()),
                    ),
                }
            };
            Some(Missing {
                agency: agency.to_owned(),
                name: agency_name(m, agency),
                status,
                why,
            })
        })
        .collect()
}

/// The one wording of incompleteness, for the terminal, the HTML page and the DPO's report:
/// `INCOMPLETE: this passport lacks the part of NAME (id): WHY; ...`.
pub(crate) fn incomplete_sentence(what: &str, missing: &[Missing]) -> String {
    let parts: Vec<String> = missing
        .iter()
        .map(|x| format!("{} ({}) {}", x.name, x.agency, x.why))
        .collect();
    format!(
        "INCOMPLETE: this {what} lacks {} agenc{}: {}.",
        missing.len(),
        if missing.len() == 1 { "y" } else { "ies" },
        parts.join("; ")
    )
}

/// The categories any agency was asked for.
pub(crate) fn asked_categories(v: &VerifiedBundle) -> BTreeSet<Category> {
    v.query
        .requests
        .iter()
        .flat_map(|r| r.categories.iter().copied())
        .collect()
}

/// The summary block: per pathway, the facts a caseworker acts on (see [`crate::vocabulary`]).
pub(crate) fn summary(v: &VerifiedBundle, m: &Manifest) -> Vec<PathwaySummary> {
    let names: BTreeMap<&str, String> = v
        .results
        .iter()
        .map(|r| {
            (
                r.result.agency.as_str(),
                agency_name(m, r.result.agency.as_str()),
            )
        })
        .collect();
    let records: Vec<Sourced<'_>> = v
        .results
        .iter()
        .filter(|r| r.problem.is_none())
        .filter_map(|r| r.response.as_ref().map(|resp| (r, resp)))
        .flat_map(|(r, resp)| {
            let a = r.result.agency.as_str();
            let name = names.get(a).map_or("", String::as_str);
            resp.records.iter().map(move |rec| (a, name, rec))
        })
        .collect();
    let mut pathways = summarise(
        vocabulary(),
        &records,
        &asked_categories(v),
        v.assembled_at().date(),
    );
    let gaps = missing(v, m);
    for p in &mut pathways {
        p.missing = gaps
            .iter()
            .filter(|g| {
                v.query
                    .requests
                    .iter()
                    .any(|r| r.holder.as_str() == g.agency && r.categories.contains(&p.pathway))
            })
            .map(|g| g.name.clone())
            .collect();
    }
    pathways
}

/// One line per agency: what it did and whether its signed answer verified.
pub(crate) fn verification_line(r: &VerifiedResult) -> String {
    if let Some(p) = &r.problem {
        return format!("answer NOT VERIFIED ({p}); its records are left out");
    }
    match &r.response {
        Some(resp) => {
            let what = match resp.outcome {
                Outcome::Disclosed => format!(
                    "shared {} record{}",
                    resp.records.len(),
                    if resp.records.len() == 1 { "" } else { "s" }
                ),
                Outcome::NotHeld => "holds no record of this person".to_owned(),
                Outcome::Refused => format!("refused: {}", refusal_explanation(resp)),
            };
            let age = records_age_words(resp).map_or_else(String::new, |w| format!(" ({w})"));
            format!(
                "{what}; as of {}{age}; signature verified",
                uk_time(resp.as_of)
            )
        }
        None => format!(
            "no answer: {}",
            status_words(r.result.status, r.result.detail.as_deref())
        ),
    }
}

/// The passport as text for a caseworker to read or print.
pub fn passport_text(v: &VerifiedBundle, m: &Manifest) -> String {
    let mut out = String::new();
    let q = &v.query;
    let voc = vocabulary();
    let _ = writeln!(
        out,
        "{}",
        bold(&format!("RESETTLEMENT PASSPORT  {}", q.passport_id))
    );
    if let Some(p) = person(v) {
        let _ = writeln!(
            out,
            "{}, born {}, release date {}",
            p.name, p.born, p.release
        );
    }
    let _ = writeln!(
        out,
        "Assembled {} for {} by {} ({}, {})\nUnder consent {}",
        uk_time(v.assembled_at()),
        humanize(q.purpose.as_str()).to_lowercase(),
        q.caseworker,
        q.requester,
        agency_name(m, q.requester.as_str()),
        q.consent_id
            .as_ref()
            .map_or_else(|| "none".to_owned(), ToString::to_string),
    );
    let gaps = missing(v, m);
    if !gaps.is_empty() {
        let _ = writeln!(out, "\n{}", bold(&incomplete_sentence("passport", &gaps)));
    }

    let _ = writeln!(out, "\n{}", bold("SUMMARY"));
    for p in summary(v, m) {
        if p.facts.is_empty() {
            let _ = writeln!(out, "  {}: {}", p.title, p.empty_words());
            continue;
        }
        let _ = writeln!(out, "  {}", p.title);
        for f in &p.facts {
            let _ = writeln!(out, "    - {}: {} ({})", f.label, f.text, f.source_name);
        }
    }

    let _ = writeln!(out, "\n{}", bold("VERIFICATION"));
    for r in &v.results {
        let agency = r.result.agency.as_str();
        let _ = writeln!(
            out,
            "  {agency} ({}): {}",
            agency_name(m, agency),
            verification_line(r)
        );
    }

    // Every disclosed record by pathway category, then by source agency.
    for (cat, parts) in records_by_category(v) {
        let _ = writeln!(out, "\n{}", bold(&cat.title().to_uppercase()));
        let mut current = "";
        for (r, records) in parts {
            let agency = r.result.agency.as_str();
            for rec in records {
                if agency != current {
                    current = agency;
                    if let Some(resp) = &r.response {
                        let age =
                            records_age_words(resp).map_or_else(String::new, |w| format!(" ({w})"));
                        let _ = writeln!(
                            out,
                            "  from {agency} ({}), as of {}{age}, signature verified",
                            agency_name(m, agency),
                            uk_time(resp.as_of)
                        );
                    }
                }
                let fields: Vec<String> = rec
                    .fields
                    .iter()
                    .map(|(k, val)| format!("{}: {}", voc.field_label(k), voc.value(k, val)))
                    .collect();
                let _ = writeln!(
                    out,
                    "    - {} ({}): {}",
                    voc.kind_label(&rec.kind),
                    uk_date(rec.about),
                    fields.join("; ")
                );
            }
        }
    }
    let withheld: Vec<String> = withholding(v)
        .into_iter()
        .map(|(r, resp)| {
            let names = withheld_names(&resp.withheld);
            let mut parts = Vec::new();
            if let Some(c) = names.categories {
                parts.push(format!("pathways: {c}"));
            }
            if let Some(f) = names.fields {
                parts.push(f);
            }
            if let Some(n) = names.out_of_period {
                parts.push(format!("{n} records outside the consented period"));
            }
            format!(
                "  {} ({}): {}",
                agency_name(m, r.result.agency.as_str()),
                r.result.agency.as_str(),
                parts.join("; ")
            )
        })
        .collect();
    if !withheld.is_empty() {
        let _ = writeln!(out, "\n{}", bold("WITHHELD BY POLICY (names only)"));
        for w in withheld {
            let _ = writeln!(out, "{w}");
        }
    }
    let refused: Vec<String> = refusals(v)
        .into_iter()
        .map(|(r, resp)| {
            format!(
                "  {}: {}",
                r.result.agency.as_str(),
                refusal_explanation(resp)
            )
        })
        .collect();
    if !refused.is_empty() {
        let _ = writeln!(out, "\n{}", bold("REFUSALS"));
        for r in refused {
            let _ = writeln!(out, "{r}");
        }
    }
    out
}

/// One response's witnessing as JSON: `status` (`witnessed`, `not_yet_witnessed`,
/// `not_required`), the cosigned checkpoint's `size`, the `witnesses` whose cosignatures
/// verified and the manifest's `threshold`.
pub fn witness_json(w: &WitnessVerdict) -> serde_json::Value {
    match w {
        WitnessVerdict::NotRequired => json!({ "status": w.name() }),
        WitnessVerdict::Witnessed {
            size,
            witnesses,
            threshold,
        } => json!({
            "status": w.name(), "size": size, "witnesses": witnesses, "threshold": threshold,
        }),
        WitnessVerdict::NotYetWitnessed {
            size,
            witnesses,
            threshold,
        } => json!({
            "status": w.name(), "size": size, "witnesses": witnesses, "threshold": threshold,
        }),
    }
}

/// One line saying what the verified responses show of witnessing: how many holders' logs a
/// quorum of witnesses cosigned, and which are not yet witnessed (a young log or unreachable
/// witnesses: not tampering, but not the same assurance).
pub fn witness_summary(v: &VerifiedBundle) -> String {
    let verdicts: Vec<_> = v
        .results
        .iter()
        .filter_map(|r| r.witness.as_ref().map(|w| (&r.result.agency, w)))
        .collect();
    let threshold = v.manifest.witness_threshold;
    if threshold == 0 {
        return "Witnessing: the manifest asks for none.".into();
    }
    let witnessed = verdicts.iter().filter(|(_, w)| w.is_witnessed()).count();
    let mut s = format!(
        "Witnessed: {witnessed} of {} responses show their log's checkpoint cosigned by at least {threshold} other members (the manifest's threshold).",
        verdicts.len()
    );
    for (agency, w) in &verdicts {
        if let WitnessVerdict::NotYetWitnessed { witnesses, .. } = w {
            s.push_str(&format!(
                " NOT YET WITNESSED: {agency} ({} of {threshold} cosignatures).",
                witnesses.len()
            ));
        }
    }
    s
}

/// The passport as JSON: codes, not labels; `complete` is false, and `missing` says why, when
/// any agency's part is missing (no answer, a failed verification or a refusal).
pub fn passport_json(v: &VerifiedBundle, m: &Manifest) -> serde_json::Value {
    let q = &v.query;
    let gaps = missing(v, m);
    json!({
        "passport_id": q.passport_id,
        "query_id": q.query_id,
        "consent_id": q.consent_id,
        "purpose": q.purpose,
        "requester": q.requester,
        "caseworker": q.caseworker,
        "assembled_at": v.assembled_at().to_rfc3339(),
        "manifest_version": v.manifest.version,
        "complete": v.complete() && gaps.is_empty(),
        "missing": gaps,
        "summary": summary(v, m),
        "verified": v.all_valid(),
        "witnessed": v.all_witnessed(),
        "witness_threshold": v.manifest.witness_threshold,
        "agencies": v.results.iter().map(|r| {
            let resp = r.response.as_ref();
            json!({
                "agency": r.result.agency,
                "status": r.result.status.as_str(),
                "outcome": resp.map(|x| x.outcome.as_str()),
                "reason": resp.and_then(|x| x.reason.map(|r| r.as_str())),
                "detail": r.result.detail,
                "problem": r.problem.as_ref().map(ToString::to_string),
                "elapsed_ms": r.result.elapsed_ms,
                "as_of": resp.map(|x| x.as_of.to_rfc3339()),
                "records_read_at": resp.and_then(|x| x.records_read_at.map(|t| t.to_rfc3339())),
                "records_age_secs": resp.and_then(Response::records_age_secs),
                "withheld": resp.map(|x| &x.withheld),
                "records": resp.map(|x| &x.records),
                "witness": r.witness.as_ref().map(witness_json),
            })
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::humanize;

    #[test]
    fn a_zero_or_tiny_terminal_width_falls_back_to_a_sane_one() {
        assert_eq!(super::sane_width(Some(0)), Some(super::FALLBACK_WIDTH));
        assert_eq!(super::sane_width(Some(12)), Some(super::FALLBACK_WIDTH));
        assert_eq!(super::sane_width(Some(120)), None);
        assert_eq!(super::sane_width(None), None);
        let mut t = super::table(&["person", "roles"]);
        t.set_width(0);
        if let Some(w) = super::sane_width(t.width()) {
            t.set_width(w);
        }
        t.add_row(vec!["cw-0042", "caseworker"]);
        assert!(t.to_string().contains("cw-0042"), "{t}");
    }

    #[test]
    fn humanize_keeps_abbreviations() {
        assert_eq!(humanize("gp_registration"), "GP registration");
        assert_eq!(
            humanize("id_document_application"),
            "ID document application"
        );
        assert_eq!(
            humanize("bank_account_application"),
            "Bank account application"
        );
        assert_eq!(humanize("universal_credit_claim"), "Universal credit claim");
        assert_eq!(humanize(""), "");
    }
}
