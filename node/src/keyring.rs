//! The node's signing key, swappable at runtime for key rotation without downtime: every
//! signer reads the current key at the moment it signs.

use std::sync::{Arc, RwLock};

use throughgate_protocol::envelope::{Envelope, Message, SignerRole};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{ErrorBody, ErrorCode};

/// A shared handle on the node's current key.
#[derive(Debug, Clone)]
pub struct NodeKey {
    current: Arc<RwLock<Arc<SecretKey>>>,
}

impl NodeKey {
    /// A handle holding `key`.
    pub fn new(key: SecretKey) -> NodeKey {
        NodeKey {
            current: Arc::new(RwLock::new(Arc::new(key))),
        }
    }

    /// The key to sign with now.
    pub fn current(&self) -> Arc<SecretKey> {
        self.current
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Seals `body` as this node, with the current key.
    pub fn seal<M: Message>(&self, body: &M) -> Envelope {
        Envelope::seal(body, &[(SignerRole::Node, &self.current())])
    }

    /// A protocol error signed as this node.
    pub fn error(&self, code: ErrorCode, message: impl Into<String>) -> Envelope {
        self.seal(&ErrorBody {
            code,
            message: message.into(),
        })
    }

    /// Replaces the key for every holder of this handle.
    pub fn replace(&self, key: SecretKey) {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(key);
    }
}
