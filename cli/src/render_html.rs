//! The passport as a self-contained, printable HTML page (`tg passport export --html`).
//!
//! Every value is escaped. Every section names its source agency (id and name), the time the
//! agency answered (its signed as-of time) and whether its signed response verified; refusals
//! and withheld categories and fields are listed by name (never their values).

use std::fmt::Write as _;

use throughgate_protocol::bundle::{VerifiedBundle, VerifiedResult};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::HolderStatus;
use throughgate_protocol::record::DisclosedRecord;

use crate::render::{
    agency_name, answer_status, humanize, identity, records_by_category, refusal_code,
    refusal_explanation, refusals, withheld_names, withholding,
};

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

fn outcome(r: &VerifiedResult) -> (String, String) {
    if r.problem.is_some() {
        return ("invalid".into(), "the answer failed verification".into());
    }
    answer_status(r)
}

/// The line that heads every agency's part of a section: id, name, as-of, verification.
fn source_line(m: &Manifest, r: &VerifiedResult) -> String {
    let agency = r.result.agency.as_str();
    let (class, verified) = verification(r);
    let as_of = r
        .response
        .as_ref()
        .map_or_else(|| "no answer".to_owned(), |x| x.as_of.to_string());
    format!(
        "<p class=\"source\">From <span class=\"agency-id\">{}</span> ({}), as of <time>{}</time>, <span class=\"verify {class}\">{}</span></p>",
        esc(agency),
        esc(&agency_name(m, agency)),
        esc(&as_of),
        esc(&verified)
    )
}

fn record_rows(records: &[&DisclosedRecord]) -> String {
    let mut rows = String::new();
    for rec in records {
        let fields: String = rec
            .fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "<span class=\"field\"><span class=\"name\">{}</span>: {}</span>",
                    esc(&k.replace('_', " ")),
                    esc(v)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&humanize(&rec.kind)),
            esc(&rec.about.to_string()),
            fields
        );
    }
    rows
}

