//! People's identifiers at each holder (NHS number, National Insurance number, NOMS number,
//! CRN, learner number, council reference): normalisation, validation, and the salted hash
//! commitment that the shared consent artefact carries instead of the identifier itself.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::AgencyId;

/// The kinds of identifier agencies use for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdScheme {
    /// Prison: NOMS number, e.g. `A1234BC`.
    NomsNumber,
    /// Probation: case reference number, e.g. `X123456`.
    Crn,
    /// NHS number: 10 digits, the last a mod-11 check digit.
    NhsNumber,
    /// DWP: National Insurance number, e.g. `AB123456C`.
    NiNumber,
    /// Education: unique learner number, 10 digits.
    LearnerNumber,
    /// Council: the council's own person reference, e.g. `LCC-0012345`.
    CouncilRef,
}

impl IdScheme {
    /// Every scheme.
    pub const ALL: [IdScheme; 6] = [
        IdScheme::NomsNumber,
        IdScheme::Crn,
        IdScheme::NhsNumber,
        IdScheme::NiNumber,
        IdScheme::LearnerNumber,
        IdScheme::CouncilRef,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdScheme::NomsNumber => "noms_number",
            IdScheme::Crn => "crn",
            IdScheme::NhsNumber => "nhs_number",
            IdScheme::NiNumber => "ni_number",
            IdScheme::LearnerNumber => "learner_number",
            IdScheme::CouncilRef => "council_ref",
        }
    }

    /// A readable name.
    pub fn title(self) -> &'static str {
        match self {
            IdScheme::NomsNumber => "NOMS number",
            IdScheme::Crn => "CRN",
            IdScheme::NhsNumber => "NHS number",
            IdScheme::NiNumber => "National Insurance number",
            IdScheme::LearnerNumber => "unique learner number",
            IdScheme::CouncilRef => "council reference",
        }
    }

    fn example(self) -> &'static str {
        match self {
            IdScheme::NomsNumber => "A1234BC",
            IdScheme::Crn => "X123456",
            IdScheme::NhsNumber => "943 476 5919",
            IdScheme::NiNumber => "AB 12 34 56 C",
            IdScheme::LearnerNumber => "1234567890",
            IdScheme::CouncilRef => "LCC-0012345",
        }
    }
}

impl fmt::Display for IdScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IdScheme {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, IdentifierError> {
        IdScheme::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| IdentifierError::UnknownScheme(s.chars().take(40).collect()))
    }
}

/// Why an identifier is not valid. Never carries the value itself: identifiers are personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// Not one of the known schemes.
    #[error("unknown identifier scheme {0:?}; expected one of noms_number, crn, nhs_number, ni_number, learner_number, council_ref")]
    UnknownScheme(String),
    /// The value does not have the scheme's shape.
    #[error("not a valid {} (expected something like {})", .0.title(), .0.example())]
    Shape(IdScheme),
    /// An NHS number whose check digit is wrong.
    #[error("NHS number check digit does not match (mistyped?)")]
    NhsCheckDigit,
}

/// A person's identifier at one holder, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectIdentifier {
    /// The scheme.
    pub scheme: IdScheme,
    /// The normalised value (no spaces or hyphens except in council references; upper case).
    pub value: String,
}

impl SubjectIdentifier {
    /// Normalises and validates `raw` as an identifier of `scheme`.
    pub fn parse(scheme: IdScheme, raw: &str) -> Result<SubjectIdentifier, IdentifierError> {
        let value = normalise(scheme, raw)?;
        Ok(SubjectIdentifier { scheme, value })
    }

    /// Re-validates a decoded identifier (values off the wire are not trusted).
    pub fn validate(&self) -> Result<(), IdentifierError> {
        let again = normalise(self.scheme, &self.value)?;
        if again == self.value {
            Ok(())
        } else {
            Err(IdentifierError::Shape(self.scheme))
        }
    }
}

/// Normalises an identifier: upper case, separators removed, shape and check digits verified.
pub fn normalise(scheme: IdScheme, raw: &str) -> Result<String, IdentifierError> {
    if raw.len() > 64 {
        return Err(IdentifierError::Shape(scheme));
    }
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && (scheme == IdScheme::CouncilRef || *c != '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    let b = compact.as_bytes();
    let ok = match scheme {
        IdScheme::NhsNumber => {
            if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) {
                return Err(IdentifierError::Shape(scheme));
            }
            if !nhs_check_digit_ok(b) {
                return Err(IdentifierError::NhsCheckDigit);
            }
            true
        }
        IdScheme::NiNumber => ni_number_ok(b),
        IdScheme::NomsNumber => {
            b.len() == 7
                && b.first().is_some_and(u8::is_ascii_uppercase)
                && b.get(1..5)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                && b.get(5..7)
                    .is_some_and(|l| l.iter().all(u8::is_ascii_uppercase))
        }
        IdScheme::Crn => {
            b.len() == 7
                && b.first().is_some_and(u8::is_ascii_uppercase)
                && b.get(1..).is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        }
        IdScheme::LearnerNumber => b.len() == 10 && b.iter().all(u8::is_ascii_digit),
        IdScheme::CouncilRef => {
            (3..=20).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'-')
        }
    };
    if ok {
        Ok(compact)
    } else {
        Err(IdentifierError::Shape(scheme))
    }
}

