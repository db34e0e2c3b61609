//! The redo record that makes a [`SledStore`](super::SledStore) batch atomic across a crash.
//!
//! A batch is written first as one redo record (a single sled insert, which is atomic), then
//! key by key, then the record is removed. sled recovers a prefix of its log, so after a crash
//! either the record is absent and none of the batch's keys were kept, or the record is present
//! and opening the store applies it again in full. This replaces sled's `apply_batch`, whose
//! atomicity comes with one lock shared by every sled database in the process.
//!
//! Format (all lengths big-endian `u32`): `MAGIC`, the number of writes, then per write a tag
//! (`0` put, `1` delete), the key's length and bytes, and for a put the value's length and
//! bytes. Decoding checks every length against the bytes that remain, so a damaged record is
//! reported, never trusted.

use super::Write;

/// Marks a redo record of this format.
const MAGIC: &[u8; 8] = b"tgredo01";
const PUT: u8 = 0;
const DELETE: u8 = 1;

/// Why a stored redo record could not be read back.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedoError {
    /// The record does not start with this format's marker.
    #[error("it does not start with the redo marker")]
    Marker,
    /// The record ends before a length or the bytes it announces.
    #[error("it ends early, in write {0}")]
    Truncated(usize),
    /// A write's tag is neither put nor delete.
    #[error("write {index} has the unknown tag {tag}")]
    Tag { index: usize, tag: u8 },
    /// Bytes follow the last write.
    #[error("{0} bytes follow the last write")]
    Trailing(usize),
    /// A length does not fit in this format.
    #[error("a key, value or batch is larger than 4 GiB")]
    TooLarge,
}

fn push_len(out: &mut Vec<u8>, n: usize) -> Result<(), RedoError> {
    let n = u32::try_from(n).map_err(|_| RedoError::TooLarge)?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Encodes `writes` as one redo record.
pub fn encode(writes: &[Write]) -> Result<Vec<u8>, RedoError> {
    let size: usize = writes
        .iter()
        .map(|w| match w {
            Write::Put(k, v) => 9 + k.len() + v.len(),
            Write::Delete(k) => 5 + k.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
    out.extend_from_slice(MAGIC);
    push_len(&mut out, writes.len())?;
    for w in writes {
        match w {
            Write::Put(k, v) => {
                out.push(PUT);
                push_len(&mut out, k.len())?;
                out.extend_from_slice(k);
                push_len(&mut out, v.len())?;
                out.extend_from_slice(v);
            }
            Write::Delete(k) => {
                out.push(DELETE);
                push_len(&mut out, k.len())?;
                out.extend_from_slice(k);
            }
        }
    }
    Ok(out)
}

/// Reads `bytes` off the front of `rest`, or reports write `index` as truncated.
fn take<'a>(rest: &mut &'a [u8], n: usize, index: usize) -> Result<&'a [u8], RedoError> {
    if rest.len() < n {
        return Err(RedoError::Truncated(index));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_len(rest: &mut &[u8], index: usize) -> Result<usize, RedoError> {
    let b = take(rest, 4, index)?;
    let arr: [u8; 4] = b.try_into().map_err(|_| RedoError::Truncated(index))?;
    usize::try_from(u32::from_be_bytes(arr)).map_err(|_| RedoError::TooLarge)
}

/// Decodes a redo record. The count is not trusted for allocation: writes are collected as
/// they are read, so a damaged count cannot reserve more than the record holds.
pub fn decode(bytes: &[u8]) -> Result<Vec<Write>, RedoError> {
    let mut rest = bytes;
    if take(&mut rest, MAGIC.len(), 0).map_err(|_| RedoError::Marker)? != MAGIC {
        return Err(RedoError::Marker);
    }
    let count = take_len(&mut rest, 0)?;
    let mut writes = Vec::new();
    for index in 0..count {
        let tag = take(&mut rest, 1, index)?
            .first()
            .copied()
            .ok_or(RedoError::Truncated(index))?;
        let klen = take_len(&mut rest, index)?;
        let key = take(&mut rest, klen, index)?.to_vec();
        match tag {
            PUT => {
                let vlen = take_len(&mut rest, index)?;
                let value = take(&mut rest, vlen, index)?.to_vec();
                writes.push(Write::Put(key, value));
            }
            DELETE => writes.push(Write::Delete(key)),
            tag => return Err(RedoError::Tag { index, tag }),
        }
    }
    if !rest.is_empty() {
        return Err(RedoError::Trailing(rest.len()));
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Write> {
        vec![
            Write::Put(b"aud/1".to_vec(), vec![7; 300]),
            Write::Delete(b"obx/9".to_vec()),
            Write::Put(Vec::new(), Vec::new()),
        ]
    }

    fn same(a: &[Write], b: &[Write]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Write::Put(k1, v1), Write::Put(k2, v2)) => k1 == k2 && v1 == v2,
                (Write::Delete(k1), Write::Delete(k2)) => k1 == k2,
                _ => false,
            })
    }

    #[test]
    fn a_batch_round_trips_through_its_redo_record() {
        let w = sample();
        let bytes = encode(&w).unwrap();
        assert!(same(&decode(&bytes).unwrap(), &w));
        assert!(decode(&encode(&[]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn every_damaged_redo_record_is_refused_without_panicking() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode(&extra).unwrap_err(), RedoError::Trailing(1));
        let mut marker = bytes.clone();
        marker[0] ^= 1;
        assert_eq!(decode(&marker).unwrap_err(), RedoError::Marker);
        let mut tag = bytes.clone();
        tag[12] = 5;
        assert_eq!(
            decode(&tag).unwrap_err(),
            RedoError::Tag { index: 0, tag: 5 }
        );
        let mut count = bytes;
        count[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&count).unwrap_err(), RedoError::Truncated(3));
    }
}
