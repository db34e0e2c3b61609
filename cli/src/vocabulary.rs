//! Plain words for records: labels for record kinds, fields and coded values, UK dates, and the
//! passport's summary block, all from the declared table in `record_kinds.toml` (data, not code
//! per kind: an agency's new record kind shows in its pathway's summary without a code change).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use throughgate_protocol::category::Category;
use throughgate_protocol::record::{valid_name, DisclosedRecord};
use throughgate_protocol::time::{Date, Timestamp};

use crate::render::humanize;

/// The declared table, as written in `record_kinds.toml`.
const TABLE: &str = include_str!("record_kinds.toml");

/// Which of a person's records of one kind the summary shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// Every record.
    #[default]
    All,
    /// The earliest on or after the day of assembly, else the latest.
    Next,
    /// The most recent record only.
    Latest,
}

/// One record kind as people read it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindEntry {
    /// What the record is called.
    pub label: String,
    /// The summary's facts: parts naming fields as `{field}`.
    #[serde(default)]
    pub summary: Vec<String>,
    /// Which records of the kind the summary shows.
    #[serde(default)]
    pub pick: Pick,
}

/// The whole table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vocabulary {
    /// Record kinds.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindEntry>,
    /// Field labels.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Per field, code to label.
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, String>>,
}

impl Vocabulary {
    /// Parses a table.
    pub fn parse(text: &str) -> Result<Vocabulary, toml::de::Error> {
        toml::from_str(text)
    }

    /// The label of a record kind.
    pub fn kind_label(&self, kind: &str) -> String {
        self.kinds
            .get(kind)
            .map_or_else(|| humanize(kind), |k| k.label.clone())
    }

    /// The label of a field.
    pub fn field_label(&self, field: &str) -> String {
        self.fields
            .get(field)
            .cloned()
            .unwrap_or_else(|| humanize(field))
    }

    /// A field's value as people read it: dates as UK dates, codes by their label (or, for a
    /// code not in the table, with spaces and a capital); other text as it is.
    pub fn value(&self, field: &str, value: &str) -> String {
        if let Some(label) = self.values.get(field).and_then(|m| m.get(value)) {
            return label.clone();
        }
        if let Some(d) = uk_date_str(value) {
            return d;
        }
        if is_code(value) {
            return humanize(value);
        }
        value.to_owned()
    }

    /// Fills one summary part from a record's fields; `None` when a field it names is absent.
    fn fill(&self, part: &str, fields: &BTreeMap<String, String>) -> Option<String> {
        let mut out = String::new();
        let mut rest = part;
        while let Some(open) = rest.find('{') {
            out.push_str(rest.get(..open)?);
            let after = rest.get(open + 1..)?;
            let close = after.find('}')?;
            let name = after.get(..close)?;
            out.push_str(&self.value(name, fields.get(name)?));
            rest = after.get(close + 1..)?;
        }
        out.push_str(rest);
        Some(out.trim().to_owned())
    }

