use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::category::{Category, Purpose};
use crate::envelope::{Envelope, Message, MessageKind};
use crate::ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId};
use crate::keys::fixed_bytes;
use crate::time::Timestamp;

/// What is asked of one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRequest {
    /// The holder.
    pub holder: AgencyId,
    /// The categories wanted from it.
    pub categories: Vec<Category>,
}

/// A caseworker's query, signed by the caseworker (role `person`) and the requesting node
/// (role `node`). The same signed query goes to every holder it addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Fresh per query; holders refuse a query id seen before.
    pub query_id: QueryId,
    /// The person's passport id.
    pub passport_id: PassportId,
    /// The consent the query relies on; `None` when the requester holds none (holders refuse).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub consent_id: Option<ConsentId>,
    /// Why the data is wanted.
    pub purpose: Purpose,
    /// Per holder, the categories wanted.
    pub requests: Vec<HolderRequest>,
    /// The requesting agency.
    pub requester: AgencyId,
    /// The caseworker asking.
    pub caseworker: PersonId,
    /// The caseworker's credential, signed by the requesting node.
    pub credential: Envelope,
    /// When the caseworker signed it.
    pub issued_at: Timestamp,
    /// After this instant holders refuse it.
    pub expires_at: Timestamp,
    /// 16 random bytes.
    #[serde(with = "fixed_bytes")]
    pub nonce: [u8; 16],
}

impl Message for Query {
    const KIND: MessageKind = MessageKind::Query;
    const MAX_BODY: usize = 64 * 1024;
}

impl Query {
    /// What this query asks of `holder`, if anything.
    pub fn request_for(&self, holder: &AgencyId) -> Option<&HolderRequest> {
        self.requests.iter().find(|r| &r.holder == holder)
    }
}

/// SHA-256 of a query envelope's body bytes: responses name the exact query they answer.
pub fn query_digest(query_env: &Envelope) -> [u8; 32] {
    Sha256::digest(&query_env.body).into()
}
