//! Record categories (the seven HMPPS resettlement pathways plus `supervision` and `risk`) and
//! the purposes a query or consent may name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A category of record. The wire names are the snake_case of the HMPPS pathway names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Where the person will live: release address, tenancy, homelessness duty.
    Accommodation,
    /// Offending-behaviour programmes and related work.
    AttitudesThinkingAndBehaviour,
    /// Family, children and community ties.
    ChildrenFamiliesAndCommunity,
    /// Substance-misuse treatment and its continuity.
    DrugsAndAlcohol,
    /// Courses, qualifications, work readiness, Jobcentre appointments.
    EducationSkillsAndWork,
    /// ID documents, bank account, benefits.
    FinanceAndId,
    /// GP registration, prescriptions, mental-health needs.
    Health,
    /// Licence conditions, offender manager, appointments.
    Supervision,
    /// Risk of serious harm and MAPPA level. Restricted: never released for resettlement to a
    /// non-justice agency.
    Risk,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 9] = [
        Category::FinanceAndId,
        Category::Accommodation,
        Category::Health,
        Category::DrugsAndAlcohol,
        Category::EducationSkillsAndWork,
        Category::ChildrenFamiliesAndCommunity,
        Category::AttitudesThinkingAndBehaviour,
        Category::Supervision,
        Category::Risk,
    ];

    /// The wire name, e.g. `finance_and_id`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Accommodation => "accommodation",
            Category::AttitudesThinkingAndBehaviour => "attitudes_thinking_and_behaviour",
            Category::ChildrenFamiliesAndCommunity => "children_families_and_community",
            Category::DrugsAndAlcohol => "drugs_and_alcohol",
            Category::EducationSkillsAndWork => "education_skills_and_work",
            Category::FinanceAndId => "finance_and_id",
            Category::Health => "health",
            Category::Supervision => "supervision",
            Category::Risk => "risk",
        }
    }

    /// A heading for people, e.g. "Finance and ID".
    pub fn title(self) -> &'static str {
        match self {
            Category::Accommodation => "Accommodation",
            Category::AttitudesThinkingAndBehaviour => "Attitudes, thinking and behaviour",
            Category::ChildrenFamiliesAndCommunity => "Children, families and community",
            Category::DrugsAndAlcohol => "Drugs and alcohol",
            Category::EducationSkillsAndWork => "Education, skills and work",
            Category::FinanceAndId => "Finance and ID",
            Category::Health => "Health",
            Category::Supervision => "Supervision",
            Category::Risk => "Risk",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown category or purpose name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of: {expected}")]
pub struct UnknownName {
    /// "category" or "purpose".
    pub what: &'static str,
    /// The name given.
    pub value: String,
    /// The accepted names, comma separated.
    pub expected: String,
}

impl std::str::FromStr for Category {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "category",
                value: s.to_owned(),
                expected: Category::ALL.map(Category::as_str).join(", "),
            })
    }
}

/// Why data is asked for. Consents and holder policies are per purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Planning and supporting resettlement through the gate.
    Resettlement,
    /// Keeping treatment and care going across release.
    ContinuityOfCare,
    /// Managing risk to the public (justice agencies).
    PublicProtection,
    /// Protecting a child or adult at risk.
    Safeguarding,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [
        Purpose::Resettlement,
        Purpose::ContinuityOfCare,
        Purpose::PublicProtection,
        Purpose::Safeguarding,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Resettlement => "resettlement",
            Purpose::ContinuityOfCare => "continuity_of_care",
            Purpose::PublicProtection => "public_protection",
            Purpose::Safeguarding => "safeguarding",
        }
    }

    /// A one-line description suitable for reading to the person.
    pub fn describe(self) -> &'static str {
        match self {
            Purpose::Resettlement => "to plan and support your resettlement when you leave prison",
            Purpose::ContinuityOfCare => {
                "to keep your health care and treatment going after release"
            }
            Purpose::PublicProtection => "to manage your licence and risk to the public",
            Purpose::Safeguarding => "to protect you or someone else from harm",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Purpose {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "purpose",
                value: s.to_owned(),
                expected: Purpose::ALL.map(Purpose::as_str).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_names_round_trip() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert!("housing".parse::<Category>().is_err());
    }

    #[test]
    fn purpose_names_round_trip() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), p);
        }
        let err = "marketing".parse::<Purpose>().unwrap_err();
        assert!(err.to_string().contains("resettlement"));
    }
}
