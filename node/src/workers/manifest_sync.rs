//! Spreading the federation manifest. A node adopts a newer manifest only if it verifies
//! against the one it trusts (governance threshold of both versions, no rollback, unexpired),
//! persists it, and passes it on to every member. Nodes exchange manifests whenever they
//! connect, so a node that was down catches up on its first contact, from any peer.
//!
//! Verifying, storing and logging a manifest, and exchanging one with a peer, use a
//! [`Manifests`]. What follows an adoption needs the whole node state, so [`adopt`],
//! [`sync_with`], [`handle`] and the worker keep it: staff credentials a new version strands
//! are re-issued ([`crate::staff`]), and the new version is spread by a task of its own.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{ErrorCode, ManifestSync};

use crate::audit::AuditLog;
use crate::config::NodeConfig;
use crate::db::Db;
use crate::keyring::NodeKey;
use crate::peers::Peers;
use crate::state::{NodeError, NodeState};
use crate::trust::Trust;

/// What installing and exchanging manifests uses of the node, and nothing else.
#[derive(Clone, Copy)]
pub struct Manifests<'a> {
    /// Signs the offers and answers.
    pub key: &'a NodeKey,
    /// The request timeout.
    pub config: &'a NodeConfig,
    /// Where the adopted manifest is kept.
    pub db: &'a Db,
    /// The manifest in force.
    pub trust: &'a Trust,
    /// Connections to members (a removed member's are dropped).
    pub peers: &'a Peers,
    /// Where an adoption is logged.
    pub audit: &'a AuditLog,
}

impl<'a> Manifests<'a> {
    /// The parts of `state` that installing and exchanging manifests uses.
    pub fn of(state: &'a NodeState) -> Self {
        Manifests {
            key: &state.key,
            config: &state.config,
            db: &state.db,
            trust: &state.trust,
            peers: &state.peers,
            audit: &state.audit,
        }
    }
}

/// Installs `env` if it is a valid newer manifest, keeps it, drops connections to members it
/// removed and logs the change; gives the new version, or `None` when `env` is the one in
/// force.
pub async fn install(
    node: &Manifests<'_>,
    env: &Envelope,
    from: Option<&AgencyId>,
    by: Option<&throughgate_protocol::ids::PersonId>,
) -> Result<Option<Arc<Manifest>>, NodeError> {
    let offered: Manifest = env.open().map_err(|e| NodeError::Manifest(e.into()))?;
    let old = node.trust.manifest();
    if old
        .as_ref()
        .is_some_and(|m| offered.version <= m.version && **m == offered)
    {
        return Ok(None);
    }
    let new = node.trust.install_manifest(env)?;
    node.db.put_manifest(env, new.version)?;
    if let Some(old) = &old {
        for m in &old.members {
            if new.member(&m.id).is_none() {
                tracing::warn!(agency = %m.id, "member removed from the federation; its connections are dropped");
                node.peers.forget(&m.id);
            }
        }
    }
    tracing::info!(version = new.version, members = new.members.len(), expires = %new.expires_at, "manifest adopted");
    node.audit
        .log_admin(
            by,
            "manifest_adopted",
            format!(
                "version {} ({} members) from {}",
                new.version,
                new.members.len(),
                from.map_or_else(|| "an operator".to_owned(), ToString::to_string)
            ),
        )
        .await
        .map_err(NodeError::Audit)?;
    Ok(Some(new))
}

/// Adopts `env` if it is a valid newer manifest; returns whether it was adopted. On adoption,
/// drops connections to members it removed, logs the change, and spreads it to every member
/// except `from`.
pub async fn adopt(
    state: &Arc<NodeState>,
    env: &Envelope,
    from: Option<&AgencyId>,
    by: Option<&throughgate_protocol::ids::PersonId>,
) -> Result<bool, NodeError> {
    let Some(new) = install(&Manifests::of(state), env, from, by).await? else {
        return Ok(false);
    };
    // A version adopted from a peer may retire a key that signed staff credentials still in
    // force (an operator's own publication is refused until they are re-issued): re-issue them
    // under the current key, if the new version lists it, rather than strand their holders.
    let current = state.key.current().public();
    if new
        .member(&state.agency)
        .is_some_and(|me| me.node_keys.contains(&current))
        && crate::staff::stranded_by(&crate::staff::Staffing::of(state), &new)
            .is_ok_and(|s| !s.is_empty())
    {
        if let Err((_, e)) =
            crate::staff::reissue_under_current_key(&crate::staff::Staffing::of(state), None).await
        {
            tracing::error!(error = %e, "could not re-issue staff credentials under the current key");
        }
    }
    let st = state.clone();
    let except = from.cloned();
    tokio::spawn(async move { spread(&st, except.as_ref()).await });
    Ok(true)
}

