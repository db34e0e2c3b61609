//! The passport as a self-contained, printable HTML page (`tg passport export --html`).
//!
//! Every value is escaped. Every section names its source agency (id and name), the time the
//! agency answered (its signed as-of time) and whether its signed response verified; refusals
//! and withheld categories and fields are listed by name (never their values).

use std::fmt::Write as _;

use throughgate_protocol::bundle::{VerifiedBundle, VerifiedResult};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::record::DisclosedRecord;

use crate::render::{
    agency_name, incomplete_sentence, missing, person, records_by_category, refusal_code,
    refusal_explanation, refusals, summary, verification_line, withheld_names, withholding,
};
use crate::vocabulary::{records_age_words, uk_date, uk_time, vocabulary};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// "signature verified", or what failed, or why there is nothing to verify.
fn verification(r: &VerifiedResult) -> (&'static str, String) {
    match (&r.problem, &r.response) {
        (Some(p), _) => ("bad", format!("NOT VERIFIED: {p}")),
        (None, Some(_)) => ("ok", "signature verified".to_owned()),
        (None, None) => (
            "none",
            format!(
                "no signed answer ({})",
                r.result.status.as_str().replace('_', " ")
            ),
        ),
    }
}

/// The line that heads every agency's part of a section: id, name, as-of, verification.
fn source_line(m: &Manifest, r: &VerifiedResult) -> String {
    let agency = r.result.agency.as_str();
    let (class, verified) = verification(r);
    let as_of = r
        .response
        .as_ref()
        .map_or_else(|| "no answer".to_owned(), |x| uk_time(x.as_of));
    let age = r
        .response
        .as_ref()
        .and_then(records_age_words)
        .map_or_else(String::new, |w| format!(" ({})", esc(&w)));
    format!(
        "<p class=\"source\">From <span class=\"agency-id\">{}</span> ({}), as of <time>{}</time>{age}, <span class=\"verify {class}\">{}</span></p>",
        esc(agency),
        esc(&agency_name(m, agency)),
        esc(&as_of),
        esc(&verified)
    )
}

fn record_rows(records: &[&DisclosedRecord]) -> String {
    let voc = vocabulary();
    let mut rows = String::new();
    for rec in records {
        let fields: String = rec
            .fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "<span class=\"field\"><span class=\"name\">{}</span>: {}</span>",
                    esc(&voc.field_label(k)),
                    esc(&voc.value(k, v))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td class=\"date\">{}</td><td>{}</td></tr>",
            esc(&voc.kind_label(&rec.kind)),
            esc(&uk_date(rec.about)),
            fields
        );
    }
    rows
}

/// The summary block: per pathway, the facts a caseworker acts on, each naming its source.
fn summary_html(v: &VerifiedBundle, m: &Manifest) -> String {
    let mut rows = String::new();
    for p in summary(v, m) {
        let what = if p.facts.is_empty() {
            format!("<span class=\"empty\">{}</span>", esc(&p.empty_words()))
        } else {
            let items: String = p
                .facts
                .iter()
                .map(|f| {
                    format!(
                        "<li data-kind=\"{}\"><strong>{}</strong>: {} <span class=\"src\">({})</span></li>",
                        esc(&f.kind),
                        esc(&f.label),
                        esc(&f.text),
                        esc(&f.source_name)
                    )
                })
                .collect();
            format!("<ul>{items}</ul>")
        };
        let _ = writeln!(
            rows,
            "<tr class=\"{}\" data-pathway=\"{}\"><th scope=\"row\">{}</th><td>{what}</td></tr>",
            esc(&format!("{:?}", p.state).to_lowercase()),
            esc(p.pathway.as_str()),
            esc(p.title)
        );
    }
    format!("<section id=\"summary\"><h2>Summary</h2>\n<table class=\"summary\">\n{rows}</table></section>")
}

