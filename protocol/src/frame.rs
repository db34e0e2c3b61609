//! Length-prefixed framing: each frame is a 4-byte big-endian length followed by that many bytes
//! of CBOR (one envelope). A sans-IO decoder: feed it bytes as they arrive, take frames out.

/// Default largest frame, 4 MiB: a passport response with a few thousand records fits easily.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a byte stream is not a valid sequence of frames.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes announced, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// A zero-length frame (an envelope is never empty).
    #[error("empty frame")]
    Empty,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes received of the current frame, header included.
        have: usize,
        /// Bytes needed to complete it.
        need: usize,
    },
}

/// Prefixes `payload` with its length.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the announced length from a 4-byte header and checks it against `max`.
pub fn check_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            max,
            buf: Vec::new(),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame's payload, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(header);
        let len = check_header(h, self.max)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(HEADER_LEN + len);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        frame.drain(..HEADER_LEN);
        Ok(Some(frame))
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = match self.buf.get(..HEADER_LEN) {
            Some(h) => {
                let mut a = [0u8; HEADER_LEN];
                a.copy_from_slice(h);
                HEADER_LEN + u32::from_be_bytes(a) as usize
            }
            None => HEADER_LEN,
        };
        Err(FrameError::Truncated {
            have: self.buf.len(),
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_pushes() {
        let mut d = FrameDecoder::new(100);
        let mut wire = encode(b"hello");
        wire.extend(encode(b"world!"));
        for chunk in wire.chunks(3) {
            d.push(chunk);
        }
        assert_eq!(d.next_frame().unwrap().unwrap(), b"hello");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"world!");
        assert_eq!(d.next_frame().unwrap(), None);
        assert!(d.finish().is_ok());
    }

    #[test]
    fn oversize_empty_and_truncated_frames_are_errors() {
        let mut d = FrameDecoder::new(4);
        d.push(&encode(b"12345"));
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 5, max: 4 }));

        let mut d = FrameDecoder::new(4);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));

        let mut d = FrameDecoder::new(100);
        d.push(&encode(b"abc")[..5]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 5, need: 7 }));
    }
}
