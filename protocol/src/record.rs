//! Records: what a holder agency stores about a person, and the minimised form it discloses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::ids::RecordId;
use crate::time::{Date, Timestamp};

/// Most named fields one record may carry.
pub const MAX_FIELDS: usize = 64;
/// Longest field name, record kind or source-system name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest field value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Longest local subject id, in bytes.
pub const MAX_SUBJECT_LEN: usize = 64;

/// A record as the holder stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique within the holder.
    pub record_id: RecordId,
    /// The holder's own identifier for the person (NOMS number, CRN, NHS number...), normalised.
    pub subject: String,
    /// The pathway category.
    pub category: Category,
    /// The kind of record, e.g. `gp_registration`.
    pub kind: String,
    /// Named fields, text values.
    pub fields: BTreeMap<String, String>,
    /// The date the record is about (an appointment's date, a release date...).
    pub about: Date,
    /// When the holder's own system recorded it.
    pub recorded_at: Timestamp,
    /// The holder's system it came from, e.g. `NOMIS`.
    pub source_system: String,
}

/// A record as disclosed: no local subject id, only the fields policy allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosedRecord {
    /// The holder's record id.
    pub record_id: RecordId,
    /// The pathway category.
    pub category: Category,
    /// The kind of record.
    pub kind: String,
    /// The released fields.
    pub fields: BTreeMap<String, String>,
    /// The date the record is about.
    pub about: Date,
    /// When the holder recorded it.
    pub recorded_at: Timestamp,
    /// The holder's source system.
    pub source_system: String,
}

/// Why a record is not acceptable.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record kind or field name that is not a lowercase snake_case word.
    #[error("{what} {value:?} must be 1-{MAX_NAME_LEN} lowercase letters, digits or underscores")]
    BadName {
        what: &'static str,
        /// The value (names are not personal data).
        value: String,
    },
    /// Too many fields.
    #[error("{0} fields, over the limit of {MAX_FIELDS}")]
    TooManyFields(usize),
    /// A field value over the length limit.
    #[error("field {field:?} is {len} bytes, over the limit of {MAX_VALUE_LEN}")]
    ValueTooLong { field: String, len: usize },
    /// The subject id is empty, too long or has control characters.
    #[error("subject id must be 1-{MAX_SUBJECT_LEN} printable characters")]
    BadSubject,
    /// The source system is empty, too long or has control characters.
    #[error("source system must be 1-{MAX_NAME_LEN} printable characters")]
    BadSource,
}

/// Checks a kind or field name: `[a-z0-9_]{1,64}`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// Checks a kind and fields against the shape limits every record keeps (the CDDL's
/// `record-name` and `record-fields`).
fn validate_shape(kind: &str, fields: &BTreeMap<String, String>) -> Result<(), RecordError> {
    if !valid_name(kind) {
        return Err(RecordError::BadName {
            what: "kind",
            value: kind.chars().take(80).collect(),
        });
    }
    if fields.len() > MAX_FIELDS {
        return Err(RecordError::TooManyFields(fields.len()));
    }
    for (k, v) in fields {
        if !valid_name(k) {
            return Err(RecordError::BadName {
                what: "field name",
                value: k.chars().take(80).collect(),
            });
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(RecordError::ValueTooLong {
                field: k.clone(),
                len: v.len(),
            });
        }
    }
    Ok(())
}

impl DisclosedRecord {
    /// Checks the disclosed record's shape limits, as a receiver must (the same as a stored
    /// record's, without the subject id it does not carry).
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_shape(&self.kind, &self.fields)?;
        if !printable(&self.source_system, MAX_NAME_LEN) {
            return Err(RecordError::BadSource);
        }
        Ok(())
    }
}

impl Record {
    /// Checks the record's shape limits.
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_shape(&self.kind, &self.fields)?;
        if !printable(&self.subject, MAX_SUBJECT_LEN) {
            return Err(RecordError::BadSubject);
        }
        if !printable(&self.source_system, MAX_NAME_LEN) {
            return Err(RecordError::BadSource);
        }
        Ok(())
    }

    /// The disclosed form with only the fields for which `keep` returns true.
    pub fn disclose(&self, mut keep: impl FnMut(&str) -> bool) -> DisclosedRecord {
        DisclosedRecord {
            record_id: self.record_id.clone(),
            category: self.category,
            kind: self.kind.clone(),
            fields: self
                .fields
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            about: self.about,
            recorded_at: self.recorded_at,
            source_system: self.source_system.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            record_id: RecordId::new("r1").unwrap(),
            subject: "A1234BC".into(),
            category: Category::FinanceAndId,
            kind: "bank_account".into(),
            fields: [
                ("status".to_owned(), "opened".to_owned()),
                ("bank".to_owned(), "X".to_owned()),
            ]
            .into_iter()
            .collect(),
            about: Date::parse("2026-01-02").unwrap(),
            recorded_at: Timestamp(1),
            source_system: "NOMIS".into(),
        }
    }

    #[test]
    fn validation_limits() {
        assert!(sample().validate().is_ok());
        let mut r = sample();
        r.kind = "Bank Account".into();
        assert!(r.validate().is_err());
        let mut r = sample();
        r.fields.insert("x".into(), "v".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(
            r.validate(),
            Err(RecordError::ValueTooLong { .. })
        ));
        let mut r = sample();
        r.subject = String::new();
        assert_eq!(r.validate(), Err(RecordError::BadSubject));
    }

    #[test]
    fn disclose_drops_subject_and_unlisted_fields() {
        let d = sample().disclose(|f| f == "status");
        assert_eq!(d.fields.len(), 1);
        assert!(d.fields.contains_key("status"));
    }
}