/// The passport as a self-contained printable HTML page. `source` says which manifest the
/// bundle was verified against.
pub fn passport_html(v: &VerifiedBundle, m: &Manifest, source: &str) -> String {
    let q = &v.query;
    let pid = esc(q.passport_id.as_str());
    let mut body = String::new();

    // Incompleteness first, outside and above the verification box.
    let gaps = missing(v, m);
    if !gaps.is_empty() {
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
        let _ = writeln!(
            body,
            "<div id=\"incomplete\" class=\"banner bad\" role=\"alert\"><p>{}</p><ul>{items}</ul><p>Do not treat a missing part as \"nothing to know\": ask those agencies, or assemble the passport again when they can answer.</p></div>",
            esc(&incomplete_sentence("passport", &gaps))
        );
    }
    // The verification banner.
    let bad = v.results.iter().filter(|r| r.problem.is_some()).count();
    let answered = v.results.iter().filter(|r| r.response.is_some()).count();
    if bad > 0 {
        let _ = writeln!(
            body,
            "<p id=\"verification\" class=\"banner bad\">NOT FULLY VERIFIED: {bad} agency answer(s) failed verification and are left out below. Do not rely on this passport; assemble it again.</p>"
        );
    } else {
        let _ = writeln!(
            body,
            "<p id=\"verification\" class=\"banner ok\">Verified: the caseworker's signed query and {answered} signed agency answer(s) check against {}.</p>",
            esc(source),
        );
    }

    body.push_str(&summary_html(v, m));

    // Who was asked and how each answered: one line per agency.
    let mut lines = String::new();
    for r in &v.results {
        let agency = r.result.agency.as_str();
        let class = match (&r.problem, &r.response) {
            (Some(_), _) => "bad",
            (None, Some(_)) => "ok",
            (None, None) => "none",
        };
        let _ = writeln!(
            lines,
            "<li class=\"verify {class}\" data-agency=\"{}\"><strong>{}</strong> <span class=\"agency-id\">({})</span>: {}</li>",
            esc(agency),
            esc(&agency_name(m, agency)),
            esc(agency),
            esc(&verification_line(r))
        );
    }
    let _ = writeln!(
        body,
        "<section id=\"agencies\"><h2>Agencies asked</h2>\n<ul class=\"agencies\">\n{lines}</ul></section>"
    );

    // Disclosed records, by pathway, then by source agency.
    let by_category = records_by_category(v);
    let _ = writeln!(body, "<h2 id=\"details\">Records in full, by pathway</h2>");
    if by_category.is_empty() {
        let _ = writeln!(
            body,
            "<section id=\"records\" class=\"pathway\"><h2>Records</h2><p>No agency disclosed any record.</p></section>"
        );
    }
    for (cat, by_agency) in &by_category {
        let _ = writeln!(
            body,
            "<section class=\"pathway\" id=\"cat-{}\"><h3>{}</h3>",
            esc(cat.as_str()),
            esc(cat.title())
        );
        for (r, records) in by_agency {
            let _ = writeln!(
                body,
                "<div class=\"from\" data-agency=\"{}\">{}\n<table class=\"records\"><tr><th>Record</th><th>Date</th><th>Details</th></tr>\n{}</table></div>",
                esc(r.result.agency.as_str()),
                source_line(m, r),
                record_rows(records)
            );
        }
        let _ = writeln!(body, "</section>");
    }

    // Withheld by policy: names only.
    let withheld = withholding(v);
    let _ = writeln!(
        body,
        "<section id=\"withheld\"><h2>Withheld by policy (names only)</h2><p class=\"meta\">What each agency's own rules kept back from this passport, by name; never the values.</p>"
    );
    if withheld.is_empty() {
        let _ = writeln!(body, "<p>Nothing was withheld.</p>");
    }
    let mut items = String::new();
    for (r, resp) in withheld {
        let names = withheld_names(&resp.withheld);
        let mut parts = Vec::new();
        if let Some(c) = names.categories {
            parts.push(format!("pathways: {c}"));
        }
        if let Some(f) = names.fields {
            parts.push(f);
        }
        if let Some(n) = names.out_of_period {
            parts.push(format!("{n} records outside the period the consent covers"));
        }
        let agency = r.result.agency.as_str();
        let _ = writeln!(
            items,
            "<li data-agency=\"{}\"><strong>{}</strong>: {}</li>",
            esc(agency),
            esc(&agency_name(m, agency)),
            esc(&parts.join("; "))
        );
    }
    if !items.is_empty() {
        let _ = writeln!(body, "<ul class=\"withheld\">{items}</ul>");
    }
    let _ = writeln!(body, "</section>");

    // Refusals, with the reason code and what it means.
    let refused = refusals(v);
    let _ = writeln!(body, "<section id=\"refusals\"><h2>Refusals</h2>");
    if refused.is_empty() {
        let _ = writeln!(body, "<p>No agency refused.</p>");
    }
    for (r, resp) in refused {
        let agency = r.result.agency.as_str();
        let _ = writeln!(
            body,
            "<p class=\"from\" data-agency=\"{}\"><strong>{}</strong> refused: {} <span class=\"agency-id\">({})</span></p>",
            esc(agency),
            esc(&agency_name(m, agency)),
            esc(refusal_explanation(resp)),
            esc(refusal_code(resp))
        );
    }
    let _ = writeln!(body, "</section>");

    let who = person(v);
    let person_line = who
        .as_ref()
        .map(|p| {
            format!(
                "<p id=\"person\" class=\"person\">{}, born {}. Release date {}.</p>",
                esc(&p.name),
                esc(&p.born),
                esc(&p.release)
            )
        })
        .unwrap_or_default();
    let running = format!(
        "{}Passport <strong>{pid}</strong> &middot; assembled {}",
        who.as_ref()
            .map(|p| format!(
                "<strong>{}</strong>, born {} &middot; ",
                esc(&p.name),
                esc(&p.born)
            ))
            .unwrap_or_default(),
        esc(&uk_time(v.assembled_at()))
    );
    let consent = q
        .consent_id
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Resettlement passport {pid}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
{PRINT_CSS}
.person {{ font-size: 1.1em; font-weight: 600; margin: 0.2em 0; }}
.source {{ margin: 0.5em 0 0.1em; font-size: 0.85em; color: #333; }}
table.summary th {{ width: 11em; background: #f3f3f3; }} table.summary ul {{ margin: 0; padding-left: 1.1em; }}
table.summary .empty {{ color: #666; font-style: italic; }} .src {{ color: #555; font-size: 0.9em; }}
ul.agencies {{ padding-left: 1.1em; margin: 0.3em 0; }} ul.agencies li {{ margin: 0.1em 0; }}
td.date {{ white-space: nowrap; }} .field .name {{ color: #555; }}
section.pathway {{ break-inside: auto; }} section.pathway h3 {{ font-size: 1em; margin: 0.6em 0 0.1em; }}
table.records td:first-child {{ width: 10em; }} table.records td.date {{ width: 8.5em; }}
.from {{ break-inside: avoid; }}
</style></head>
<body>
<table class="sheet">
<thead><tr><td><div class="running">{running}</div></td></tr></thead>
<tfoot><tr><td><div class="running-foot">Resettlement passport {pid}. Personal data: handle and dispose of it accordingly.</div></td></tr></tfoot>
<tbody><tr><td>
<header>
<h1 id="title">Resettlement passport</h1>
<p class="meta">Passport <strong id="passport">{pid}</strong></p>
{person_line}
<p class="meta">Assembled <time>{assembled}</time> for <strong>{purpose}</strong> by {caseworker_name} (<span class="agency-id">{caseworker}</span>) of {requester_name} (<span class="agency-id">{requester}</span>), under consent <span class="agency-id">{consent}</span>. Manifest version {manifest_version}.</p>
</header>
{body}
<footer>Produced by <code>tg passport export</code> from a signed passport bundle. Each agency's part above was signed by that agency's node and checked before this page was written. To check the original bundle yourself: <code>tg passport verify BUNDLE --manifest MANIFEST</code>.</footer>
</td></tr></tbody>
</table>
</body></html>
"#,
        assembled = esc(&uk_time(v.assembled_at())),
        purpose = esc(&crate::render::humanize(q.purpose.as_str()).to_lowercase()),
        caseworker_name = esc(&v.credential.display_name),
        caseworker = esc(q.caseworker.as_str()),
        requester = esc(q.requester.as_str()),
        requester_name = esc(&agency_name(m, q.requester.as_str())),
        consent = esc(&consent),
        manifest_version = m.version,
    )
}

/// The print styles every printable page shares: A4, a running header and footer repeated on
/// every printed page (a wrapping table's `thead` and `tfoot`, which Chromium repeats), a page
/// number in the page's bottom margin, and sections kept whole where they fit.
pub const PRINT_CSS: &str = r#"@page { size: A4; margin: 12mm 12mm 14mm 12mm;
  @bottom-right { content: "Page " counter(page) " of " counter(pages); font: 8pt system-ui, sans-serif; color: #444; } }
body { font-family: system-ui, sans-serif; margin: 1.5em auto; color: #111; max-width: 60em; font-size: 11pt; }
h1 { font-size: 1.45em; margin: 0.2em 0; } h2 { font-size: 1.1em; border-bottom: 2px solid #333; padding-bottom: 2px; margin: 1em 0 0.4em; break-after: avoid; }
h3 { break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: 0.3em 0 0.6em; }
th, td { border: 1px solid #999; padding: 3px 5px; text-align: left; vertical-align: top; font-size: 0.9em; }
th { background: #eee; } tr { break-inside: avoid; } .meta { color: #333; margin: 0.2em 0; }
.agency-id { font-family: ui-monospace, monospace; font-size: 0.9em; }
.verify.ok { color: #064; } .verify.bad { color: #a00; font-weight: 700; } .verify.none { color: #666; }
.banner { padding: 0.4em 0.8em; border: 2px solid; margin: 0.6em 0; } .banner.ok { border-color: #064; background: #eef8f1; }
.banner.bad { border-color: #a00; background: #fdeaea; } .banner.bad p:first-child { font-weight: 700; }
.banner ul { margin: 0.2em 0; }
section { break-inside: avoid; }
table.sheet { border: none; margin: 0; } table.sheet > * > tr > td { border: none; padding: 0; font-size: 1em; }
.running, .running-foot { display: none; }
footer { margin-top: 1.5em; font-size: 0.8em; color: #444; border-top: 1px solid #999; padding-top: 0.4em; }
@media print {
  body { margin: 0; max-width: none; font-size: 9pt; }
  .running { display: block; font-size: 8pt; color: #333; border-bottom: 1px solid #999; padding-bottom: 2px; margin-bottom: 6px; }
  .running-foot { display: block; font-size: 7.5pt; color: #555; border-top: 1px solid #ccc; padding-top: 2px; margin-top: 6px; }
  .banner, th, tr, .verify { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}"#;

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
