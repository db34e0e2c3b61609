//! CBOR encoding and size-limited decoding of message bodies.
//!
//! Encoding goes through ciborium. Its output is deterministic for our types (fields in
//! declaration order, shortest integer forms) but decoding accepts any valid CBOR, so signatures
//! are always checked over the exact bytes received, never over a re-encoding.

use serde::{de::DeserializeOwned, Serialize};

/// Largest nesting depth accepted when decoding. Our messages nest well under 16 levels.
pub const MAX_DEPTH: usize = 32;

/// Why bytes did not decode into the expected message.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the limit for this kind of item.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The bytes are not valid CBOR for the expected structure.
    #[error("{what} is not valid: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// Valid CBOR item followed by extra bytes.
    #[error("{what} has {extra} unexpected bytes after its end")]
    TrailingBytes {
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Encodes a value as CBOR.
pub fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail with an I/O error, and our types serialise infallibly
    // (no maps with non-string keys, no unsupported types); an error here is a programming
    // error caught by the unit tests, so fall back to an empty buffer rather than panic.
    if ciborium::ser::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes one CBOR item of type `T` from `bytes`, refusing input over `max` bytes, nesting
/// deeper than [`MAX_DEPTH`], and trailing bytes.
pub fn from_slice<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    if let Some(at) = first_indefinite_length(bytes) {
        return Err(DecodeError::Invalid {
            what,
            detail: format!(
                "indefinite-length item at byte {at}: every string, array and map must have a definite length"
            ),
        });
    }
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH).map_err(
        |e: ciborium::de::Error<std::io::Error>| DecodeError::Invalid {
            what,
            detail: describe(&e),
        },
    )?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// Finds the first indefinite-length item (or stray "break" byte) in the first CBOR item of
/// `bytes`, returning its byte offset. Section 4 makes definite lengths a rule for receivers as
/// well as senders, so that every structure (enums included) is decoded alike; ciborium
/// accepts indefinite lengths in some places and not others, hence this walk before decoding.
///
/// The walk reads only headers and skips string contents, so it costs one pass over the
/// headers. Malformed or truncated input ends the walk without a finding; the decoder then
/// reports it.
fn first_indefinite_length(bytes: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    // Items still to read; a container adds its members. Bounded by the bytes left, since
    // every item takes at least one byte.
    let mut pending: u64 = 1;
    while pending > 0 {
        let initial = *bytes.get(at)?;
        let start = at;
        at += 1;
        pending -= 1;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if info == 31 {
            // Indefinite string, array or map, or a break (major 7) outside one.
            return matches!(major, 2..=5 | 7).then_some(start);
        }
        let argument = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let len = 1usize << (info - 24);
                let raw = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                raw.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
            }
            _ => return None,
        };
        match major {
            2 | 3 => at = at.checked_add(usize::try_from(argument).ok()?)?,
            4 => pending = pending.checked_add(argument)?,
            5 => pending = pending.checked_add(argument.checked_mul(2)?)?,
            6 => pending += 1,
            _ => {}
        }
        if pending > (bytes.len().saturating_sub(at)) as u64 {
            return None;
        }
    }
    None
}

fn describe(e: &ciborium::de::Error<std::io::Error>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "truncated input".to_owned(),
        ciborium::de::Error::Syntax(at) => format!("malformed CBOR at byte {at}"),
        ciborium::de::Error::Semantic(at, msg) => match at {
            Some(at) => format!("{msg} (at byte {at})"),
            None => msg.clone(),
        },
        ciborium::de::Error::RecursionLimitExceeded => {
            format!("nested deeper than {MAX_DEPTH} levels")
        }
    }
}

/// Deserialises a nullable field that must be present: `null` is `None`, an absent key is an
/// error (section 4: every key is always written; an absent optional value is `null`). Used as
/// `#[serde(deserialize_with = "crate::cbor::required")]`: serde treats a missing `Option`
/// field as `None` unless the field has a `deserialize_with`.
pub fn required<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d)
}

/// Deserialises an optional field with a default whose `null` means the default too, for use
/// with `#[serde(default, deserialize_with = "crate::cbor::null_as_default")]`.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_oversize_trailing_and_truncated() {
        let v = to_vec(&vec![1u32, 2, 3]);
        let ok: Vec<u32> = from_slice("list", &v, 100).unwrap();
        assert_eq!(ok, vec![1, 2, 3]);
        assert!(matches!(
            from_slice::<Vec<u32>>("list", &v, 2),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut extra = v.clone();
        extra.push(0);
        assert!(matches!(
            from_slice::<Vec<u32>>("list", &extra, 100),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(
            from_slice::<Vec<u32>>("list", &v[..v.len() - 1], 100),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn indefinite_lengths_are_refused_in_every_position() {
        let definite = to_vec(&vec![("a".to_owned(), vec![1u8, 2])]);
        assert!(first_indefinite_length(&definite).is_none());
        // Indefinite array, map, byte string and text string at the top.
        for (bytes, at) in [
            (vec![0x9f, 0x01, 0xff], 0),
            (vec![0xbf, 0x61, b'a', 0x01, 0xff], 0),
            (vec![0x5f, 0x41, 0x00, 0xff], 0),
            (vec![0x7f, 0x61, b'a', 0xff], 0),
            // Nested after a definite string and inside a tag.
            (vec![0x82, 0x43, 1, 2, 3, 0xc1, 0xbf, 0xff], 5 + 1),
            // A stray break.
            (vec![0x82, 0x01, 0xff], 2),
        ] {
            assert_eq!(first_indefinite_length(&bytes), Some(at), "{bytes:02x?}");
            assert!(matches!(
                from_slice::<ciborium::Value>("item", &bytes, 100),
                Err(DecodeError::Invalid { detail, .. }) if detail.contains("indefinite")
            ));
        }
        // Malformed input is left to the decoder.
        assert!(
            first_indefinite_length(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_none()
        );
        assert!(first_indefinite_length(&[0x9a, 0xff, 0xff, 0xff, 0xff, 0x00]).is_none());
    }

    #[test]
    fn rejects_deep_nesting() {
        // 100 nested one-element arrays.
        let mut bytes = vec![0x81u8; 100];
        bytes.push(0x00);
        assert!(from_slice::<ciborium::Value>("deep", &bytes, 1000).is_err());
    }

    #[test]
    fn huge_declared_length_does_not_allocate_or_panic() {
        // A byte string claiming 2^63 bytes, with none present.
        let bytes = [0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(from_slice::<serde_bytes::ByteBuf>("bytes", &bytes, 1000).is_err());
        // An array claiming 2^32 elements.
        let bytes = [0x9a, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(from_slice::<Vec<u8>>("array", &bytes, 1000).is_err());
    }
}
