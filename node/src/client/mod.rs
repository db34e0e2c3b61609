//! The client side of the staff API, used by the `tg` CLI (and by the demo, tests and
//! benchmarks, so they all drive the same path). It talks only to the caller's home node,
//! pinned by the node's key, and signs every request with the caller's key.

mod audit;
mod consent;
mod passport;
mod profile;

pub use audit::{merged_entries, ReportSource, SubjectAccessReport};
pub use consent::{ConsentPlan, SignedConsent, WithdrawAll};
pub use passport::{
    check_statement, passport_complete, requests_under, requests_without_consent, StatementError,
};
pub use profile::Profile;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use throughgate_protocol::category::Purpose;
use throughgate_protocol::credential::Credential;
use throughgate_protocol::envelope::{Envelope, MessageKind, SignerRole};
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, QueryId};
use throughgate_protocol::keys::{PublicKey, SecretKey};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{
    ClientOp, ClientRequest, ClientResponse, DeletionReport, ErrorBody, ErrorCode, HolderRequest,
    HolderResult, ImportFormat, ImportReport, Query, SyncRequest,
};

use crate::clock::Clock;
use crate::config::Limits;
use crate::keyfile::{read_private_file, read_secret_key, KeyFileError};
use crate::tls::{client_config, PinnedServer, TlsIdentity};
use crate::transport::{read_envelope, write_envelope, write_frame};

/// Bytes per data frame when uploading an import.
const IMPORT_CHUNK: usize = 1024 * 1024;

/// A client-side failure.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The profile or a file it names is missing or invalid.
    #[error("profile {path}: {detail}")]
    Profile { path: PathBuf, detail: String },
    /// A key file problem.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The home node could not be reached or refused the connection.
    #[error("cannot reach home node {agency} at {addr}: {detail}")]
    Connect {
        agency: AgencyId,
        addr: String,
        detail: String,
    },
    /// The home node answered with an error.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(ErrorBody),
    /// The answer was not what the protocol requires.
    #[error("protocol error talking to the home node: {0}")]
    Protocol(String),
    /// A signed answer failed verification.
    #[error("verification failed: {0}")]
    Invalid(String),
    /// More than one active consent could be relied on; the caller must name one.
    #[error("{0}")]
    AmbiguousConsent(String),
    /// A file the answer was to be written to could not be created.
    #[error(transparent)]
    File(#[from] crate::private::PrivateError),
}

impl ClientError {
    /// The error code when the home node refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused(b) => Some(b.code),
            _ => None,
        }
    }
}

/// A connection to the caller's home node.
pub struct HomeClient {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    key: SecretKey,
    credential_env: Envelope,
    credential: Credential,
    node_keys: std::sync::RwLock<Vec<PublicKey>>,
    trusted: std::sync::RwLock<Option<Manifest>>,
    manifest_cache: Option<PathBuf>,
    clock: Clock,
    limits: Limits,
    /// Credential and checkpoint signatures already verified on this connection's answers.
    sig_cache: throughgate_protocol::sigcache::SigCache,
    /// Set when connecting replaced the profile's credential with the one the node re-issued
    /// under its current key: where it was saved, or why it could not be.
    credential_refreshed: Option<Result<PathBuf, String>>,
}

impl std::fmt::Debug for HomeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeClient")
            .field("person", &self.credential.person_id)
            .finish_non_exhaustive()
    }
}

impl HomeClient {
    /// Connects using a profile.
    pub async fn connect_profile(profile: &Profile) -> Result<HomeClient, ClientError> {
        let key = read_secret_key(&profile.resolve(&profile.key_file))?;
        HomeClient::connect_profile_with_key(profile, key).await
    }