/// The NHS number mod-11 check: weights 10..2 on the first nine digits.
fn nhs_check_digit_ok(digits: &[u8]) -> bool {
    let Some(check) = digits.get(9) else {
        return false;
    };
    let sum: u32 = digits
        .iter()
        .take(9)
        .zip((2..=10u32).rev())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let expected = 11 - (sum % 11);
    match expected {
        11 => *check == b'0',
        10 => false,
        e => u32::from(check - b'0') == e,
    }
}

/// Computes the NHS check digit for nine digits; `None` when no valid number exists with them.
pub fn nhs_check_digit(first_nine: &[u8; 9]) -> Option<u8> {
    let sum: u32 = first_nine
        .iter()
        .zip((2..=10u32).rev())
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        e => u8::try_from(e).ok(),
    }
}

fn ni_number_ok(b: &[u8]) -> bool {
    if b.len() != 9 {
        return false;
    }
    let (Some(&p1), Some(&p2)) = (b.first(), b.get(1)) else {
        return false;
    };
    let letters_ok = p1.is_ascii_uppercase()
        && p2.is_ascii_uppercase()
        && !b"DFIQUV".contains(&p1)
        && !b"DFIOQUV".contains(&p2);
    let prefix_ok = !matches!(
        &[p1, p2],
        b"BG" | b"GB" | b"NK" | b"KN" | b"TN" | b"NT" | b"ZZ"
    );
    let digits_ok = b
        .get(2..8)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let suffix_ok = b.get(8).is_some_and(|s| b"ABCD".contains(s));
    letters_ok && prefix_ok && digits_ok && suffix_ok
}

/// Bytes of salt per holder commitment.
pub const SALT_LEN: usize = 16;

/// The salted commitment to one holder's identifier that the consent artefact carries:
/// SHA-256 over a domain string, the holder's id, the scheme, the normalised value and the salt,
/// NUL-separated. Different holders get different salts, so commitments cannot be linked.
pub fn commitment(holder: &AgencyId, id: &SubjectIdentifier, salt: &[u8; SALT_LEN]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"throughgate/1 subject-commitment\x00");
    h.update(holder.as_str().as_bytes());
    h.update([0]);
    h.update(id.scheme.as_str().as_bytes());
    h.update([0]);
    h.update(id.value.as_bytes());
    h.update([0]);
    h.update(salt);
    h.finalize().into()
}

/// Checks a commitment in constant time.
pub fn commitment_matches(
    expected: &[u8; 32],
    holder: &AgencyId,
    id: &SubjectIdentifier,
    salt: &[u8; SALT_LEN],
) -> bool {
    commitment(holder, id, salt).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_need_the_right_check_digit() {
        assert_eq!(
            normalise(IdScheme::NhsNumber, "943 476 5919").unwrap(),
            "9434765919"
        );
        assert_eq!(
            normalise(IdScheme::NhsNumber, "943-476-5918"),
            Err(IdentifierError::NhsCheckDigit)
        );
        assert!(normalise(IdScheme::NhsNumber, "94347659").is_err());
        assert_eq!(nhs_check_digit(&[9, 4, 3, 4, 7, 6, 5, 9, 1]), Some(9));
    }

    #[test]
    fn ni_numbers_follow_the_prefix_rules() {
        assert_eq!(
            normalise(IdScheme::NiNumber, "ab 12 34 56 c").unwrap(),
            "AB123456C"
        );
        assert!(normalise(IdScheme::NiNumber, "AB123456E").is_err());
        assert!(normalise(IdScheme::NiNumber, "DA123456A").is_err());
        assert!(normalise(IdScheme::NiNumber, "GB123456A").is_err());
    }

    #[test]
    fn justice_identifiers() {
        assert_eq!(
            normalise(IdScheme::NomsNumber, "a1234bc").unwrap(),
            "A1234BC"
        );
        assert!(normalise(IdScheme::NomsNumber, "A123BC").is_err());
        assert_eq!(normalise(IdScheme::Crn, "x123456").unwrap(), "X123456");
        assert!(normalise(IdScheme::Crn, "123456X").is_err());
        assert_eq!(
            normalise(IdScheme::CouncilRef, "lcc-0012345").unwrap(),
            "LCC-0012345"
        );
    }

    #[test]
    fn errors_never_echo_the_value() {
        let e = normalise(IdScheme::NiNumber, "ZZ999999Z")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("999999"), "{e}");
    }

    #[test]
    fn commitments_bind_holder_identifier_and_salt() {
        let h = AgencyId::new("nhs-wy").unwrap();
        let id = SubjectIdentifier::parse(IdScheme::NhsNumber, "9434765919").unwrap();
        let salt = [3u8; SALT_LEN];
        let c = commitment(&h, &id, &salt);
        assert!(commitment_matches(&c, &h, &id, &salt));
        assert!(!commitment_matches(&c, &h, &id, &[4u8; SALT_LEN]));
        assert!(!commitment_matches(
            &c,
            &AgencyId::new("dwp").unwrap(),
            &id,
            &salt
        ));
        let other = SubjectIdentifier::parse(IdScheme::NhsNumber, "4010232137").unwrap();
        assert!(!commitment_matches(&c, &h, &other, &salt));
    }
}
