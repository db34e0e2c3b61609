//! Frames over QUIC streams: one request per bidirectional stream, each message a
//! length-prefixed CBOR envelope (see `throughgate_protocol::frame`).

use std::time::Duration;

use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::frame::{self, FrameError, HEADER_LEN};

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
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => FrameIoError::Frame(FrameError::Truncated {
            have: HEADER_LEN + n,
            need: HEADER_LEN + len,
        }),
        quinn::ReadExactError::ReadError(e) => FrameIoError::Stream(e.to_string()),
    })?;
    Ok(Some(payload))
}

/// Reads one envelope frame within `timeout`.
pub async fn read_envelope(
    recv: &mut quinn::RecvStream,
    max: usize,
    timeout: Duration,
) -> Result<Option<Envelope>, FrameIoError> {
    let frame = tokio::time::timeout(timeout, read_frame(recv, max))
        .await
        .map_err(|_| FrameIoError::Timeout(timeout))??;
    match frame {
        Some(bytes) => Envelope::from_bytes(&bytes, max)
            .map(Some)
            .map_err(|e| FrameIoError::Envelope(e.to_string())),
        None => Ok(None),
    }
}
