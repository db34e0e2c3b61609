//! The passport and the reports as their readers see them: a caseworker's summary in plain
//! words, incompleteness said everywhere, and a subject-access report the person can be handed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::Path;

use common::{assert_success, tg};

fn demo(dir: &Path, extra: &[&str]) -> String {
    let out = tg()
        .args(["demo", "--people", "60", "--out"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

fn verify_json(dir: &Path) -> serde_json::Value {
    let out = tg()
        .args(["--json", "passport", "verify"])
        .arg(dir.join("passport.tgp"))
        .arg("--manifest")
        .arg(dir.join("manifest.tgm"))
        .output()
        .unwrap();
    assert_success(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Words joined by underscores (`private_rented`), hex runs of eight or more, and the
/// prefixed ids the system uses: what the person's version must never show.
fn codes_and_ids(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        let snake = word.contains('_');
        let hex = word
            .split('-')
            .any(|p| p.len() >= 8 && p.chars().all(|c| c.is_ascii_hexdigit()));
        let prefixed = ["pp-", "cn-", "q-", "cw-", "dpo-"]
            .iter()
            .any(|p| word.starts_with(p));
        if snake || hex || prefixed {
            found.push(word.to_owned());
        }
    }
    found
}

/// The visible text of an HTML page (tags, styles and attribute values dropped).
fn visible(html: &str) -> String {
    let body = html.split("</style>").nth(1).unwrap_or(html);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn an_incomplete_passport_says_so_in_the_terminal_html_json_and_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = demo(dir.path(), &["--unreachable", "nhs-wy"]);
    let said = "INCOMPLETE: this passport lacks 1 agency: NHS West Yorkshire (nhs-wy)";
    // The terminal: a line of its own.
    assert!(
        stdout.lines().any(|l| l.starts_with(said)),
        "no incomplete line:\n{stdout}"
    );
    // `tg passport show` says it too.
    let show = tg()
        .args(["passport", "show"])
        .arg(dir.path().join("passport.tgp"))
        .arg("--manifest")
        .arg(dir.path().join("manifest.tgm"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains(said));
    // The HTML: a banner of its own, above and outside the verification box.
    let html = read(dir.path(), "passport.html");
    let banner = html
        .find("id=\"incomplete\"")
        .expect("no incomplete banner");
    let verified = html.find("id=\"verification\"").unwrap();
    assert!(
        banner < verified,
        "the incomplete banner is not above the Verified box"
    );
    let verified_box = &html[verified..html[verified..].find("</p>").unwrap() + verified];
    assert!(
        !verified_box.contains("nhs-wy") && !verified_box.to_lowercase().contains("incomplete"),
        "{verified_box}"
    );
    assert!(html[banner..verified].contains(said));
    assert!(
        html[banner..verified].contains("could not be reached")
            || html[banner..verified].contains("did not answer in time")
    );
    // The pathway it would have filled says who did not answer.
    assert!(html.contains("nothing shared; no answer from NHS West Yorkshire"));
    // JSON: complete false, and who is missing and why.
    let j = verify_json(dir.path());
    assert_eq!(j["complete"], false, "{j}");
    assert_eq!(j["missing"][0]["agency"], "nhs-wy");
    assert!(j["missing"][0]["why"].as_str().unwrap().len() > 5);
    // The DPO's report: the same wording.
    let report = read(dir.path(), "report.html");
    assert!(
        report.contains("INCOMPLETE: this report lacks 1 agency: NHS West Yorkshire (nhs-wy)"),
        "the DPO report does not say it the same way"
    );
    // The person's report names who did not answer.
    let person = read(dir.path(), "report-person.txt");
    assert!(
        person.contains("INCOMPLETE: NHS West Yorkshire (could not be reached) did not answer")
            || person
                .contains("INCOMPLETE: NHS West Yorkshire (did not answer in time) did not answer"),
        "{person}"
    );
}

#[test]
fn the_passport_opens_with_a_summary_in_plain_words_and_json_keeps_the_codes() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = demo(dir.path(), &[]);
    // The terminal: a summary block, one verification line per agency, no incomplete line.
    assert!(stdout.contains("\nSUMMARY\n"), "{stdout}");
    assert!(stdout.contains("\nVERIFICATION\n"));
    assert!(!stdout.contains("INCOMPLETE"));
    let summary = stdout
        .split("\nSUMMARY\n")
        .nth(1)
        .unwrap()
        .split("\nVERIFICATION\n")
        .next()
        .unwrap();
    for line in [
        "Release address: ",
        "Probation practitioner: ",
        "GP registration: ",
        "Benefit claim: ",
    ] {
        assert!(summary.contains(line), "summary lacks {line:?}:\n{summary}");
    }
    assert!(
        codes_and_ids(summary).is_empty(),
        "codes in the summary: {:?}",
        codes_and_ids(summary)
    );
    // Dates as people write them in the UK.
    let months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    assert!(months.iter().any(|m| summary.contains(m)));
    assert!(!summary.contains("-01-") && !summary.contains("-12-"));

    // The HTML: the summary comes first, every pathway says something, one line per agency.
    let html = read(dir.path(), "passport.html");
    let s = html.find("id=\"summary\"").unwrap();
    assert!(s < html.find("id=\"agencies\"").unwrap());
    assert_eq!(html.matches("data-pathway=").count(), 9);
    assert_eq!(html.matches("<li class=\"verify ok\"").count(), 6);
    for code in [
        "private_rented",
        "conditional_release",
        "level_2",
        "universal_credit",
    ] {
        assert!(
            !visible(&html).contains(code),
            "the page shows the code {code}"
        );
    }
    // Every printed page carries who, born, passport and assembled-at (a repeated header) and
    // a page number.
    assert!(html.contains("<thead><tr><td><div class=\"running\">"));
    assert!(html.contains("counter(page)"));

    // JSON: the summary with codes, facts naming their source; records keep their codes.
    let j = verify_json(dir.path());
    assert_eq!(j["complete"], true);
    assert_eq!(j["missing"].as_array().unwrap().len(), 0);
    let pathways = j["summary"].as_array().unwrap();
    assert_eq!(pathways.len(), 9);
    let accommodation = pathways
        .iter()
        .find(|p| p["pathway"] == "accommodation")
        .unwrap();
    assert_eq!(accommodation["state"], "shared");
    let fact = &accommodation["facts"][0];
    assert!(fact["source"].as_str().is_some() && fact["source_name"].as_str().is_some());
    let identity = j["agencies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["records"].as_array().cloned().unwrap_or_default())
        .find(|r| r["kind"] == "person_identity")
        .unwrap();
    assert!(identity["fields"]["release_type"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_lowercase() || c == '_'));
}

#[test]
fn the_persons_report_is_plain_english_with_one_reference_number() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path(), &[]);
    for (name, text) in [
        ("report-person.txt", read(dir.path(), "report-person.txt")),
        (
            "report-person.html",
            visible(&read(dir.path(), "report-person.html")),
        ),
    ] {
        let bad = codes_and_ids(&text);
        assert!(bad.is_empty(), "{name} shows codes or ids: {bad:?}\n{text}");
        let lower = text.to_lowercase();
        for needle in [
            "reference number",
            "what you agreed to",
            "who asked and what was shared",
            "what was refused and why",
            "who answered",
            "you agreed that hmp leeds",
            "may share information about you with yorkshire and the humber probation",
            "shared",
            "to plan and support your resettlement",
        ] {
            assert!(lower.contains(needle), "{name} lacks {needle:?}:\n{text}");
        }
        // Everyone answered in this demo, and the report says so.
        assert!(!text.contains("INCOMPLETE"), "{text}");
    }
    // The DPO's evidence version: a query comes before the decisions it caused.
    let report = read(dir.path(), "report.html");
    let sent = report
        .find("<tr class=\"query_sent\">")
        .expect("no query row");
    let disclosed = report
        .find("<tr class=\"disclosed\">")
        .expect("no disclosure row");
    assert!(
        sent < disclosed,
        "a disclosure is listed before the query that asked for it"
    );
}