    /// Connects using a profile and its already-opened key (e.g. after asking for its
    /// passphrase).
    pub async fn connect_profile_with_key(
        profile: &Profile,
        key: SecretKey,
    ) -> Result<HomeClient, ClientError> {
        let cred_bytes = read_private_file(&profile.resolve(&profile.credential_file), 64 * 1024)?;
        let credential =
            Envelope::from_bytes(&cred_bytes, 64 * 1024).map_err(|e| ClientError::Profile {
                path: profile.resolve(&profile.credential_file),
                detail: e.to_string(),
            })?;
        // Keys the home node may present: the pinned one, and those a previously verified
        // manifest lists for the home agency (so a key rotation does not strand staff).
        let cache = profile.manifest_cache_path();
        let clock = Clock::system();
        let cached = read_cached_manifest(&cache, clock.now());
        let mut keys = vec![profile.node_key];
        if let Some(m) = cached.as_ref().and_then(|m| m.member(&profile.agency)) {
            keys.extend(
                m.node_keys
                    .iter()
                    .copied()
                    .filter(|k| k != &profile.node_key),
            );
        }
        // With a verified manifest to anchor on, a key not yet known is let through the
        // handshake only to fetch the node's manifest, which must chain from the cached one
        // (governance threshold, no rollback) and list that key for the home agency.
        // Where to find the home node: the profile's addresses (its replicas), raced. Only
        // these: a profile naming one replica reaches that one or none, so an operator asking
        // a given replica is never answered by another.
        let (addrs, unresolved) = crate::dial::resolve_all(profile.addresses()).await;
        let shown = profile.addresses().join(", ");
        if addrs.is_empty() {
            return Err(ClientError::Connect {
                agency: profile.agency.clone(),
                addr: shown,
                detail: unresolved.unwrap_or_else(|| "address does not resolve".into()),
            });
        }
        let policy = Arc::new(AnchoredServer {
            agency: profile.agency.to_string(),
            keys: keys.clone(),
            anchored: cached.is_some(),
        });
        let mut client = HomeClient::connect_with_policy(
            &addrs,
            &profile.agency,
            keys.clone(),
            policy,
            key,
            credential,
            clock,
        )
        .await?;
        client.manifest_cache = Some(cache);
        if let Ok(mut t) = client.trusted.write() {
            *t = cached;
        }
        // The key of the connection that won the race (several attempts may have handshaken
        // with different replicas; only this one is used).
        match crate::tls::peer_key(&client.conn) {
            Some(k) if !keys.contains(&k) => {
                if let Ok(mut known) = client.node_keys.write() {
                    // Provisional: only to read the node's signed answer with its manifest.
                    known.push(k);
                }
                let listed = match client.manifest().await {
                    Ok((_, m)) => m
                        .member(&profile.agency)
                        .is_some_and(|me| me.node_keys.contains(&k)),
                    Err(_) => false,
                };
                if !listed {
                    client.conn.close(0u32.into(), b"unknown node key");
                    return Err(ClientError::Connect {
                        agency: profile.agency.clone(),
                        addr: shown.clone(),
                        detail: format!(
                            "the node presented key {}, which no manifest signed by the \
                             federation's governance lists for {}; ask your node's operator",
                            k.fingerprint(),
                            profile.agency
                        ),
                    });
                }
            }
            _ => {
                // Keep the cached manifest current, so a later key rotation finds the new key
                // already trusted. Best effort, except that a refusal (a withdrawn or expired
                // credential) is the node's answer to everything this caller would ask: it is
                // returned now, as the node can say it only once per connection.
                if let Err(e @ ClientError::Refused(_)) = client.manifest().await {
                    client.conn.close(0u32.into(), b"refused");
                    return Err(e);
                }
            }
        }
        // A credential signed by a key other than the one the node now presents was issued
        // before a key rotation: pick up the one re-issued under the new key, and save it.
        let server_key = crate::tls::peer_key(&client.conn);
        let signer = client
            .credential_env
            .signers(SignerRole::Node)
            .next()
            .copied();
        if server_key.is_some() && signer != server_key {
            if let Ok(true) = client.refresh_credential().await {
                let path = profile.resolve(&profile.credential_file);
                let saved =
                    crate::private::write_new(&path, &client.credential_env.to_bytes(), true)
                        .map(|()| path)
                        .map_err(|e| e.to_string());
                client.credential_refreshed = Some(saved);
            }
        }
        Ok(client)
    }

    /// Connects to `addr`, accepting only a node of `agency` holding one of `node_keys`.
    pub async fn connect(
        addr: SocketAddr,
        agency: &AgencyId,
        node_keys: Vec<PublicKey>,
        key: SecretKey,
        credential_env: Envelope,
        clock: Clock,
    ) -> Result<HomeClient, ClientError> {
        let policy = Arc::new(PinnedServer {
            agency: agency.to_string(),
            keys: node_keys.clone(),
        });
        HomeClient::connect_with_policy(
            &[addr],
            agency,
            node_keys,
            policy,
            key,
            credential_env,
            clock,
        )
        .await
    }