/// Offers our manifest to every member (except `except`) and adopts any newer one they hold.
pub async fn spread(state: &Arc<NodeState>, except: Option<&AgencyId>) {
    let Some(m) = state.manifest() else { return };
    let peers: Vec<AgencyId> = m
        .members
        .iter()
        .map(|x| x.id.clone())
        .filter(|a| a != &state.agency && Some(a) != except)
        .collect();
    let syncs = peers
        .iter()
        .map(|p| async move { (p, sync_with(state, p).await) });
    for (peer, r) in futures::future::join_all(syncs).await {
        if let Err(e) = r {
            tracing::info!(peer = %peer, error = %e, "manifest not exchanged");
        }
    }
}

/// Exchanges manifests with one peer. (Boxed: adoption spreads to peers, which exchange again.)
pub fn sync_with<'a>(
    state: &'a Arc<NodeState>,
    peer: &'a AgencyId,
) -> BoxFuture<'a, Result<(), String>> {
    async move {
        let theirs = exchange(&Manifests::of(state), peer).await?;
        match adopt(state, &theirs, Some(peer), None).await {
            Ok(_) => Ok(()),
            Err(NodeError::Manifest(throughgate_protocol::manifest::ManifestError::Rollback {
                ..
            })) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
    .boxed()
}

/// Offers our manifest to `peer`; gives the one it answers with, its answer signed by the
/// peer's node key: as we know it, or (the peer may have rotated under a newer version we have
/// not seen) as the manifest it sends lists it. That manifest is then adopted only if its
/// governance signatures hold.
async fn exchange(node: &Manifests<'_>, peer: &AgencyId) -> Result<Envelope, String> {
    let mine = node.trust.manifest_envelope().ok_or("no manifest")?;
    let req = node.key.seal(&ManifestSync { manifest: mine });
    let answer = node
        .peers
        .request(peer, &req, node.config.limits.request_timeout())
        .await
        .map_err(|e| e.to_string())?;
    let theirs: ManifestSync = answer.open().map_err(|e| e.to_string())?;
    let signed_by_peer = |m: &Manifest| {
        m.member(peer).is_some_and(|member| {
            answer
                .verify_by_any(SignerRole::Node, &member.node_keys)
                .is_ok()
        })
    };
    let offered: Option<Manifest> = theirs.manifest.open().ok();
    if !node.trust.manifest().is_some_and(|m| signed_by_peer(&m))
        && !offered.as_ref().is_some_and(signed_by_peer)
    {
        return Err("the answer is not signed by the peer's node key".to_owned());
    }
    Ok(theirs.manifest)
}

/// Handles a peer's offer: adopt it if newer and valid, answer with ours.
pub async fn handle(state: &Arc<NodeState>, peer: &AgencyId, env: &Envelope) -> Envelope {
    let node = Manifests::of(state);
    if let Err((code, why)) = node.trust.check_peer_signed(peer, env) {
        return node.key.error(code, why);
    }
    let offer: ManifestSync = match env.open() {
        Ok(o) => o,
        Err(e) => return node.key.error(ErrorCode::Malformed, e.to_string()),
    };
    match adopt(state, &offer.manifest, Some(peer), None).await {
        Ok(_)
        | Err(NodeError::Manifest(throughgate_protocol::manifest::ManifestError::Rollback {
            ..
        })) => {}
        Err(e) => tracing::warn!(peer = %peer, error = %e, "offered manifest refused"),
    }
    match node.trust.manifest_envelope() {
        Some(m) => node.key.seal(&ManifestSync { manifest: m }),
        None => node.key.error(ErrorCode::Internal, "node has no manifest"),
    }
}

/// Runs a manifest exchange with every peer this node newly connects to.
pub async fn on_connect(
    state: Arc<NodeState>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<AgencyId>,
) {
    while let Some(peer) = rx.recv().await {
        let st = state.clone();
        tokio::spawn(async move {
            if let Err(e) = sync_with(&st, &peer).await {
                tracing::debug!(peer = %peer, error = %e, "manifest exchange on connect failed");
            }
        });
    }
}
