use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Message, MessageKind};

/// Why a request could not be processed at all (as opposed to a signed refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or envelope did not decode.
    Malformed,
    /// The frame was over the size limit.
    TooLarge,
    /// The message kind is not accepted on this stream or from this peer.
    UnsupportedKind,
    /// A signature required on the request is missing or does not verify.
    BadSignature,
    /// The authenticated caller may not make this request.
    Forbidden,
    /// The request is well formed but its content is not acceptable.
    BadRequest,
    /// Something asked for does not exist.
    NotFound,
    /// Too many requests; try again later.
    RateLimited,
    /// The request did not arrive within the time limit.
    Timeout,
    /// The node failed internally; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedKind => "unsupported_kind",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer, signed by the node that sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong and what to do, for people. Never personal data.
    pub message: String,
}

impl Message for ErrorBody {
    const KIND: MessageKind = MessageKind::Error;
    const MAX_BODY: usize = 8192;
}
