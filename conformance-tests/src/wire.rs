//! The suite's own framing over QUIC streams (SPEC section 3), on top of the protocol crate's
//! sans-IO frame rules: a 4-byte big-endian length, then that many bytes. The announced length
//! is checked against the limit before any of the payload is read or allocated, and the buffer
//! grows only with the bytes that actually arrive.

use std::time::Duration;

use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::frame::{self, FrameError, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most payload bytes read (and allocated) in one step.
const CHUNK: usize = 64 * 1024;

/// A failure reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a valid frame (announced too large, empty, truncated).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame's payload is not an envelope.
    #[error("the frame's payload is not a valid envelope: {0}")]
    Envelope(String),
    /// The stream or connection failed.
    #[error("the stream failed: {0}")]
    Stream(#[source] std::io::Error),
    /// Nothing complete arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Writes `payload` as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    send: &mut W,
    payload: &[u8],
) -> Result<(), WireError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(WireError::Stream)?;
    send.write_all(payload).await.map_err(WireError::Stream)?;
    Ok(())
}

/// Writes one envelope, encoded exactly as on the wire, as a frame.
pub async fn write_envelope<W: AsyncWrite + Unpin>(
    send: &mut W,
    env: &Envelope,
) -> Result<(), WireError> {
    write_frame(send, &env.to_bytes()).await
}

/// Reads one frame of at most `max` bytes; `Ok(None)` when the stream ends cleanly before any
/// byte of a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    recv: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let buf = header.get_mut(got..).unwrap_or_default();
        match recv.read(buf).await.map_err(WireError::Stream)? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(FrameError::Truncated {
                    have: got,
                    need: HEADER_LEN,
                }
                .into())
            }
            n => got += n,
        }
    }
    let len = frame::check_header(header, max)?;
    let mut payload: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK.min(len)];
    while payload.len() < len {
        let want = (len - payload.len()).min(chunk.len());
        let buf = chunk.get_mut(..want).unwrap_or_default();
        let n = recv.read(buf).await.map_err(WireError::Stream)?;
        if n == 0 {
            return Err(FrameError::Truncated {
                have: HEADER_LEN + payload.len(),
                need: HEADER_LEN + len,
            }
            .into());
        }
        payload.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok(Some(payload))
}

/// Reads one envelope frame of at most `max` bytes within `timeout`.
pub async fn read_envelope<R: AsyncRead + Unpin>(
    recv: &mut R,
    max: usize,
    timeout: Duration,
) -> Result<Option<Envelope>, WireError> {
    let frame = tokio::time::timeout(timeout, read_frame(recv, max))
        .await
        .map_err(|_| WireError::Timeout(timeout))??;
    match frame {
        Some(bytes) => Envelope::from_bytes(&bytes, max)
            .map(Some)
            .map_err(|e| WireError::Envelope(e.to_string())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use throughgate_protocol::envelope::SignerRole;
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::messages::{ErrorBody, ErrorCode};

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn an_oversize_announced_length_is_refused_before_its_payload() {
        // The sender announces one byte over the limit and then sends nothing, keeping its side
        // open: the refusal must come from the header alone, not from waiting for the payload.
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let max = 1024;
        tx.write_all(&u32::try_from(max + 1).unwrap().to_be_bytes())
            .await
            .unwrap();
        let got = read_envelope(&mut rx, max, LONG).await;
        assert!(
            matches!(
                got,
                Err(WireError::Frame(FrameError::TooLarge {
                    len: 1025,
                    max: 1024
                }))
            ),
            "{got:?}"
        );
        drop(tx);
        let mut huge = &u32::MAX.to_be_bytes()[..];
        assert!(matches!(
            read_frame(&mut huge, frame::DEFAULT_MAX_FRAME).await,
            Err(WireError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn empty_truncated_and_clean_ends() {
        let mut empty = &[0u8, 0, 0, 0][..];
        assert!(matches!(
            read_frame(&mut empty, 100).await,
            Err(WireError::Frame(FrameError::Empty))
        ));
        let mut short_header = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut short_header, 100).await,
            Err(WireError::Frame(FrameError::Truncated { have: 2, need: 4 }))
        ));
        let mut short_payload = &[0u8, 0, 0, 5, 1, 2][..];
        assert!(matches!(
            read_frame(&mut short_payload, 100).await,
            Err(WireError::Frame(FrameError::Truncated { have: 6, need: 9 }))
        ));
        let mut nothing = &[][..];
        assert!(read_frame(&mut nothing, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn envelopes_round_trip_and_time_out() {
        let k = SecretKey::generate();
        let body = ErrorBody {
            code: ErrorCode::Malformed,
            message: "test".into(),
        };
        let env = Envelope::seal(&body, &[(SignerRole::Node, &k)]);
        let mut wire = Vec::new();
        write_envelope(&mut wire, &env).await.unwrap();
        assert_eq!(wire, frame::encode(&env.to_bytes()));
        let mut r = &wire[..];
        let back = read_envelope(&mut r, 1 << 20, LONG).await.unwrap().unwrap();
        assert_eq!(back.to_bytes(), env.to_bytes());
        let (_tx, mut rx) = tokio::io::duplex(64);
        let wait = Duration::from_millis(10);
        assert!(matches!(
            read_envelope(&mut rx, 100, wait).await,
            Err(WireError::Timeout(_))
        ));
    }
}