    /// As [`HomeClient::connect`], with the handshake's server check done by `policy`; answers
    /// are accepted when signed by one of `node_keys`.
    async fn connect_with_policy(
        addrs: &[SocketAddr],
        agency: &AgencyId,
        node_keys: Vec<PublicKey>,
        policy: Arc<dyn crate::tls::PeerPolicy>,
        key: SecretKey,
        credential_env: Envelope,
        clock: Clock,
    ) -> Result<HomeClient, ClientError> {
        let connect_err = |detail: String| ClientError::Connect {
            agency: agency.clone(),
            addr: addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            detail,
        };
        let credential: Credential = credential_env
            .open()
            .map_err(|e| ClientError::Protocol(format!("credential: {e}")))?;
        if credential.public_key != key.public() {
            return Err(ClientError::Protocol(
                "the credential is for a different key".into(),
            ));
        }
        let limits = Limits::default();
        let identity = TlsIdentity::new(&key, credential.person_id.as_str())
            .map_err(|e| connect_err(e.to_string()))?;
        let cfg =
            client_config(&identity, policy, &limits).map_err(|e| connect_err(e.to_string()))?;
        // One socket for every attempt: IPv6 (dual-stack) if any address needs it, loopback
        // only when every address is loopback.
        let bind: SocketAddr = if addrs.iter().any(SocketAddr::is_ipv6) {
            "[::]:0"
        } else if addrs.iter().all(|a| a.ip().is_loopback()) {
            "127.0.0.1:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| connect_err("bad bind address".into()))?;
        let endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
        let (_, conn) = tokio::time::timeout(
            limits.request_timeout(),
            crate::dial::first_handshake(&endpoint, &cfg, addrs, agency.as_str()),
        )
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.0))?;
        Ok(HomeClient {
            endpoint,
            conn,
            key,
            credential_env,
            credential,
            node_keys: std::sync::RwLock::new(node_keys),
            trusted: std::sync::RwLock::new(None),
            manifest_cache: None,
            clock,
            limits,
            sig_cache: Default::default(),
            credential_refreshed: None,
        })
    }

    /// The address this client reached: with several replicas, the one that answered first.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Whether connecting picked up a credential the node re-issued under its current key:
    /// `Some(Ok(file))` when it was saved into the profile, `Some(Err(why))` when it is used
    /// for this connection but could not be saved.
    pub fn credential_refreshed(&self) -> Option<&Result<PathBuf, String>> {
        self.credential_refreshed.as_ref()
    }

    /// Fetches the caller's credential as the home node holds it now (after a node key
    /// rotation, re-issued under the new key) and uses it from now on. The copy must be exactly
    /// the caller's credential (staff id, name, agency, roles, key, validity), signed by one of
    /// the home node's keys: a node can re-sign a credential, never widen it. Returns whether
    /// it differs from the one held.
    pub async fn refresh_credential(&mut self) -> Result<bool, ClientError> {
        let env = match self.call(ClientOp::RefreshCredential).await? {
            ClientResponse::Credential(env) => env,
            other => return Err(unexpected(&other)),
        };
        let body: Credential = env
            .open()
            .map_err(|e| ClientError::Invalid(format!("the re-issued credential: {e}")))?;
        if body != self.credential {
            return Err(ClientError::Invalid(
                "the home node's copy of your credential differs from yours (staff id, name, \
                 roles, key or validity); ask your node's operator"
                    .into(),
            ));
        }
        env.verify_by_any(SignerRole::Node, &self.node_keys())
            .map_err(|e| {
                ClientError::Invalid(format!(
                    "the re-issued credential is not signed by your home node: {e}"
                ))
            })?;
        if env == self.credential_env {
            return Ok(false);
        }
        self.credential_env = env;
        Ok(true)
    }

    /// The caller's credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The caller's signed credential.
    pub fn credential_envelope(&self) -> &Envelope {
        &self.credential_env
    }

    /// The caller's key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The clock used for timestamps.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn seal_request(&self, op: ClientOp) -> Envelope {
        let req = ClientRequest {
            issued_at: self.clock.now(),
            op,
        };
        Envelope::seal(&req, &[(SignerRole::Person, &self.key)])
    }

    fn open_answer(&self, env: &Envelope) -> Result<ClientResponse, ClientError> {
        env.verify_by_any(SignerRole::Node, &self.node_keys())
            .map_err(|e| {
                ClientError::Protocol(format!("answer not signed by the home node: {e}"))
            })?;
        if env.kind == MessageKind::Error {
            let body: ErrorBody = env
                .open()
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            return Err(ClientError::Refused(body));
        }
        env.open().map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Opens a stream and sends the signed request `op` on it.
    async fn send_request(
        &self,
        op: ClientOp,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        write_envelope(&mut send, &self.seal_request(op))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((send, recv))
    }

    /// Sends one request and returns the final answer; intermediate progress frames go to
    /// `on_progress`.
    pub async fn call_streaming(
        &self,
        op: ClientOp,
        mut on_progress: impl FnMut(HolderResult),
    ) -> Result<ClientResponse, ClientError> {
        let (mut send, mut recv) = self.send_request(op).await?;
        send.finish()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.read_answers(&mut recv, &mut on_progress).await
    }

    async fn read_answers(
        &self,
        recv: &mut quinn::RecvStream,
        on_progress: &mut impl FnMut(HolderResult),
    ) -> Result<ClientResponse, ClientError> {
        loop {
            let env = read_envelope(recv, self.limits.max_frame_bytes, Duration::from_secs(600))
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .ok_or_else(|| {
                    ClientError::Protocol(
                        "the home node closed the stream without answering".into(),
                    )
                })?;
            match self.open_answer(&env)? {
                ClientResponse::Progress(r) => on_progress(r),
                other => return Ok(other),
            }
        }
    }

    /// Sends one request and returns its answer.
    pub async fn call(&self, op: ClientOp) -> Result<ClientResponse, ClientError> {
        self.call_streaming(op, |_| {}).await
    }

    /// The manifest the home node trusts, verified for internal consistency.
    ///
    /// It must verify against the last manifest this client verified (governance threshold of
    /// both, no rollback); the home agency's keys it lists are then accepted on answers, and,
    /// with a profile, cached so later connections accept them too.
    pub async fn manifest(&self) -> Result<(Envelope, Manifest), ClientError> {
        let env = match self.call(ClientOp::GetManifest).await? {
            ClientResponse::Manifest(env) => env,
            other => return Err(unexpected(&other)),
        };
        let previous = self.trusted.read().ok().and_then(|t| t.clone());
        let m = throughgate_protocol::manifest::verify_manifest(
            &env,
            previous.as_ref(),
            self.clock.now(),
        )
        .map_err(|e| ClientError::Invalid(format!("the home node's manifest: {e}")))?;
        if previous.as_ref().is_none_or(|p| p.version < m.version) {
            if let Some(me) = m.member(&self.credential.agency) {
                if let Ok(mut keys) = self.node_keys.write() {
                    for k in &me.node_keys {
                        if !keys.contains(k) {
                            keys.push(*k);
                        }
                    }
                }
            }
            if let Some(path) = &self.manifest_cache {
                // Best effort: a cache that cannot be written only costs a re-fetch.
                let _ = crate::keyfile::write_private_file(path, &env.to_bytes());
            }
            if let Ok(mut t) = self.trusted.write() {
                *t = Some(m.clone());
            }
        }
        Ok((env, m))
    }

    fn node_keys(&self) -> Vec<PublicKey> {
        self.node_keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Builds and signs (as the caller) a query.
    pub fn sign_query(
        &self,
        passport_id: PassportId,
        consent_id: Option<ConsentId>,
        purpose: Purpose,
        requests: Vec<HolderRequest>,
        lifetime_secs: u64,
    ) -> Envelope {
        let now = self.clock.now();
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let q = Query {
            query_id: QueryId::random(),
            passport_id,
            consent_id,
            purpose,
            requests,
            requester: self.credential.agency.clone(),
            caseworker: self.credential.person_id.clone(),
            credential: self.credential_env.clone(),
            issued_at: now,
            expires_at: now.plus_secs(lifetime_secs),
            nonce,
        };
        // Remembered as verified, so that checking the bundle does not verify it again.
        let mut env = Envelope::seal(&q, &[]);
        env.add_signature_remembered(SignerRole::Person, &self.key, &self.sig_cache);
        env
    }

    /// Fans a signed query out through the home node; returns the countersigned query and every
    /// holder's result.
    ///
    /// With `on_progress`, the home node streams each holder's status as it answers (status
    /// only; the final answer carries the signed responses); without, it sends only the final
    /// answer, which saves a signature and a verification per holder.
    pub async fn assemble(
        &self,
        query: Envelope,
        on_progress: Option<&mut (dyn FnMut(HolderResult) + Send)>,
    ) -> Result<(Envelope, Vec<HolderResult>), ClientError> {
        let (query, results, _) = self.assemble_signed(query, on_progress).await?;
        Ok((query, results))
    }

    /// [`HomeClient::assemble`], also returning the home node's signed assembly statement.
    pub async fn assemble_signed(
        &self,
        query: Envelope,
        mut on_progress: Option<&mut (dyn FnMut(HolderResult) + Send)>,
    ) -> Result<(Envelope, Vec<HolderResult>, Envelope), ClientError> {
        let op = ClientOp::Assemble {
            query,
            progress: on_progress.is_some(),
        };
        match self
            .call_streaming(op, |r| {
                if let Some(f) = on_progress.as_mut() {
                    f(r);
                }
            })
            .await?
        {
            ClientResponse::Assembled {
                query,
                results,
                statement,
            } => Ok((query, results, statement)),
            other => Err(unexpected(&other)),
        }
    }

    /// Uploads a records file for import (all or nothing).
    pub async fn import(
        &self,
        format: ImportFormat,
        dry_run: bool,
        data: &[u8],
    ) -> Result<ImportReport, ClientError> {
        let sha256: [u8; 32] = Sha256::digest(data).into();
        self.import_stream(format, dry_run, data.len() as u64, sha256, data, None)
            .await
    }

    /// Uploads a records file held in memory as the complete current snapshot of some record
    /// kinds (operator): records of those kinds that it lacks are deleted.
    pub async fn sync(
        &self,
        format: ImportFormat,
        dry_run: bool,
        data: &[u8],
        sync: SyncRequest,
    ) -> Result<ImportReport, ClientError> {
        let sha256: [u8; 32] = Sha256::digest(data).into();
        self.import_stream(format, dry_run, data.len() as u64, sha256, data, Some(sync))
            .await
    }

    /// Deletes the records held about one subject: all of them, those of one kind, or one
    /// record (operator).
    pub async fn delete_records(
        &self,
        subject: &str,
        kind: Option<&str>,
        record_id: Option<&throughgate_protocol::ids::RecordId>,
    ) -> Result<DeletionReport, ClientError> {
        match self
            .call(ClientOp::DeleteRecords {
                subject: subject.to_owned(),
                kind: kind.map(str::to_owned),
                record_id: record_id.cloned(),
            })
            .await?
        {
            ClientResponse::RecordsDeleted(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Imports (or dry-runs) a records file from disk (operator), without reading it into
    /// memory: one pass for its SHA-256, then the upload. With `sync`, the file is the complete
    /// current snapshot of some record kinds.
    pub async fn import_file(
        &self,
        format: ImportFormat,
        dry_run: bool,
        path: &std::path::Path,
        sync: Option<SyncRequest>,
    ) -> Result<ImportReport, ClientError> {
        let io = |e: std::io::Error| ClientError::Protocol(format!("{}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        let total = std::io::copy(&mut file, &mut hasher).map_err(io)?;
        let sha256: [u8; 32] = hasher.finalize().into();
        let file = std::fs::File::open(path).map_err(io)?;
        self.import_stream(format, dry_run, total, sha256, file, sync)
            .await
    }

    /// Uploads `total_bytes` read from `data` (which must have that SHA-256) for import.
    async fn import_stream(
        &self,
        format: ImportFormat,
        dry_run: bool,
        total_bytes: u64,
        sha256: [u8; 32],
        data: impl std::io::Read,
        sync: Option<SyncRequest>,
    ) -> Result<ImportReport, ClientError> {
        use std::io::Read as _;
        let op = ClientOp::ImportRecords {
            format,
            dry_run,
            total_bytes,
            sha256,
            sync,
        };
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut data = data.take(total_bytes);
        let upload = async {
            write_envelope(&mut send, &self.seal_request(op)).await?;
            let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
            loop {
                chunk.clear();
                (&mut data)
                    .take(IMPORT_CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .map_err(|e| {
                        crate::transport::FrameIoError::Stream(format!("reading the file: {e}"))
                    })?;
                if chunk.is_empty() {
                    break;
                }
                write_frame(&mut send, &chunk).await?;
            }
            Ok::<(), crate::transport::FrameIoError>(())
        };
        // The node may answer (e.g. refuse for lack of a role) before it has read the upload and
        // stop reading: read its answer even if the upload was cut short.
        let uploaded = upload.await;
        if uploaded.is_ok() {
            let _ = send.finish();
        }
        match self.read_answers(&mut recv, &mut |_| {}).await {
            Ok(ClientResponse::Imported(r)) => Ok(r),
            Ok(other) => Err(unexpected(&other)),
            Err(e @ ClientError::Refused(_)) => Err(e),
            Err(e) => match uploaded {
                Err(up) => Err(ClientError::Protocol(format!(
                    "upload failed: {up}; then: {e}"
                ))),
                Ok(()) => Err(e),
            },
        }
    }

    /// Has the home node adopt and spread a governance-signed manifest (operator).
    pub async fn publish_manifest(&self, manifest: Envelope) -> Result<Envelope, ClientError> {
        match self.call(ClientOp::PublishManifest { manifest }).await? {
            ClientResponse::Manifest(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// Withdraws a member of staff's credential (operator).
    pub async fn revoke_staff(
        &self,
        person: &throughgate_protocol::ids::PersonId,
    ) -> Result<(), ClientError> {
        match self
            .call(ClientOp::RevokeStaff {
                person_id: person.clone(),
            })
            .await?
        {
            ClientResponse::Staff(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The home node's status and counts.
    pub async fn status(&self) -> Result<throughgate_protocol::messages::NodeStatus, ClientError> {
        match self.call(ClientOp::Status).await? {
            ClientResponse::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Switches the home node to its next key (operator).
    pub async fn rotate_key(
        &self,
    ) -> Result<throughgate_protocol::messages::NodeStatus, ClientError> {
        match self.call(ClientOp::RotateKey).await? {
            ClientResponse::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Has the home node take a consistent backup while it runs and writes it to `out`
    /// (operator). Returns the number of stored pairs and the file's SHA-256.
    pub async fn backup(&self, out: &std::path::Path) -> Result<(u64, [u8; 32]), ClientError> {
        self.download(ClientOp::Backup, out, false).await
    }

    /// As [`HomeClient::backup`]; with `force`, an existing `out` is replaced.
    pub async fn backup_to(
        &self,
        out: &std::path::Path,
        force: bool,
    ) -> Result<(u64, [u8; 32]), ClientError> {
        self.download(ClientOp::Backup, out, force).await
    }

    /// As [`HomeClient::export_records`]; with `force`, an existing `out` is replaced.
    pub async fn export_records_to(
        &self,
        format: ImportFormat,
        out: &std::path::Path,
        force: bool,
    ) -> Result<(u64, [u8; 32]), ClientError> {
        self.download(ClientOp::ExportRecords { format }, out, force)
            .await
    }

    /// Exports every record the home node holds to `out` (operator). Returns the number of
    /// records and the file's SHA-256.
    pub async fn export_records(
        &self,
        format: ImportFormat,
        out: &std::path::Path,
    ) -> Result<(u64, [u8; 32]), ClientError> {
        self.download(ClientOp::ExportRecords { format }, out, false)
            .await
    }

    /// Runs an operation whose answer is a file streamed in chunks, writing it to `out`
    /// (atomically, only if it arrives whole). The file is private (0600); the temporary file
    /// beside it is created exclusively under an unguessable name, and `out` is never written
    /// through a link nor replaced unless `force` is given.
    async fn download(
        &self,
        op: ClientOp,
        out: &std::path::Path,
        force: bool,
    ) -> Result<(u64, [u8; 32]), ClientError> {
        use std::io::Write as _;
        let io = |e: std::io::Error| ClientError::Protocol(format!("{}: {e}", out.display()));
        let private = ClientError::File;
        if !force && std::fs::symlink_metadata(out).is_ok() {
            return Err(private(crate::private::PrivateError::Exists(
                out.to_path_buf(),
            )));
        }
        let (mut send, mut recv) = self.send_request(op).await?;
        let _ = send.finish();
        let (file, tmp) = crate::private::create_temp(out).map_err(private)?;
        // Removes the temporary file (only ever the one created here) unless it was published.
        struct Cleanup<'a>(&'a std::path::Path);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(self.0);
            }
        }
        let _cleanup = Cleanup(&tmp);
        let mut file = std::io::BufWriter::new(file);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        loop {
            let env = read_envelope(
                &mut recv,
                self.limits.max_frame_bytes,
                Duration::from_secs(600),
            )
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .ok_or_else(|| ClientError::Protocol("the backup stream ended early".into()))?;
            match self.open_answer(&env)? {
                ClientResponse::FileChunk(bytes) => {
                    hasher.update(&bytes);
                    written += bytes.len() as u64;
                    file.write_all(&bytes).map_err(io)?;
                }
                ClientResponse::FileDone {
                    items,
                    bytes,
                    sha256,
                } => {
                    let got: [u8; 32] = hasher.finalize().into();
                    if got != sha256 || bytes != written {
                        return Err(ClientError::Invalid(
                            "the file arrived damaged; nothing was kept".into(),
                        ));
                    }
                    file.flush().map_err(io)?;
                    file.get_ref().sync_all().map_err(io)?;
                    drop(file);
                    crate::private::publish(&tmp, out, force).map_err(private)?;
                    return Ok((items, sha256));
                }
                other => {
                    return Err(unexpected(&other));
                }
            }
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        // Long enough for the close to go out (so the node frees the connection at once), short
        // enough not to hold up the command: draining the connection fully is not needed.
        let _ = tokio::time::timeout(Duration::from_millis(10), self.endpoint.wait_idle()).await;
    }
}

/// The home node's check for a profile: its known keys, or, when a verified manifest is cached
/// to anchor on, any key the node presents (accepted only once a newer manifest chaining from
/// the cached one lists it; see [`HomeClient::connect_profile_with_key`]).
#[derive(Debug)]
struct AnchoredServer {
    agency: String,
    keys: Vec<PublicKey>,
    anchored: bool,
}

impl crate::tls::PeerPolicy for AnchoredServer {
    fn server_allowed(&self, server_name: &str, key: &PublicKey) -> bool {
        if server_name != self.agency {
            return false;
        }
        self.anchored || self.keys.contains(key)
    }

    fn client_allowed(&self, _key: &PublicKey) -> bool {
        false
    }
}

/// A cached manifest, if present and still valid.
fn read_cached_manifest(
    path: &std::path::Path,
    now: throughgate_protocol::time::Timestamp,
) -> Option<Manifest> {
    let bytes = std::fs::read(path).ok()?;
    let env = Envelope::from_bytes(&bytes, 4 * 1024 * 1024).ok()?;
    throughgate_protocol::manifest::verify_manifest(&env, None, now).ok()
}

pub(crate) fn unexpected(r: &ClientResponse) -> ClientError {
    let name = match r {
        ClientResponse::Progress(_) => "progress",
        ClientResponse::Assembled { .. } => "assembled",
        ClientResponse::ConsentRecorded { .. } => "consent_recorded",
        ClientResponse::Consents(_) => "consents",
        ClientResponse::ConsentDetail { .. } => "consent_detail",
        ClientResponse::Imported(_) => "imported",
        ClientResponse::RecordsDeleted(_) => "records_deleted",
        ClientResponse::Credential(_) => "credential",
        ClientResponse::Staff(_) => "staff",
        ClientResponse::Status(_) => "status",
        ClientResponse::Manifest(_) => "manifest",
        ClientResponse::AuditEntries { .. } => "audit_entries",
        ClientResponse::AuditVerified(_) => "audit_verified",
        ClientResponse::AuditReport { .. } => "audit_report",
        ClientResponse::AuditCheckpoints(_) => "audit_checkpoints",
        ClientResponse::FileChunk(_) => "file_chunk",
        ClientResponse::FileDone { .. } => "file_done",
    };
    ClientError::Protocol(format!("unexpected {name} answer"))
}
