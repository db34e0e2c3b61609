//! Spreading the federation manifest. A node adopts a newer manifest only if it verifies
//! against the one it trusts (governance threshold of both versions, no rollback, unexpired),
//! persists it, and passes it on to every member. Nodes exchange manifests whenever they
//! connect, so a node that was down catches up on its first contact, from any peer.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{ErrorCode, ManifestSync};

use crate::state::{NodeError, NodeState};

/// Adopts `env` if it is a valid newer manifest; returns whether it was adopted. On adoption,
/// drops connections to members it removed, logs the change, and spreads it to every member
/// except `from`.
pub async fn adopt(
    state: &Arc<NodeState>,
    env: &Envelope,
    from: Option<&AgencyId>,
    by: Option<&throughgate_protocol::ids::PersonId>,
) -> Result<bool, NodeError> {
    let offered: Manifest = env.open().map_err(|e| NodeError::Manifest(e.into()))?;
    let old = state.manifest();
    if old
        .as_ref()
        .is_some_and(|m| offered.version <= m.version && **m == offered)
    {
        return Ok(false);
    }
    let new = state.adopt_manifest(env)?;
    if let Some(old) = &old {
        for m in &old.members {
            if new.member(&m.id).is_none() {
                tracing::warn!(agency = %m.id, "member removed from the federation; its connections are dropped");
                state.peers.forget(&m.id);
            }
        }
    }
    tracing::info!(version = new.version, members = new.members.len(), expires = %new.expires_at, "manifest adopted");
    state
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
        let mine = state.trust.manifest_envelope().ok_or("no manifest")?;
        let req = state.key.seal(&ManifestSync { manifest: mine });
        let answer = state
            .peers
            .request(peer, &req, state.config.limits.request_timeout())
            .await
            .map_err(|e| e.to_string())?;
        let theirs: ManifestSync = answer.open().map_err(|e| e.to_string())?;
        // The answer is signed by one of the peer's node keys: as we know them, or (the peer may
        // have rotated under a newer version we have not seen) as the manifest it sends lists
        // them; that manifest is then adopted only if its governance signatures hold.
        let signed_by_peer = |m: &Manifest| {
            m.member(peer).is_some_and(|member| {
                answer
                    .verify_by_any(SignerRole::Node, &member.node_keys)
                    .is_ok()
            })
        };
        let offered: Option<Manifest> = theirs.manifest.open().ok();
        if !state.manifest().is_some_and(|m| signed_by_peer(&m))
            && !offered.as_ref().is_some_and(signed_by_peer)
        {
            return Err("the answer is not signed by the peer's node key".to_owned());
        }
        match adopt(state, &theirs.manifest, Some(peer), None).await {
            Ok(_) => Ok(()),
            Err(NodeError::Manifest(throughgate_protocol::manifest::ManifestError::Rollback {
                ..
            })) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
    .boxed()
}

/// Handles a peer's offer: adopt it if newer and valid, answer with ours.
pub async fn handle(state: &Arc<NodeState>, peer: &AgencyId, env: &Envelope) -> Envelope {
    if let Err(refusal) = state.check_peer_signed(peer, env) {
        return refusal;
    }
    let offer: ManifestSync = match env.open() {
        Ok(o) => o,
        Err(e) => return state.key.error(ErrorCode::Malformed, e.to_string()),
    };
    match adopt(state, &offer.manifest, Some(peer), None).await {
        Ok(_)
        | Err(NodeError::Manifest(throughgate_protocol::manifest::ManifestError::Rollback {
            ..
        })) => {}
        Err(e) => tracing::warn!(peer = %peer, error = %e, "offered manifest refused"),
    }
    match state.trust.manifest_envelope() {
        Some(m) => state.key.seal(&ManifestSync { manifest: m }),
        None => state.key.error(ErrorCode::Internal, "node has no manifest"),
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
