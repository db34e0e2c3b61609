//! What this node trusts right now: the federation manifest and its own staff's keys. The TLS
//! verifiers consult it during every handshake; handlers consult it to name the caller.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::manifest::{verify_manifest, Manifest, ManifestError};
use throughgate_protocol::messages::ErrorCode;

use crate::clock::Clock;
use crate::db::StoredStaff;
use crate::tls::PeerPolicy;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Another agency's node.
    Peer(AgencyId),
    /// One of this agency's staff, through the CLI.
    Staff(Arc<StoredStaff>),
}

#[derive(Debug, Default)]
struct Inner {
    manifest: Option<(Arc<Manifest>, Envelope)>,
    staff: HashMap<PublicKey, Arc<StoredStaff>>,
}

/// The node's trust state, shared by the TLS verifiers and the handlers.
#[derive(Debug)]
pub struct Trust {
    agency: AgencyId,
    clock: Clock,
    inner: RwLock<Inner>,
}

impl Trust {
    /// Checks that a message from `peer` is signed in role `node` by one of the peer's node
    /// keys in the trusted manifest, and returns that manifest. Otherwise returns what to
    /// answer: `forbidden` for a non-member, `bad_signature` for any other signature,
    /// `internal` when there is no manifest.
    pub fn check_peer_signed(
        &self,
        peer: &AgencyId,
        env: &Envelope,
    ) -> Result<Arc<Manifest>, (ErrorCode, String)> {
        let Some(manifest) = self.manifest() else {
            return Err((ErrorCode::Internal, "node has no manifest".into()));
        };
        let Some(member) = manifest.member(peer) else {
            return Err((ErrorCode::Forbidden, "the sender is not a member".into()));
        };
        env.verify_by_any(SignerRole::Node, &member.node_keys)
            .map(|_| manifest.clone())
            .map_err(|_| {
                (
                    ErrorCode::BadSignature,
                    format!("the {} is not signed by the sending node", env.kind),
                )
            })
    }

    /// Empty trust: refuses everyone until a manifest is installed.
    pub fn new(agency: AgencyId, clock: Clock) -> Trust {
        Trust {
            agency,
            clock,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's agency.
    pub fn agency(&self) -> &AgencyId {
        &self.agency
    }

    /// The current manifest.
    pub fn manifest(&self) -> Option<Arc<Manifest>> {
        self.read().manifest.as_ref().map(|(m, _)| m.clone())
    }

    /// The current manifest and its signed envelope, read together.
    pub fn manifest_and_envelope(&self) -> Option<(Arc<Manifest>, Envelope)> {
        self.read()
            .manifest
            .as_ref()
            .map(|(m, e)| (m.clone(), e.clone()))
    }

    /// The current manifest's signed envelope.
    pub fn manifest_envelope(&self) -> Option<Envelope> {
        self.read().manifest.as_ref().map(|(_, e)| e.clone())
    }

    /// Verifies `env` against the current manifest (rollback, chained governance, expiry) and
    /// adopts it. Returns the adopted manifest; the caller persists it.
    pub fn install_manifest(&self, env: &Envelope) -> Result<Arc<Manifest>, ManifestError> {
        let mut inner = self.write();
        let current = inner.manifest.as_ref().map(|(m, _)| m.clone());
        let m = Arc::new(verify_manifest(env, current.as_deref(), self.clock.now())?);
        if m.member(&self.agency).is_none() {
            return Err(ManifestError::Invalid(format!(
                "this node's agency {} is not a member of manifest version {}",
                self.agency, m.version
            )));
        }
        inner.manifest = Some((m.clone(), env.clone()));
        Ok(m)
    }

    /// Registers (or replaces) a member of staff's key.
    pub fn add_staff(&self, staff: StoredStaff) {
        let mut inner = self.write();
        // A person's earlier, revoked keys stay known, so their holders are told why they are
        // refused rather than failing the handshake.
        inner.staff.retain(|k, s| {
            s.body.person_id != staff.body.person_id
                || (s.revoked_at.is_some() && *k != staff.body.public_key)
        });
        inner.staff.insert(staff.body.public_key, Arc::new(staff));
    }

    /// Why `key`, a member of staff's key this node knows, may not act now: revoked (by whom
    /// and when), expired or not yet valid. `None` for a key that may act or is unknown.
    pub fn staff_refusal(&self, key: &PublicKey) -> Option<String> {
        let inner = self.read();
        let staff = inner.staff.get(key)?;
        if let Some(at) = staff.revoked_at {
            let by = staff
                .revoked_by
                .as_ref()
                .map(|p| format!(" by {p}"))
                .unwrap_or_default();
            return Some(format!(
                "your credential ({}) was withdrawn{by} at {at}; ask your node's operator for a \
                 new one (`tg staff reissue`)",
                staff.body.person_id
            ));
        }
        match throughgate_protocol::credential::check_window(&staff.body, self.clock.now()) {
            Ok(()) => None,
            Err(e) => Some(format!(
                "{e}; ask your node's operator to reissue your credential (`tg staff reissue`)"
            )),
        }
    }

    /// The principal holding `key`: a member node or a current member of staff.
    pub fn principal(&self, key: &PublicKey) -> Option<Principal> {
        let inner = self.read();
        let now = self.clock.now();
        if let Some((m, _)) = &inner.manifest {
            if let Some(member) = m.member_by_key(key) {
                // An expired manifest vouches for no one: peers are refused until governance
                // issues a new version (staff, vouched for by this node, can still connect to
                // publish it).
                return (now < m.expires_at).then(|| Principal::Peer(member.id.clone()));
            }
        }
        let staff = inner.staff.get(key)?;
        let current = staff.revoked_at.is_none()
            && throughgate_protocol::credential::check_window(&staff.body, now).is_ok();
        current.then(|| Principal::Staff(staff.clone()))
    }
}

impl PeerPolicy for Trust {
    fn server_allowed(&self, server_name: &str, key: &PublicKey) -> bool {
        let inner = self.read();
        let Some((m, _)) = &inner.manifest else {
            return false;
        };
        m.members
            .iter()
            .any(|mem| mem.id.as_str() == server_name && mem.node_keys.contains(key))
    }

    fn client_allowed(&self, key: &PublicKey) -> bool {
        // A known member of staff whose credential is withdrawn or expired completes the
        // handshake only to be told so (see `server::connection`); they can do nothing else.
        self.principal(key).is_some() || self.staff_refusal(key).is_some()
    }
}
