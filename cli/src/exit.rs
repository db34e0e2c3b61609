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
/// The person's consent was withdrawn or has ended: nothing was asked of any agency.
pub const CONSENT_ENDED: u8 = 7;

/// The exit-code table shown in `tg --help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  failure (bad input, files, configuration)
  2  usage error (arguments)
  3  refused by the home node (role, consent, validation)
  4  home node unreachable
  5  verification failed (signatures, bundle, tampering)
  6  passport incomplete: some agencies unreachable or timed out
  7  the person's consent was withdrawn or has ended: nothing was asked
Every command exits with the same code with --json as without.";

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

/// The error and its causes, outermost first, joined by ": ". A cause whose text an outer
/// message already includes (many errors quote their source) is not repeated.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A hint on what to do next, for errors that have an obvious next step. Looks through the
/// whole chain of causes, so a file error deep inside a command still gets a next step.
pub fn hint_for(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(c) = e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        if let Some(h) = client_hint(c) {
            return Some(h);
        }
    }
    let io = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    if io.is_none()
        && e.chain().any(|c| {
            c.downcast_ref::<throughgate_node::config::ConfigError>()
                .is_some()
        })
    {
        return Some("fix the config file as the message says and start again; `tg node init` writes a complete node.toml, and docs/operations.md describes every key.");
    }
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<throughgate_node::store::StoreError>(),
            Some(throughgate_node::store::StoreError::InUse { .. })
        )
    }) {
        return Some("another process has this node's data folder open: is the node already running? Stop it first (Ctrl-C, `systemctl stop`, or `deploy/local-federation.sh --stop`).");
    }
    match io {
        Some(std::io::ErrorKind::NotFound) => Some("check the path: that file or folder does not exist (paths in node.toml are relative to the folder node.toml is in)."),
        Some(std::io::ErrorKind::PermissionDenied) => Some("check the owner and mode of that file or folder: run tg as the user that owns the node folder (under systemd, `sudo -u throughgate tg ...`)."),
        Some(std::io::ErrorKind::AddrInUse) => Some("another process already listens on that address: stop it, or change `listen` or `metrics_listen` in node.toml."),
        Some(std::io::ErrorKind::AlreadyExists) => Some("choose another path, or move the existing file away first."),
        _ => None,
    }
}

fn client_hint(e: &ClientError) -> Option<&'static str> {
    match e {
        ClientError::Connect { .. } => {
            Some("is the node running (`tg node run`)? Check node_address and node_key in your profile.")
        }
        ClientError::Refused(b) => match b.code {
            ErrorCode::Forbidden => Some("ask your node's operator: they issue, reissue and grant roles to credentials (`tg staff add`, `tg staff reissue`)."),
            ErrorCode::BadSignature => Some("your key does not match your credential; check key_file and credential_file in your profile."),
            ErrorCode::NotFound => Some("check the id; `tg consent list` shows the consents your node knows."),
            ErrorCode::BadRequest => Some("the node's message above says what it did not accept; change that and run the command again."),
            ErrorCode::Internal => Some("the node failed while answering; its operator can see why in the node's log (journalctl -u throughgate-node@AGENCY, or its stderr). Try again once fixed."),
            ErrorCode::Timeout => Some("the request took too long; try again, and if it keeps happening ask the operator to check the node's load and limits.request_timeout_ms."),
            ErrorCode::RateLimited => Some("the node is busy; wait a moment and try again."),
            ErrorCode::TooLarge => Some("the request is over the node's size limit (limits.max_frame_bytes in node.toml); split it, or ask the operator to raise the limit."),
            ErrorCode::Malformed | ErrorCode::UnsupportedKind => Some("tg and the node may be different versions: compare `tg --version` with the version `tg node status` reports."),
        },
        ClientError::Profile { .. } => {
            Some("pass --profile FILE or set TG_PROFILE; `tg staff add` writes a profile for each member of staff.")
        }
        ClientError::Key(_) => Some("key files must be PKCS#8 PEM with mode 0600."),
        ClientError::Protocol(_) => Some("tg and the node may be different versions: compare `tg --version` with the version `tg node status` reports."),
        ClientError::File(throughgate_node::private::PrivateError::Exists(_)) => {
            Some("choose another path, or pass --force to replace the file.")
        }
        ClientError::File(_) => Some("check the folder exists and is writable, or choose another path."),
        ClientError::Invalid(_) => Some("a signed answer failed verification: do not rely on it. Your node's key may have changed (compare node_key in your profile with `tg manifest show`); tell your node's operator."),
        ClientError::AmbiguousConsent(_) => Some("`tg consent list --passport PP` lists the person's consents; name one with --consent."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throughgate_node::store::StoreError;

    /// A cause is shown once, whether or not the message above it already quotes it.
    #[test]
    fn the_message_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not listen on 127.0.0.1:9: {source}")]
        struct Quotes {
            source: std::io::Error,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("could not start")]
        struct Silent(#[source] std::io::Error);
        let busy = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");

        let quoted = anyhow::Error::new(Quotes { source: busy() }).context("node run");
        assert_eq!(
            message(&quoted),
            "node run: could not listen on 127.0.0.1:9: address in use"
        );
        let chained = anyhow::Error::new(Silent(busy()));
        assert_eq!(message(&chained), "could not start: address in use");
    }

    /// The hint for a store held by another process comes from the error's kind, wherever it
    /// sits in the chain; the same words inside another error's message do not trigger it.
    #[test]
    fn hints_and_codes_follow_error_kinds_not_message_text() {
        let in_use = anyhow::Error::new(StoreError::InUse {
            dir: "/srv/node/data".into(),
        })
        .context("cannot open the node's store");
        assert!(hint_for(&in_use).unwrap().contains("another process"));
        assert_eq!(code_for(&in_use), FAILURE);

        let lookalike = anyhow::Error::new(StoreError::Backend(Box::new(std::io::Error::other(
            "could not acquire lock on the store: in use by another process",
        ))));
        assert_eq!(hint_for(&lookalike), None);
        assert_eq!(code_for(&lookalike), FAILURE);

        let refused = anyhow::Error::new(VerificationFailed("the bundle was altered".into()));
        assert_eq!(code_for(&refused), INVALID);
    }
}
