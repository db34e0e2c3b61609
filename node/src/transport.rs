//! Frames over QUIC streams: one request per bidirectional stream, each message a
//! length-prefixed CBOR envelope (see `throughgate_protocol::frame`).

use std::time::Duration;

use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::frame::{self, FrameError, HEADER_LEN};

use crate::budget::{BudgetExhausted, Charge, Unmetered};

/// The first allocation for a frame's payload; the buffer then grows (at most doubling) only as
/// bytes arrive, never to the announced length up front.
const INITIAL_PAYLOAD: usize = 16 * 1024;

/// A failure reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The frame itself is invalid (too large, empty, truncated).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The envelope in the frame does not decode.
    #[error("envelope does not decode: {0}")]
    Envelope(String),
    /// The stream or connection failed.
    #[error("stream failed: {0}")]
    Stream(String),
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Receiving more would pass a cap on request bytes in flight.
    #[error(transparent)]
    Busy(#[from] BudgetExhausted),
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, payload: &[u8]) -> Result<(), FrameIoError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| FrameIoError::Stream(e.to_string()))?;
    send.write_all(payload)
        .await
        .map_err(|e| FrameIoError::Stream(e.to_string()))?;
    Ok(())
}

/// Writes one envelope as a frame.
pub async fn write_envelope(
    send: &mut quinn::SendStream,
    env: &Envelope,
) -> Result<(), FrameIoError> {
    write_frame(send, &env.to_bytes()).await
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end of stream.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameIoError> {
    read_frame_charged(recv, max, &mut Unmetered).await
}

/// As [`read_frame`], charging every byte of buffer to `charge` before allocating it. The buffer
/// grows with the bytes that arrive, so a header announcing `max` bytes followed by nothing costs
/// almost nothing.
pub async fn read_frame_charged(
    recv: &mut quinn::RecvStream,
    max: usize,
    charge: &mut (dyn Charge + Send),
) -> Result<Option<Vec<u8>>, FrameIoError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let buf = header.get_mut(got..).unwrap_or_default();
        match recv
            .read(buf)
            .await
            .map_err(|e| FrameIoError::Stream(e.to_string()))?
        {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => {
                return Err(FrameError::Truncated {
                    have: got,
                    need: HEADER_LEN,
                }
                .into())
            }
        }
    }
    let len = frame::check_header(header, max)?;
    let mut payload: Vec<u8> = Vec::new();
    while payload.len() < len {
        let want = len - payload.len();
        let chunk = recv
            .read_chunk(want, true)
            .await
            .map_err(|e| FrameIoError::Stream(e.to_string()))?
            .ok_or(FrameError::Truncated {
                have: HEADER_LEN + payload.len(),
                need: HEADER_LEN + len,
            })?;
        let need = payload.len().saturating_add(chunk.bytes.len()).min(len);
        if need > payload.capacity() {
            let target = need
                .max(payload.capacity().saturating_mul(2))
                .max(INITIAL_PAYLOAD)
                .min(len);
            charge.charge(target - payload.capacity())?;
            payload.reserve_exact(target - payload.len());
        }
        let take = chunk.bytes.len().min(len - payload.len());
        payload.extend_from_slice(chunk.bytes.get(..take).unwrap_or_default());
    }
    Ok(Some(payload))
}

/// Reads one envelope frame within `timeout`.
pub async fn read_envelope(
    recv: &mut quinn::RecvStream,
    max: usize,
    timeout: Duration,
) -> Result<Option<Envelope>, FrameIoError> {
    read_envelope_charged(recv, max, timeout, &mut Unmetered).await
}

/// As [`read_envelope`], charging the frame's buffer to `charge` as it grows.
pub async fn read_envelope_charged(
    recv: &mut quinn::RecvStream,
    max: usize,
    timeout: Duration,
    charge: &mut (dyn Charge + Send),
) -> Result<Option<Envelope>, FrameIoError> {
    let frame = tokio::time::timeout(timeout, read_frame_charged(recv, max, charge))
        .await
        .map_err(|_| FrameIoError::Timeout(timeout))??;
    match frame {
        Some(bytes) => Envelope::from_bytes(&bytes, max)
            .map(Some)
            .map_err(|e| FrameIoError::Envelope(e.to_string())),
        None => Ok(None),
    }
}