    /// The facts of one record for the summary; `None` when its kind is declared detail-only.
    pub fn facts(&self, rec: &DisclosedRecord) -> Option<String> {
        match self.kinds.get(&rec.kind) {
            Some(k) if k.summary.is_empty() => None,
            Some(k) => {
                let parts: Vec<String> = k
                    .summary
                    .iter()
                    .filter_map(|p| self.fill(p, &rec.fields))
                    .filter(|p| !p.is_empty())
                    .collect();
                Some(parts.join(", "))
            }
            // A kind the table does not know: its first three fields, labelled.
            None => Some(
                rec.fields
                    .iter()
                    .take(3)
                    .map(|(f, v)| format!("{}: {}", self.field_label(f), self.value(f, v)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }
    }

    fn pick(&self, kind: &str) -> Pick {
        self.kinds.get(kind).map(|k| k.pick).unwrap_or_default()
    }
}

/// The table built into `tg` (checked by a test; an unreadable table gives plain fallbacks).
pub fn vocabulary() -> &'static Vocabulary {
    static V: OnceLock<Vocabulary> = OnceLock::new();
    V.get_or_init(|| Vocabulary::parse(TABLE).unwrap_or_default())
}

/// Whether a value is a code (a lowercase snake_case word) rather than text.
pub fn is_code(v: &str) -> bool {
    valid_name(v) && v.bytes().any(|b| b.is_ascii_lowercase())
}

const MONTHS: [&str; 12] = [
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

/// `2026-12-07` -> `7 December 2026`; `None` when `s` is not such a date.
pub fn uk_date_str(s: &str) -> Option<String> {
    if s.len() != 10 {
        return None;
    }
    let d = Date::parse(s).ok()?;
    let text = d.to_string();
    let month: usize = text.get(5..7)?.parse().ok()?;
    let day: u32 = text.get(8..10)?.parse().ok()?;
    Some(format!(
        "{day} {} {}",
        MONTHS.get(month.checked_sub(1)?)?,
        d.year()
    ))
}

/// A date as people write it in the UK.
pub fn uk_date(d: Date) -> String {
    let s = d.to_string();
    uk_date_str(&s).unwrap_or(s)
}

/// How fresh a holder's disclosed records were, in words, when it read them from the agency's
/// own system at the time of asking (`None` when it answered from its imported records).
pub fn records_age_words(resp: &throughgate_protocol::messages::Response) -> Option<String> {
    match resp.records_age_secs()? {
        0 => Some("read from the agency's own system when asked".to_owned()),
        1 => Some("records read from the agency's own system 1 second earlier".to_owned()),
        n => Some(format!(
            "records read from the agency's own system {n} seconds earlier"
        )),
    }
}

/// An instant as people in the UK read it, in UK time with its zone named:
/// `7 December 2026 at 21:05 GMT`, `7 July 2026 at 22:05 BST`. (Machine-readable output keeps
/// UTC.)
pub fn uk_time(t: Timestamp) -> String {
    let local = i64::try_from(t.0)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .zip(jiff::tz::TimeZone::get("Europe/London").ok())
        .map(|(ts, tz)| ts.to_zoned_datetime(tz));
    let Some(z) = local else {
        return t.to_rfc3339();
    };
    let month = usize::try_from(z.month())
        .ok()
        .and_then(|m| m.checked_sub(1))
        .and_then(|m| MONTHS.get(m));
    let zone = z
        .time_zone()
        .to_offset_info(z.timestamp())
        .abbreviation()
        .to_owned();
    match month {
        Some(month) => format!(
            "{} {month} {} at {:02}:{:02} {zone}",
            z.day(),
            z.year(),
            z.hour(),
            z.minute()
        ),
        None => t.to_rfc3339(),
    }
}

/// How a pathway came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathwayState {
    /// Some agency shared records.
    Shared,
    /// Asked, and no agency shared a record.
    NothingShared,
    /// No agency was asked about it.
    NotAsked,
}

impl PathwayState {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            PathwayState::Shared => "shared",
            PathwayState::NothingShared => "nothing shared",
            PathwayState::NotAsked => "not asked",
        }
    }
}

/// One fact in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    /// The record kind (code).
    pub kind: String,
    /// Its label.
    pub label: String,
    /// The facts, in plain words.
    pub text: String,
    /// The source agency's id.
    pub source: String,
    /// The source agency's name.
    pub source_name: String,
    /// The date the record is about.
    pub about: String,
}

/// One pathway's part of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct PathwaySummary {
    /// The pathway (code).
    pub pathway: Category,
    /// Its heading.
    pub title: &'static str,
    /// How it came out.
    pub state: PathwayState,
    /// What a caseworker acts on.
    pub facts: Vec<Fact>,
    /// Agencies asked about this pathway whose part is missing (no answer, refused), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl PathwaySummary {
    /// Why there are no facts, in words: "nothing shared", "not asked", and who did not answer.
    pub fn empty_words(&self) -> String {
        if self.missing.is_empty() {
            self.state.words().to_owned()
        } else {
            format!(
                "{}; no answer from {}",
                self.state.words(),
                self.missing.join(", ")
            )
        }
    }
}

/// A disclosed record with the agency it came from (id, name).
pub type Sourced<'a> = (&'a str, &'a str, &'a DisclosedRecord);

