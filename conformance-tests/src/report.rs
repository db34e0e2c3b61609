//! Results and their output: a human table, JSON, JUnit XML; and the exit code.

use std::fmt::Write as _;

use serde::Serialize;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The target behaved as required.
    Pass,
    /// It did not (or could not be reached).
    Fail,
    /// The target declared a message kind the case needs unsupported, or the identity file
    /// lacks what the case needs.
    Unsupported,
}

impl Verdict {
    /// The wire/table name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Unsupported => "unsupported",
        }
    }
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    /// The case id.
    pub id: String,
    /// Its area.
    pub area: String,
    /// How it ended.
    pub outcome: Verdict,
    /// What was observed (on a pass) or what went wrong.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// Exit status: 0 when every case passed; 127 when some case was unsupported and none failed;
/// 1 when any case failed.
pub fn exit_code(reports: &[CaseReport]) -> i32 {
    if reports.iter().any(|r| r.outcome == Verdict::Fail) {
        1
    } else if reports.iter().any(|r| r.outcome == Verdict::Unsupported) {
        127
    } else {
        0
    }
}

fn count(reports: &[CaseReport], v: Verdict) -> usize {
    reports.iter().filter(|r| r.outcome == v).count()
}

/// A one-line summary.
pub fn summary(reports: &[CaseReport]) -> String {
    let ms: u64 = reports.iter().map(|r| r.ms).sum();
    format!(
        "{} cases: {} passed, {} failed, {} unsupported ({:.1} s)",
        reports.len(),
        count(reports, Verdict::Pass),
        count(reports, Verdict::Fail),
        count(reports, Verdict::Unsupported),
        ms as f64 / 1000.0
    )
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut t: String = flat.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The human table: one line per case, failures with their full detail.
pub fn table(reports: &[CaseReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(10)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:<width$} {:>7}  detail",
        "outcome", "case", "ms"
    );
    for r in reports {
        let detail = match r.outcome {
            Verdict::Pass => one_line(&r.detail, 90),
            _ => one_line(&r.detail, 400),
        };
        let _ = writeln!(
            out,
            "{:<11} {:<width$} {:>7}  {}",
            r.outcome.as_str().to_uppercase(),
            r.id,
            r.ms,
            detail
        );
    }
    let _ = writeln!(out, "\n{}", summary(reports));
    out
}

/// The JSON array of results.
pub fn json(reports: &[CaseReport]) -> String {
    serde_json::to_string_pretty(reports).unwrap_or_else(|_| "[]".into())
}

/// Escapes text for XML 1.0 attribute values and character data. Characters XML 1.0 cannot
/// carry at all (most control characters) become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// JUnit XML: one test suite per area, one test case per case; failures as `failure`,
/// unsupported cases as `skipped`.
pub fn junit(reports: &[CaseReport]) -> String {
    let mut areas: Vec<&str> = Vec::new();
    for r in reports {
        if !areas.contains(&r.area.as_str()) {
            areas.push(&r.area);
        }
    }
    let total_ms: u64 = reports.iter().map(|r| r.ms).sum();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="tg-conformance" tests="{}" failures="{}" skipped="{}" errors="0" time="{}">"#,
        reports.len(),
        count(reports, Verdict::Fail),
        count(reports, Verdict::Unsupported),
        secs(total_ms)
    );
    for area in areas {
        let mine: Vec<&CaseReport> = reports.iter().filter(|r| r.area == area).collect();
        let owned: Vec<CaseReport> = mine.iter().map(|r| (*r).clone()).collect();
        let _ = writeln!(
            x,
            r#"  <testsuite name="{}" tests="{}" failures="{}" skipped="{}" errors="0" time="{}">"#,
            xml_escape(area),
            mine.len(),
            count(&owned, Verdict::Fail),
            count(&owned, Verdict::Unsupported),
            secs(mine.iter().map(|r| r.ms).sum())
        );
        for r in mine {
            let head = format!(
                r#"    <testcase classname="{}" name="{}" time="{}""#,
                xml_escape(&r.area),
                xml_escape(&r.id),
                secs(r.ms)
            );
            match r.outcome {
                Verdict::Pass => {
                    let _ = writeln!(
                        x,
                        "{head}>\n      <system-out>{}</system-out>\n    </testcase>",
                        xml_escape(&r.detail)
                    );
                }
                Verdict::Fail => {
                    let _ = writeln!(
                        x,
                        "{head}>\n      <failure message=\"{}\" type=\"nonconformance\">{}</failure>\n    </testcase>",
                        xml_escape(&one_line(&r.detail, 200)),
                        xml_escape(&r.detail)
                    );
                }
                Verdict::Unsupported => {
                    let _ = writeln!(
                        x,
                        "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(&format!("unsupported: {}", one_line(&r.detail, 200)))
                    );
                }
            }
        }
        let _ = writeln!(x, "  </testsuite>");
    }
    let _ = writeln!(x, "</testsuites>");
    x
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn r(id: &str, outcome: Verdict, detail: &str) -> CaseReport {
        CaseReport {
            id: id.into(),
            area: id.split('.').next().unwrap().into(),
            outcome,
            detail: detail.into(),
            ms: 12,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&[r("a.x", Verdict::Pass, "")]), 0);
        assert_eq!(
            exit_code(&[
                r("a.x", Verdict::Pass, ""),
                r("a.y", Verdict::Unsupported, "")
            ]),
            127
        );
        assert_eq!(
            exit_code(&[
                r("a.x", Verdict::Fail, ""),
                r("a.y", Verdict::Unsupported, "")
            ]),
            1
        );
    }

    #[test]
    fn junit_escapes_everything() {
        let x = junit(&[
            r(
                "query.x",
                Verdict::Fail,
                "expected <a> & \"b\" 'c'\u{1}\nnext",
            ),
            r("query.y", Verdict::Unsupported, "no <kind>"),
            r("limits.z", Verdict::Pass, "ok"),
        ]);
        assert!(x.contains("expected &lt;a&gt; &amp; &quot;b&quot; &apos;c&apos;\u{fffd}&#10;next"));
        assert!(x.contains(r#"<testsuite name="query" tests="2" failures="1" skipped="1""#));
        assert!(x.contains(r#"<skipped message="unsupported: no &lt;kind&gt;"/>"#));
        assert!(!x.contains('\u{1}'));
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("</testcase>").count(), 3);
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&json(&[r("envelope.a", Verdict::Pass, "d")])).unwrap();
        assert_eq!(v[0]["id"], "envelope.a");
        assert_eq!(v[0]["area"], "envelope");
        assert_eq!(v[0]["outcome"], "pass");
        assert_eq!(v[0]["detail"], "d");
        assert_eq!(v[0]["ms"], 12);
    }
}
