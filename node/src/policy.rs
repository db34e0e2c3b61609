//! Minimisation by purpose: each holder's policy (TOML) says, per purpose and requesting agency
//! (or sector), which categories and which fields of which record kinds are released. Anything
//! not listed is never sent. One rule is fixed in code whatever the file says: `risk` is never
//! released for `resettlement` to an agency outside the justice sector.
//!
//! ```toml
//! [[release]]
//! purpose = "resettlement"
//! to = ["sector:justice", "leeds-cc"]   # agency ids, "sector:<name>", or "*"
//! categories = ["finance_and_id"]
//! [release.fields]
//! person_identity = ["given_name", "family_name", "release_date"]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent_check::ConsentScope;
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::manifest::{Member, Sector};
use throughgate_protocol::messages::Withheld;
use throughgate_protocol::record::{valid_name, DisclosedRecord, Record};

/// The largest policy file read.
const MAX_POLICY: u64 = 1024 * 1024;

/// A policy file problem.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys.
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// A rule is invalid.
    #[error("policy rule {rule}: {detail}")]
    Invalid {
        rule: usize,
        /// What is wrong and what to do.
        detail: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    release: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    purpose: Purpose,
    to: Vec<String>,
    categories: Vec<Category>,
    #[serde(default)]
    fields: BTreeMap<String, Vec<String>>,
}

/// Who a rule releases to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Any requester.
    Anyone,
    /// Requesters of this sector.
    Sector(Sector),
    /// This agency.
    Agency(AgencyId),
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Audience::Anyone => f.write_str("*"),
            Audience::Sector(s) => write!(f, "sector:{s}"),
            Audience::Agency(a) => f.write_str(a.as_str()),
        }
    }
}

impl Audience {
    fn parse(s: &str) -> Result<Audience, String> {
        if s == "*" {
            return Ok(Audience::Anyone);
        }
        if let Some(sector) = s.strip_prefix("sector:") {
            let v: Sector = serde_json::from_value(serde_json::Value::String(sector.to_owned()))
                .map_err(|_| format!("unknown sector {sector:?}; expected justice, health, education, local_government or welfare"))?;
            return Ok(Audience::Sector(v));
        }
        AgencyId::new(s)
            .map(Audience::Agency)
            .map_err(|e| e.to_string())
    }

    fn matches(&self, m: &Member) -> bool {
        match self {
            Audience::Anyone => true,
            Audience::Sector(s) => m.sector == *s,
            Audience::Agency(a) => &m.id == a,
        }
    }

    fn may_include_non_justice(&self) -> bool {
        !matches!(self, Audience::Sector(Sector::Justice)) && !matches!(self, Audience::Agency(_))
    }
}

/// One release rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The purpose it applies to.
    pub purpose: Purpose,
    /// Who it releases to.
    pub to: Vec<Audience>,
    /// The categories released.
    pub categories: BTreeSet<Category>,
    /// Per record kind, the fields released.
    pub fields: BTreeMap<String, BTreeSet<String>>,
}

/// A holder's minimisation policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// What a policy releases to one requester for one purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// Categories released.
    pub categories: BTreeSet<Category>,
    /// Per record kind, fields released.
    pub fields: BTreeMap<String, BTreeSet<String>>,
}

/// The fixed rule: is this a release of `risk` for `resettlement` outside justice?
fn forbidden(category: Category, purpose: Purpose, requester: &Member) -> bool {
    category == Category::Risk
        && purpose == Purpose::Resettlement
        && requester.sector != Sector::Justice
}