/// The summary: every pathway in display order, with the facts of the records shared under
/// it (by the declared table), or why there are none. `asked` are the categories any agency
/// was asked for; `today` decides which appointment is the next one.
pub fn summarise(
    voc: &Vocabulary,
    records: &[Sourced<'_>],
    asked: &BTreeSet<Category>,
    today: Date,
) -> Vec<PathwaySummary> {
    Category::ALL
        .iter()
        .map(|&cat| {
            let in_cat: Vec<&Sourced<'_>> = records
                .iter()
                .filter(|(_, _, r)| r.category == cat)
                .collect();
            let mut facts = Vec::new();
            // Kinds in the order they first appear.
            let mut kinds: Vec<(&str, &str)> = Vec::new();
            for (a, _, r) in &in_cat {
                if !kinds.contains(&(a, r.kind.as_str())) {
                    kinds.push((a, r.kind.as_str()));
                }
            }
            for (agency, kind) in kinds {
                let mut of_kind: Vec<&&Sourced<'_>> = in_cat
                    .iter()
                    .filter(|(a, _, r)| *a == agency && r.kind == kind)
                    .collect();
                of_kind.sort_by_key(|(_, _, r)| r.about);
                let chosen: Vec<&&Sourced<'_>> = match voc.pick(kind) {
                    Pick::All => of_kind,
                    Pick::Latest => of_kind.last().copied().into_iter().collect(),
                    Pick::Next => of_kind
                        .iter()
                        .find(|(_, _, r)| r.about >= today)
                        .or(of_kind.last())
                        .copied()
                        .into_iter()
                        .collect(),
                };
                for (a, name, r) in chosen {
                    if let Some(text) = voc.facts(r) {
                        facts.push(Fact {
                            kind: r.kind.clone(),
                            label: voc.kind_label(&r.kind),
                            text,
                            source: (*a).to_owned(),
                            source_name: (*name).to_owned(),
                            about: r.about.to_string(),
                        });
                    }
                }
            }
            let state = if !in_cat.is_empty() {
                PathwayState::Shared
            } else if asked.contains(&cat) {
                PathwayState::NothingShared
            } else {
                PathwayState::NotAsked
            };
            PathwaySummary {
                pathway: cat,
                title: cat.title(),
                state,
                facts,
                missing: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use throughgate_protocol::ids::RecordId;

    #[test]
    fn the_passport_gives_the_age_of_records_read_from_a_live_source() {
        use throughgate_protocol::messages::{Outcome, Response, Withheld};
        let mut r = Response {
            query_id: throughgate_protocol::ids::QueryId::random(),
            query_digest: [0; 32],
            holder: throughgate_protocol::ids::AgencyId::new("nhs-wy").unwrap(),
            passport_id: throughgate_protocol::ids::PassportId::random(),
            outcome: Outcome::Disclosed,
            reason: None,
            detail: None,
            consent_id: None,
            records: Vec::new(),
            withheld: Withheld::default(),
            as_of: Timestamp(1_800_000_100),
            receipt: throughgate_protocol::audit::Receipt {
                entry: Vec::new(),
                leaf_index: 0,
                checkpoint: String::new(),
                proof: Vec::new(),
            },
            witnessed: None,
            requester_view: None,
            records_read_at: None,
        };
        assert_eq!(records_age_words(&r), None);
        r.records_read_at = Some(r.as_of);
        assert_eq!(
            records_age_words(&r).as_deref(),
            Some("read from the agency's own system when asked")
        );
        r.records_read_at = Some(Timestamp(1_800_000_058));
        assert_eq!(
            records_age_words(&r).as_deref(),
            Some("records read from the agency's own system 42 seconds earlier")
        );
    }

    fn rec(cat: Category, kind: &str, about: &str, fields: &[(&str, &str)]) -> DisclosedRecord {
        DisclosedRecord {
            record_id: RecordId::new("r1").unwrap(),
            category: cat,
            kind: kind.into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            about: Date::parse(about).unwrap(),
            recorded_at: Timestamp(0),
            source_system: "X".into(),
        }
    }

    #[test]
    fn the_built_in_table_parses_and_labels_the_issues_examples() {
        let v = Vocabulary::parse(TABLE).unwrap();
        assert!(v.kinds.len() >= 25);
        assert_eq!(v.value("address_type", "private_rented"), "Private rented");
        assert_eq!(v.value("level", "level_2"), "Level 2");
        assert_eq!(
            v.value("release_type", "conditional_release"),
            "Conditional release"
        );
        assert_eq!(v.value("anything", "some_new_code"), "Some new code");
        assert_eq!(
            v.value("practice", "Calverdale Surgery"),
            "Calverdale Surgery"
        );
        assert_eq!(v.value("claim_date", "2026-12-07"), "7 December 2026");
    }

    #[test]
    fn every_kind_and_code_in_the_demo_data_is_declared() {
        // Every record kind and coded value the synthetic agencies hold has its label in the
        // table, so the demo's passport shows no code and no fallback.
        use throughgate_testkit::agencies::demo_agencies;
        use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};
        let config = SynthConfig::new(2026, 200, Date::parse("2026-12-07").unwrap());
        let population = generate_population(&config);
        let v = vocabulary();
        let mut missing = BTreeSet::new();
        for a in demo_agencies() {
            for r in records_for(a.id, &population, &config).unwrap() {
                if !v.kinds.contains_key(&r.kind) {
                    missing.insert(format!("kind {}", r.kind));
                }
                for (f, val) in &r.fields {
                    let coded = is_code(val) && !val.bytes().all(|b| b.is_ascii_digit());
                    if coded && !v.values.get(f).is_some_and(|m| m.contains_key(val)) {
                        missing.insert(format!("{f} = {val}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in record_kinds.toml: {missing:?}");
    }

    #[test]
    fn uk_dates_are_written_as_people_write_them() {
        assert_eq!(
            uk_date_str("2026-12-07").as_deref(),
            Some("7 December 2026")
        );
        assert_eq!(
            uk_date_str("2027-01-31").as_deref(),
            Some("31 January 2027")
        );
        assert_eq!(uk_date_str("07/12/2026"), None);
        assert_eq!(uk_date_str("Leeds"), None);
        let t = Date::parse("2026-12-07")
            .unwrap()
            .start_timestamp()
            .plus_secs(3600 + 300);
        assert_eq!(uk_time(t), "7 December 2026 at 01:05 GMT");
    }

    #[test]
    fn times_are_shown_in_uk_time_across_the_clock_changes() {
        let at = |s: &str| Timestamp(s.parse::<jiff::Timestamp>().unwrap().as_second() as u64);
        // British Summer Time: one hour ahead of UTC, from 01:00 UTC on the last Sunday of
        // March to 01:00 UTC on the last Sunday of October (29 March, 25 October in 2026).
        assert_eq!(
            uk_time(at("2026-07-07T21:05:00Z")),
            "7 July 2026 at 22:05 BST"
        );
        assert_eq!(
            uk_time(at("2026-03-29T00:59:00Z")),
            "29 March 2026 at 00:59 GMT"
        );
        assert_eq!(
            uk_time(at("2026-03-29T01:00:00Z")),
            "29 March 2026 at 02:00 BST"
        );
        assert_eq!(
            uk_time(at("2026-10-25T00:59:00Z")),
            "25 October 2026 at 01:59 BST"
        );
        assert_eq!(
            uk_time(at("2026-10-25T01:00:00Z")),
            "25 October 2026 at 01:00 GMT"
        );
        // Late in the evening in summer is the next day in the UK.
        assert_eq!(
            uk_time(at("2026-06-30T23:30:00Z")),
            "1 July 2026 at 00:30 BST"
        );
    }

    #[test]
    fn a_new_record_kind_shows_in_its_pathway_without_code_changes() {
        // Declared in data only: a table with one new kind.
        let table = r#"
[kinds.food_bank_referral]
label = "Food bank referral"
summary = ["{food_bank}", "from {start_on}"]
[values.food_bank]
"#;
        let v = Vocabulary::parse(table).unwrap();
        let r = rec(
            Category::FinanceAndId,
            "food_bank_referral",
            "2026-12-08",
            &[("food_bank", "Leeds North"), ("start_on", "2026-12-08")],
        );
        let asked: BTreeSet<Category> = [Category::FinanceAndId].into_iter().collect();
        let s = summarise(
            &v,
            &[("lcc", "Leeds City Council", &r)],
            &asked,
            Date::parse("2026-12-07").unwrap(),
        );
        let fin = s
            .iter()
            .find(|p| p.pathway == Category::FinanceAndId)
            .unwrap();
        assert_eq!(fin.state, PathwayState::Shared);
        assert_eq!(fin.facts[0].label, "Food bank referral");
        assert_eq!(fin.facts[0].text, "Leeds North, from 8 December 2026");
        assert_eq!(fin.facts[0].source_name, "Leeds City Council");
        // And a kind the table has never heard of still shows, labelled from its name.
        let unknown = rec(
            Category::Health,
            "dental_registration",
            "2026-12-08",
            &[("practice_status", "waiting_list")],
        );
        let s = summarise(
            &v,
            &[("nhs", "NHS", &unknown)],
            &asked,
            Date::parse("2026-12-07").unwrap(),
        );
        let health = s.iter().find(|p| p.pathway == Category::Health).unwrap();
        assert_eq!(health.facts[0].label, "Dental registration");
        assert_eq!(health.facts[0].text, "Practice status: Waiting list");
        // Empty pathways say why.
        let housing = s
            .iter()
            .find(|p| p.pathway == Category::Accommodation)
            .unwrap();
        assert_eq!(housing.state, PathwayState::NotAsked);
        let fin = s
            .iter()
            .find(|p| p.pathway == Category::FinanceAndId)
            .unwrap();
        assert_eq!(fin.state, PathwayState::NothingShared);
        assert!(fin.facts.is_empty());
    }

    #[test]
    fn next_picks_the_first_appointment_from_today() {
        let v = vocabulary();
        let a = |d: &str| {
            rec(
                Category::Supervision,
                "appointment",
                d,
                &[("kind", "home_visit"), ("date", d), ("time", "10:00")],
            )
        };
        let (past, next, later) = (a("2026-11-01"), a("2026-12-09"), a("2027-01-05"));
        let s = summarise(
            v,
            &[("p", "P", &later), ("p", "P", &past), ("p", "P", &next)],
            &BTreeSet::new(),
            Date::parse("2026-12-07").unwrap(),
        );
        let sup = s
            .iter()
            .find(|p| p.pathway == Category::Supervision)
            .unwrap();
        assert_eq!(sup.facts.len(), 1);
        assert_eq!(sup.facts[0].text, "Home visit, 9 December 2026 10:00");
    }
}
