//! Exit codes and hints, documented in `tg --help`.

use throughgate_node::client::ClientError;
use throughgate_protocol::messages::ErrorCode;

/// Success.
pub const OK: u8 = 0;
/// Any failure not listed below (bad files, bad arguments found after parsing...).
pub const FAILURE: u8 = 1;
/// The home node refused the request (forbidden, bad request, not found).
pub const REFUSED: u8 = 3;
/// The home node could not be reached.
pub const UNREACHABLE: u8 = 4;
/// A signature or bundle failed verification.
pub const INVALID: u8 = 5;
/// A passport was assembled but some agencies did not answer (unreachable, timed out, error).
pub const PARTIAL: u8 = 6;

/// The exit-code table shown in `tg --help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  failure (bad input, files, configuration)
  2  usage error (arguments)
  3  refused by the home node (role, consent, validation)
  4  home node unreachable
  5  verification failed (signatures, bundle, tampering)
  6  passport incomplete: some agencies unreachable or timed out";

/// A verification failure, mapped to [`INVALID`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerificationFailed(pub String);

/// The exit code for an error.
pub fn code_for(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<VerificationFailed>().is_some() {
        return INVALID;
    }
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Connect { .. }) => UNREACHABLE,
        Some(ClientError::Refused(_)) => REFUSED,
        _ => FAILURE,
    }
}

/// A hint on what to do next, for errors that have an obvious next step.
pub fn hint_for(e: &anyhow::Error) -> Option<&'static str> {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Connect { .. }) => {
            Some("is the node running (`tg node run`)? Check node_address and node_key in your profile.")
        }
        Some(ClientError::Refused(b)) => match b.code {
            ErrorCode::Forbidden => Some("ask your node's operator for a credential with the needed role (`tg staff add`)."),
            ErrorCode::BadSignature => Some("your key does not match your credential; check key_file and credential_file in your profile."),
            ErrorCode::NotFound => Some("check the id; `tg consent list` shows the consents your node knows."),
            _ => None,
        },
        Some(ClientError::Profile { .. }) => {
            Some("pass --profile FILE or set TG_PROFILE; `tg staff add` writes a profile for each member of staff.")
        }
        Some(ClientError::Key(_)) => Some("key files must be PKCS#8 PEM with mode 0600."),
        _ => None,
    }
}