/// The passport as a self-contained printable HTML page. `source` says which manifest the
/// bundle was verified against.
pub fn passport_html(v: &VerifiedBundle, m: &Manifest, source: &str) -> String {
    let q = &v.query;
    let pid = esc(q.passport_id.as_str());
    let mut body = String::new();

    // The verification banner.
    let bad = v.results.iter().filter(|r| r.problem.is_some()).count();
    let answered = v.results.iter().filter(|r| r.response.is_some()).count();
    let missing: Vec<&str> = v
        .results
        .iter()
        .filter(|r| r.problem.is_none() && r.result.status != HolderStatus::Answered)
        .map(|r| r.result.agency.as_str())
        .collect();
    if bad > 0 {
        let _ = writeln!(
            body,
            "<p id=\"verification\" class=\"banner bad\">NOT FULLY VERIFIED: {bad} agency answer(s) failed verification and are left out below. Do not rely on this passport; assemble it again.</p>"
        );
    } else {
        let _ = writeln!(
            body,
            "<p id=\"verification\" class=\"banner ok\">Verified: the caseworker's signed query and {answered} signed agency answer(s) check against {}.{}</p>",
            esc(source),
            if missing.is_empty() {
                String::new()
            } else {
                format!(
                    " Incomplete: no answer from {}.",
                    esc(&missing.join(", "))
                )
            }
        );
    }

    // Who was asked and how each answered.
    let mut rows = String::new();
    for r in &v.results {
        let agency = r.result.agency.as_str();
        let (status, detail) = outcome(r);
        let (class, verified) = verification(r);
        let as_of = r
            .response
            .as_ref()
            .map_or_else(String::new, |x| x.as_of.to_string());
        let _ = writeln!(
            rows,
            "<tr class=\"{}\"><td class=\"agency-id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><time>{}</time></td><td class=\"verify {class}\">{}</td></tr>",
            esc(&status.replace(' ', "-")),
            esc(agency),
            esc(&agency_name(m, agency)),
            esc(&status),
            esc(&detail),
            esc(&as_of),
            esc(&verified)
        );
    }
    let _ = writeln!(
        body,
        "<section id=\"agencies\"><h2>Agencies asked</h2>
<table><tr><th>Agency</th><th>Name</th><th>Outcome</th><th>Detail</th><th>As of</th><th>Verification</th></tr>
{rows}</table></section>"
    );

    // Disclosed records, by pathway, then by source agency.
    let by_category = records_by_category(v);
    if by_category.is_empty() {
        let _ = writeln!(
            body,
            "<section id=\"records\" class=\"pathway\"><h2>Records</h2><p>No agency disclosed any record.</p></section>"
        );
    }
    for (cat, by_agency) in &by_category {
        let _ = writeln!(
            body,
            "<section class=\"pathway\" id=\"cat-{}\"><h2>{}</h2>",
            esc(cat.as_str()),
            esc(cat.title())
        );
        for (r, records) in by_agency {
            let _ = writeln!(
                body,
                "<div class=\"from\" data-agency=\"{}\">{}\n<table><tr><th>Record</th><th>About</th><th>Details</th></tr>\n{}</table></div>",
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
        "<section id=\"withheld\"><h2>Withheld by policy (names only)</h2>"
    );
    if withheld.is_empty() {
        let _ = writeln!(body, "<p>Nothing was withheld.</p>");
    }
    for (r, resp) in withheld {
        let names = withheld_names(&resp.withheld);
        let mut items = String::new();
        if let Some(c) = names.categories {
            let _ = writeln!(items, "<li>Categories: {}</li>", esc(&c));
        }
        if let Some(f) = names.fields {
            let _ = writeln!(items, "<li>Fields: {}</li>", esc(&f));
        }
        if let Some(n) = names.out_of_period {
            let _ = writeln!(
                items,
                "<li>{n} records outside the period the consent covers</li>"
            );
        }
        let _ = writeln!(
            body,
            "<div class=\"from\" data-agency=\"{}\">{}<ul>{items}</ul></div>",
            esc(r.result.agency.as_str()),
            source_line(m, r)
        );
    }
    let _ = writeln!(body, "</section>");

    // Refusals, with the reason code and what it means.
    let refused = refusals(v);
    let _ = writeln!(body, "<section id=\"refusals\"><h2>Refusals</h2>");
    if refused.is_empty() {
        let _ = writeln!(body, "<p>No agency refused.</p>");
    }
    for (r, resp) in refused {
        let _ = writeln!(
            body,
            "<div class=\"from\" data-agency=\"{}\">{}<p><code>{}</code>: {}</p></div>",
            esc(r.result.agency.as_str()),
            source_line(m, r),
            esc(refusal_code(resp)),
            esc(refusal_explanation(resp))
        );
    }
    let _ = writeln!(body, "</section>");

    let person = identity(v)
        .map(|p| format!("<p id=\"person\" class=\"person\">{}</p>", esc(&p)))
        .unwrap_or_default();
    let consent = q
        .consent_id
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Resettlement passport {pid}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #111; max-width: 60em; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }} h2 {{ font-size: 1.15em; border-bottom: 2px solid #333; padding-bottom: 2px; margin-top: 1.4em; }}
table {{ border-collapse: collapse; width: 100%; margin: 0.3em 0 1em; }}
th, td {{ border: 1px solid #999; padding: 4px 6px; text-align: left; vertical-align: top; font-size: 0.9em; }}
th {{ background: #eee; }} .meta {{ color: #333; }} .person {{ font-size: 1.1em; font-weight: 600; }}
.source {{ margin: 0.6em 0 0.2em; font-size: 0.9em; color: #333; }} .agency-id {{ font-family: ui-monospace, monospace; }}
.verify.ok {{ color: #064; }} .verify.bad {{ color: #a00; font-weight: 700; }} .verify.none {{ color: #666; }}
.banner {{ padding: 0.5em 0.8em; border: 2px solid; }} .banner.ok {{ border-color: #064; background: #eef8f1; }}
.banner.bad {{ border-color: #a00; background: #fdeaea; font-weight: 700; }}
.field .name {{ color: #555; }} section {{ break-inside: avoid-page; }}
footer {{ margin-top: 2em; font-size: 0.8em; color: #444; border-top: 1px solid #999; padding-top: 0.5em; }}
@media print {{ body {{ margin: 0.5cm; max-width: none; }} .banner {{ -webkit-print-color-adjust: exact; print-color-adjust: exact; }} }}
</style></head>
<body>
<header>
<h1 id="title">Resettlement passport</h1>
<p class="meta">Passport <strong id="passport">{pid}</strong></p>
{person}
<p class="meta">Assembled <time>{assembled}</time> for <strong>{purpose}</strong> by {caseworker_name} (<span class="agency-id">{caseworker}</span>) of <span class="agency-id">{requester}</span> ({requester_name}), under consent <span class="agency-id">{consent}</span>. Manifest version {manifest_version}.</p>
</header>
{body}
<footer>Produced by <code>tg passport export</code> from a signed passport bundle. Each agency's part above was signed by that agency's node and checked before this page was written. To check the original bundle yourself: <code>tg passport verify BUNDLE --manifest MANIFEST</code>. This page contains personal data: handle and dispose of it accordingly.</footer>
</body></html>
"#,
        assembled = esc(&v.assembled_at().to_string()),
        purpose = esc(q.purpose.as_str()),
        caseworker_name = esc(&v.credential.display_name),
        caseworker = esc(q.caseworker.as_str()),
        requester = esc(q.requester.as_str()),
        requester_name = esc(&agency_name(m, q.requester.as_str())),
        consent = esc(&consent),
        manifest_version = m.version,
    )
}

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