impl Policy {
    /// Releases nothing.
    pub fn deny_all() -> Policy {
        Policy::default()
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let io = |source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_POLICY {
            return Err(PolicyError::Parse(format!(
                "file is over {MAX_POLICY} bytes"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Policy::parse(&text)
    }

    /// Parses policy text, refusing unknown keys, bad names, and any rule that could release
    /// `risk` for `resettlement` beyond the justice sector.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let mut rules = Vec::new();
        for (i, raw) in file.release.into_iter().enumerate() {
            let n = i + 1;
            let bad = |detail: String| PolicyError::Invalid { rule: n, detail };
            if raw.to.is_empty() {
                return Err(bad(
                    "`to` is empty; name agencies, `sector:<name>` or `*`".into()
                ));
            }
            let to = raw
                .to
                .iter()
                .map(|s| Audience::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let categories: BTreeSet<Category> = raw.categories.into_iter().collect();
            if categories.contains(&Category::Risk)
                && raw.purpose == Purpose::Resettlement
                && to.iter().any(Audience::may_include_non_justice)
            {
                return Err(bad(
                    "releases `risk` for `resettlement` to an audience that may include non-justice agencies; \
                     risk is only ever released to justice agencies (use `sector:justice` or name justice agencies)"
                        .into(),
                ));
            }
            let mut fields = BTreeMap::new();
            for (kind, names) in raw.fields {
                if !valid_name(&kind) {
                    return Err(bad(format!(
                        "record kind {kind:?} is not a snake_case name"
                    )));
                }
                if let Some(f) = names.iter().find(|f| !valid_name(f)) {
                    return Err(bad(format!(
                        "field {f:?} of {kind} is not a snake_case name"
                    )));
                }
                fields.insert(kind, names.into_iter().collect());
            }
            rules.push(Rule {
                purpose: raw.purpose,
                to,
                categories,
                fields,
            });
        }
        Ok(Policy { rules })
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What is released to `requester` for `purpose` (union of matching rules, fixed rule
    /// applied).
    pub fn release_for(&self, purpose: Purpose, requester: &Member) -> Release {
        let mut r = Release::default();
        for rule in self
            .rules
            .iter()
            .filter(|x| x.purpose == purpose && x.to.iter().any(|a| a.matches(requester)))
        {
            r.categories.extend(
                rule.categories
                    .iter()
                    .copied()
                    .filter(|c| !forbidden(*c, purpose, requester)),
            );
            for (kind, f) in &rule.fields {
                r.fields
                    .entry(kind.clone())
                    .or_default()
                    .extend(f.iter().cloned());
            }
        }
        r
    }
}

impl Release {
    /// Minimises `records` (one subject's) for a query asking `scope.categories`: keeps records
    /// in released categories, of listed kinds, inside the consent's period, with only listed
    /// fields. Reports what was held back by name.
    pub fn minimise(
        &self,
        records: &[Record],
        scope: &ConsentScope,
    ) -> (Vec<DisclosedRecord>, Withheld) {
        let mut withheld = Withheld::default();
        let mut withheld_fields = BTreeSet::new();
        for c in &scope.categories {
            if !self.categories.contains(c) {
                withheld.categories.push(*c);
            }
        }
        let mut out = Vec::new();
        for r in records {
            if !scope.categories.contains(&r.category) || !self.categories.contains(&r.category) {
                continue;
            }
            if !scope.covers_date(r.about) {
                withheld.records_out_of_period = withheld.records_out_of_period.saturating_add(1);
                continue;
            }
            let Some(allowed) = self.fields.get(&r.kind) else {
                withheld_fields.insert(format!("{}.*", r.kind));
                continue;
            };
            for f in r.fields.keys().filter(|f| !allowed.contains(*f)) {
                withheld_fields.insert(format!("{}.{f}", r.kind));
            }
            out.push(r.disclose(|f| allowed.contains(f)));
        }
        withheld.fields = withheld_fields.into_iter().collect();
        (out, withheld)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throughgate_protocol::ids::RecordId;
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::manifest::MemberRole;
    use throughgate_protocol::time::{Date, Timestamp};

    fn member(id: &str, sector: Sector) -> Member {
        Member {
            id: AgencyId::new(id).unwrap(),
            name: id.into(),
            sector,
            addresses: vec!["127.0.0.1:1".into()],
            node_keys: vec![SecretKey::generate().public()],
            categories: vec![],
            id_scheme: throughgate_protocol::identifiers::IdScheme::Crn,
            roles: vec![MemberRole::Requester],
            retired_keys: vec![],
        }
    }

    fn record(kind: &str, category: Category, fields: &[(&str, &str)], about: &str) -> Record {
        Record {
            record_id: RecordId::new(format!("r-{kind}")).unwrap(),
            subject: "X123456".into(),
            category,
            kind: kind.into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            about: Date::parse(about).unwrap(),
            recorded_at: Timestamp(0),
            source_system: "nDelius".into(),
        }
    }

    const POLICY: &str = r#"
[[release]]
purpose = "resettlement"
to = ["*"]
categories = ["supervision", "accommodation"]
[release.fields]
appointment = ["date", "location"]
release_address = ["postcode"]

[[release]]
purpose = "resettlement"
to = ["sector:justice"]
categories = ["risk"]
[release.fields]
risk_assessment = ["rosh_level"]
"#;

    #[test]
    fn releases_only_listed_fields_and_reports_the_rest() {
        let p = Policy::parse(POLICY).unwrap();
        let council = member("leeds-cc", Sector::LocalGovernment);
        let rel = p.release_for(Purpose::Resettlement, &council);
        let records = vec![
            record(
                "appointment",
                Category::Supervision,
                &[("date", "d"), ("location", "l"), ("officer_phone", "p")],
                "2026-01-01",
            ),
            record(
                "licence_condition",
                Category::Supervision,
                &[("text", "t")],
                "2026-01-01",
            ),
            record(
                "risk_assessment",
                Category::Risk,
                &[("rosh_level", "high")],
                "2026-01-01",
            ),
        ];
        let scope = ConsentScope {
            categories: vec![Category::Supervision, Category::Risk],
            records_from: None,
            records_until: None,
        };
        let (out, withheld) = rel.minimise(&records, &scope);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].fields.keys().collect::<Vec<_>>(),
            vec!["date", "location"]
        );
        assert_eq!(withheld.categories, vec![Category::Risk]);
        assert_eq!(
            withheld.fields,
            vec!["appointment.officer_phone", "licence_condition.*"]
        );
    }

    #[test]
    fn risk_reaches_justice_only() {
        let p = Policy::parse(POLICY).unwrap();
        let prison = member("hmp-leeds", Sector::Justice);
        assert!(p
            .release_for(Purpose::Resettlement, &prison)
            .categories
            .contains(&Category::Risk));
        let dwp = member("dwp", Sector::Welfare);
        assert!(!p
            .release_for(Purpose::Resettlement, &dwp)
            .categories
            .contains(&Category::Risk));
    }

    #[test]
    fn a_policy_releasing_risk_widely_is_refused() {
        let text = r#"
[[release]]
purpose = "resettlement"
to = ["*"]
categories = ["risk"]
"#;
        let err = Policy::parse(text).unwrap_err().to_string();
        assert!(err.contains("risk"), "{err}");
        // Even if a named agency is not justice, the runtime rule still holds.
        let named = Policy::parse(&text.replace("[\"*\"]", "[\"dwp\"]")).unwrap();
        let dwp = member("dwp", Sector::Welfare);
        assert!(named
            .release_for(Purpose::Resettlement, &dwp)
            .categories
            .is_empty());
    }

    #[test]
    fn out_of_period_records_are_counted_not_sent() {
        let p = Policy::parse(POLICY).unwrap();
        let rel = p.release_for(Purpose::Resettlement, &member("x", Sector::Justice));
        let records = vec![record(
            "appointment",
            Category::Supervision,
            &[("date", "d")],
            "2020-01-01",
        )];
        let scope = ConsentScope {
            categories: vec![Category::Supervision],
            records_from: Some(Date::parse("2025-01-01").unwrap()),
            records_until: None,
        };
        let (out, withheld) = rel.minimise(&records, &scope);
        assert!(out.is_empty());
        assert_eq!(withheld.records_out_of_period, 1);
    }

    #[test]
    fn unknown_keys_and_bad_names_are_errors() {
        assert!(Policy::parse(
            "[[release]]\npurpose = \"resettlement\"\nto=[\"*\"]\ncategories=[]\nfieldz={}\n"
        )
        .is_err());
        assert!(
            Policy::parse("[[release]]\npurpose = \"marketing\"\nto=[\"*\"]\ncategories=[]\n")
                .is_err()
        );
        assert!(Policy::parse(
            "[[release]]\npurpose = \"resettlement\"\nto=[\"sector:police\"]\ncategories=[]\n"
        )
        .is_err());
    }
}
