//! The six agencies of the demo federation, as data: who they are, what they hold, how they
//! identify a person and which of their own systems the records come from.
//!
//! Real deployments have dozens of agencies (one per council, per NHS trust, per college); the
//! demo, the tests and the benchmarks use these six together with the synthetic-data generator
//! in [`crate::synth`].

use throughgate_protocol::category::Category;
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::{AgencyId, IdError};
use throughgate_protocol::manifest::Sector;

/// What kind of body a demo agency is; decides which records the generator makes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgencyKind {
    /// A prison (`hmp-leeds`).
    Prison,
    /// A probation region (`probation-yorks`).
    Probation,
    /// An NHS body (`nhs-wy`).
    Health,
    /// A college (`leeds-college`).
    Education,
    /// A council (`leeds-cc`).
    Council,
    /// The Department for Work and Pensions (`dwp`).
    Dwp,
}

/// One demo agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoAgency {
    /// Federation-wide id, e.g. `hmp-leeds` (a valid [`AgencyId`]).
    pub id: &'static str,
    /// Display name, e.g. "HMP Leeds".
    pub name: &'static str,
    /// Short prefix for the record ids the generator makes, e.g. `hmp`.
    pub short: &'static str,
    /// What kind of body it is.
    pub kind: AgencyKind,
    /// The sector it belongs to.
    pub sector: Sector,
    /// The categories of record it holds.
    pub categories: &'static [Category],
    /// The identifier it knows a person by.
    pub scheme: IdScheme,
    /// The name of its own system the records come from, e.g. `NOMIS`.
    pub source_system: &'static str,
}

impl DemoAgency {
    /// The agency's id as a validated [`AgencyId`].
    pub fn agency_id(&self) -> Result<AgencyId, IdError> {
        AgencyId::new(self.id)
    }

    /// Whether the agency holds records of `category`.
    pub fn holds(&self, category: Category) -> bool {
        self.categories.contains(&category)
    }
}

/// The six demo agencies, in the order the brief lists them.
pub static DEMO_AGENCIES: [DemoAgency; 6] = [
    DemoAgency {
        id: "hmp-leeds",
        name: "HMP Leeds",
        short: "hmp",
        kind: AgencyKind::Prison,
        sector: Sector::Justice,
        categories: &[
            Category::FinanceAndId,
            Category::EducationSkillsAndWork,
            Category::AttitudesThinkingAndBehaviour,
        ],
        scheme: IdScheme::NomsNumber,
        source_system: "NOMIS",
    },
    DemoAgency {
        id: "probation-yorks",
        name: "Yorkshire and the Humber Probation",
        short: "prb",
        kind: AgencyKind::Probation,
        sector: Sector::Justice,
        categories: &[
            Category::Supervision,
            Category::Accommodation,
            Category::Risk,
        ],
        scheme: IdScheme::Crn,
        source_system: "nDelius",
    },
    DemoAgency {
        id: "nhs-wy",
        name: "NHS West Yorkshire",
        short: "nhs",
        kind: AgencyKind::Health,
        sector: Sector::Health,
        categories: &[Category::Health, Category::DrugsAndAlcohol],
        scheme: IdScheme::NhsNumber,
        source_system: "SystmOne",
    },
    DemoAgency {
        id: "leeds-college",
        name: "Leeds City College",
        short: "col",
        kind: AgencyKind::Education,
        sector: Sector::Education,
        categories: &[Category::EducationSkillsAndWork],
        scheme: IdScheme::LearnerNumber,
        source_system: "College MIS",
    },
    DemoAgency {
        id: "leeds-cc",
        name: "Leeds City Council",
        short: "lcc",
        kind: AgencyKind::Council,
        sector: Sector::LocalGovernment,
        categories: &[
            Category::Accommodation,
            Category::ChildrenFamiliesAndCommunity,
        ],
        scheme: IdScheme::CouncilRef,
        source_system: "Council Housing System",
    },
    DemoAgency {
        id: "dwp",
        name: "Department for Work and Pensions",
        short: "dwp",
        kind: AgencyKind::Dwp,
        sector: Sector::Welfare,
        categories: &[Category::FinanceAndId, Category::EducationSkillsAndWork],
        scheme: IdScheme::NiNumber,
        source_system: "DWP CIS",
    },
];

/// The six demo agencies.
pub fn demo_agencies() -> &'static [DemoAgency] {
    &DEMO_AGENCIES
}

/// The demo agency with this id, if there is one.
pub fn demo_agency(id: &str) -> Option<&'static DemoAgency> {
    DEMO_AGENCIES.iter().find(|a| a.id == id)
}

/// The demo agency that identifies people by `scheme` (each scheme belongs to exactly one).
pub fn demo_agency_for_scheme(scheme: IdScheme) -> Option<&'static DemoAgency> {
    DEMO_AGENCIES.iter().find(|a| a.scheme == scheme)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use throughgate_protocol::record::{valid_name, MAX_NAME_LEN};

    use super::*;

    #[test]
    fn ids_names_and_schemes_are_valid_and_distinct() {
        let agencies = demo_agencies();
        assert_eq!(agencies.len(), 6);
        let mut ids = HashSet::new();
        let mut shorts = HashSet::new();
        let mut schemes = HashSet::new();
        for a in agencies {
            assert_eq!(a.agency_id().unwrap().as_str(), a.id);
            assert!(ids.insert(a.id));
            assert!(shorts.insert(a.short));
            assert!(schemes.insert(a.scheme));
            assert!(!a.categories.is_empty());
            assert!(!a.source_system.is_empty() && a.source_system.len() <= MAX_NAME_LEN);
            assert!(valid_name(a.short));
            assert_eq!(demo_agency(a.id), Some(a));
            assert_eq!(demo_agency_for_scheme(a.scheme), Some(a));
        }
        assert_eq!(schemes.len(), IdScheme::ALL.len());
        assert!(demo_agency("nowhere").is_none());
    }

    #[test]
    fn holdings_match_the_brief() {
        let prison = demo_agency("hmp-leeds").unwrap();
        assert!(prison.holds(Category::FinanceAndId));
        assert!(!prison.holds(Category::Risk));
        let probation = demo_agency("probation-yorks").unwrap();
        assert!(probation.holds(Category::Risk));
        assert_eq!(probation.scheme, IdScheme::Crn);
        let dwp = demo_agency("dwp").unwrap();
        assert_eq!(dwp.sector, Sector::Welfare);
        assert_eq!(dwp.scheme, IdScheme::NiNumber);
    }
}
