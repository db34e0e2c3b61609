//! Validated identifiers: agencies, people (staff), passports, consents, queries, records.
//!
//! Every identifier is a newtype over a string whose shape is checked when it is built or
//! decoded, so code further in never sees a malformed one.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier of the kind asked for.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, or longer than the identifier kind allows.
    #[error("{kind} must be 1 to {max} characters long, got {len}")]
    Length {
        /// The identifier kind, e.g. "agency id".
        kind: &'static str,
        max: usize,
        len: usize,
    },
    /// Contains a character outside the allowed set.
    #[error("{kind} {value:?} may contain only {allowed}")]
    Charset {
        kind: &'static str,
        /// The rejected value (identifiers are not personal data).
        value: String,
        /// A description of the allowed characters.
        allowed: &'static str,
    },
    /// A random identifier without the expected prefix or hex body.
    #[error("{kind} {value:?} must look like {example}")]
    Shape {
        kind: &'static str,
        value: String,
        /// An example of the right shape.
        example: &'static str,
    },
}

fn check_slug(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length {
            kind,
            max,
            len: s.len(),
        });
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_edges = !s.starts_with('-') && !s.ends_with('-');
    if !ok_chars || !ok_edges {
        return Err(IdError::Charset {
            kind,
            value: s.to_owned(),
            allowed: "lowercase letters, digits and inner hyphens",
        });
    }
    Ok(())
}

fn check_token(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length {
            kind,
            max,
            len: s.len(),
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(IdError::Charset {
            kind,
            value: s.to_owned(),
            allowed: "ASCII letters, digits, '-', '_' and '.'",
        });
    }
    Ok(())
}

fn check_random(
    kind: &'static str,
    prefix: &str,
    example: &'static str,
    s: &str,
) -> Result<(), IdError> {
    let body = s.strip_prefix(prefix).unwrap_or("");
    let ok = s.starts_with(prefix)
        && body.len() == 32
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdError::Shape {
            kind,
            value: s.chars().take(80).collect(),
            example,
        })
    }
}

fn random_hex(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&s)?;
                Ok(Self(s))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal, $example:literal) => {
        string_id!($(#[$doc])* $name, $kind, |s| check_random($kind, $prefix, $example, s));

        impl $name {
            /// Mints a fresh identifier from 128 bits of operating-system randomness.
            pub fn random() -> Self {
                Self(random_hex($prefix))
            }
        }
    };
}

string_id!(
    /// An agency's federation-wide id, e.g. `hmp-leeds`: lowercase letters, digits and inner
    /// hyphens, at most 63 characters (a valid DNS label, so it can name a TLS server).
    AgencyId,
    "agency id",
    |s| check_slug("agency id", s, 63)
);

string_id!(
    /// A member of staff (caseworker, DPO, operator), unique within their agency, e.g. `cw-0042`.
    PersonId,
    "person id",
    |s| check_token("person id", s, 64)
);

string_id!(
    /// A record's id, unique within its holder, as given by the agency's own system.
    RecordId,
    "record id",
    |s| check_token("record id", s, 128)
);

random_id!(
    /// A person's federation-wide pseudonymous passport id: random, reveals nothing.
    PassportId,
    "passport id",
    "pp-",
    "pp-0123456789abcdef0123456789abcdef"
);

random_id!(
    /// A consent artefact's id.
    ConsentId,
    "consent id",
    "cn-",
    "cn-0123456789abcdef0123456789abcdef"
);

random_id!(
    /// A query's id: fresh for every query, the key of the holders' replay cache.
    QueryId,
    "query id",
    "qr-",
    "qr-0123456789abcdef0123456789abcdef"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_ids_are_dns_labels() {
        assert!(AgencyId::new("hmp-leeds").is_ok());
        assert!(AgencyId::new("dwp").is_ok());
        assert!(AgencyId::new("HMP").is_err());
        assert!(AgencyId::new("-x").is_err());
        assert!(AgencyId::new("").is_err());
        assert!(AgencyId::new("a".repeat(64)).is_err());
        assert!(AgencyId::new("a b").is_err());
    }

    #[test]
    fn random_ids_round_trip_and_reject_bad_shapes() {
        let p = PassportId::random();
        assert_eq!(PassportId::new(p.as_str()).unwrap(), p);
        assert!(PassportId::new("pp-123").is_err());
        assert!(PassportId::new(p.as_str().replace("pp-", "cn-")).is_err());
        assert!(ConsentId::new("cn-0123456789ABCDEF0123456789abcdef").is_err());
        assert_ne!(QueryId::random(), QueryId::random());
    }

    #[test]
    fn ids_decode_with_validation() {
        let bad: Result<AgencyId, _> = serde_json::from_str("\"Bad Agency\"");
        assert!(bad.is_err());
        let good: AgencyId = serde_json::from_str("\"nhs-wy\"").unwrap();
        assert_eq!(good.as_str(), "nhs-wy");
    }
}
