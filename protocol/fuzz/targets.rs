// The bodies of the protocol crate's fuzz targets, shared by two callers:
//
// * the cargo-fuzz targets in `protocol/fuzz/fuzz_targets/` (one per decoder), and
// * the replay test `protocol/tests/fuzz_replay.rs`, which runs every corpus file and a bounded,
//   deterministic random-mutation run through the same functions on stable Rust in CI.
//
// Both `include!` this file, so it uses only the public API of `throughgate-protocol` and the
// standard library. Every target takes arbitrary bytes and must return without panicking; where
// the input decodes, it also checks properties the specification promises (re-encoding round
// trips, strict parsers reproducing the exact text, verification never accepting what it
// should not). A panic here is a bug: either a decoder that panics, or a broken property.

use std::sync::OnceLock;

use throughgate_protocol::audit::{verify_audit_answer, verify_receipt, AuditEntry, Receipt};
use throughgate_protocol::bundle::{verify_bundle, verify_response, PassportBundle};
use throughgate_protocol::cbor;
use throughgate_protocol::checkpoint::{Checkpoint, SignedCheckpoint};
use throughgate_protocol::consent::{
    verify_consent, verify_revocation, Consent, ConsentGrant, ConsentRevocation,
};
use throughgate_protocol::credential::{
    verify_credential, Credential, CredentialAck, CredentialRevocation, StaffRole,
};
use throughgate_protocol::envelope::{Envelope, Message, MessageKind, SignerRole};
use throughgate_protocol::frame::{self, FrameDecoder};
use throughgate_protocol::identifiers::{normalise, IdScheme, SubjectIdentifier};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::manifest::{verify_manifest, Manifest};
use throughgate_protocol::messages::{
    Ack, AuditAnswer, AuditQuery, ClientRequest, ClientResponse, ErrorBody, ManifestSync, Query,
    Response, WitnessRequest, WitnessResponse,
};
use throughgate_protocol::note::{NoteSignature, SignedNote, VerifierKey};
use throughgate_protocol::query_check::check_query;
use throughgate_protocol::time::Timestamp;
use throughgate_protocol::witness::{
    verify_cosignature, verify_cosignature_threshold, verify_cosigned,
};

/// The fixture clock of the protocol vectors (`protocol/vectors/README.md`).
pub const NOW: Timestamp = Timestamp(1_790_000_000);

/// The fixture federation's manifest (vector `manifest/valid-v1`), as an envelope in hex.
const MANIFEST_HEX: &str = include_str!("fixtures/manifest.hex");
/// The fixture query (vector `body/query`), as an envelope in hex.
const QUERY_HEX: &str = include_str!("fixtures/query.hex");
/// The text of nhs-wy's 3-entry fixture checkpoint, which hmp-leeds cosigns in the vectors.
pub const CHECKPOINT_TEXT: &str =
    "throughgate/nhs-wy/audit\n3\nTl9IT4ILB3OIy1wUIIaFTjhM5/fIbUSfMjBERThGvzc=\n";

/// What the targets check against: the fixture federation of the protocol vectors.
pub struct Fixture {
    /// The manifest envelope.
    pub manifest_env: Envelope,
    /// Its body.
    pub manifest: Manifest,
    /// The fixture query envelope and body.
    pub query_env: Envelope,
    /// Its body.
    pub query: Query,
    /// `nhs-wy`, whose receipts and checkpoints the vectors carry.
    pub nhs: AgencyId,
    /// Its node key.
    pub nhs_key: PublicKey,
    /// `hmp-leeds`, the vectors' witness.
    pub leeds: AgencyId,
    /// Its node key.
    pub leeds_key: PublicKey,
}

fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s.trim()).unwrap_or_default()
}

/// The fixture, decoded once. The fixture files are the project's own vectors: if they do not
/// decode, every target would be meaningless, so this is the one place allowed to panic.
#[allow(clippy::expect_used)]
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let manifest_env = Envelope::from_bytes(&hex_bytes(MANIFEST_HEX), frame::DEFAULT_MAX_FRAME)
            .expect("fixture manifest envelope");
        let manifest: Manifest = manifest_env.open().expect("fixture manifest body");
        let query_env = Envelope::from_bytes(&hex_bytes(QUERY_HEX), frame::DEFAULT_MAX_FRAME)
            .expect("fixture query envelope");
        let query: Query = query_env.open().expect("fixture query body");
        let nhs = AgencyId::new("nhs-wy").expect("agency id");
        let leeds = AgencyId::new("hmp-leeds").expect("agency id");
        let key = |a: &AgencyId| {
            manifest
                .member(a)
                .and_then(|m| m.node_keys.first().copied())
                .expect("fixture member key")
        };
        let nhs_key = key(&nhs);
        let leeds_key = key(&leeds);
        Fixture {
            manifest_env,
            manifest,
            query_env,
            query,
            nhs,
            nhs_key,
            leeds,
            leeds_key,
        }
    })
}

/// Decodes `data` as a body of type `M` exactly as a receiver does (`Envelope::open`, within the
/// kind's body limit); if it decodes, its canonical re-encoding must decode to the same value.
fn body_round_trip<M>(data: &[u8]) -> Option<M>
where
    M: Message + PartialEq + std::fmt::Debug,
{
    let env = Envelope {
        kind: M::KIND,
        body: data.to_vec(),
        sigs: Vec::new(),
    };
    let value: M = env.open().ok()?;
    let again = cbor::to_vec(&value);
    match cbor::from_slice::<M>(M::KIND.as_str(), &again, usize::MAX) {
        Ok(v) => assert_eq!(v, value, "{} does not round-trip", M::KIND),
        Err(e) => panic!("{} re-encoding does not decode: {e}", M::KIND),
    }
    Some(value)
}

// ---------------------------------------------------------------------------------------------
// Framing and envelopes.

/// The sans-IO frame decoder. The first byte picks the frame limit and how the rest is split
/// into pushes; whatever frames come out must re-encode to exactly the bytes consumed.
pub fn frame(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let max = match ctl & 3 {
        0 => 16,
        1 => 1024,
        2 => 65_536,
        _ => frame::DEFAULT_MAX_FRAME,
    };
    let chunk = usize::from(ctl >> 2).max(1);
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut failed = false;
    'feed: for piece in rest.chunks(chunk) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= max, "frame outside the limit");
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    if !failed && d.finish().is_ok() {
        let again: Vec<u8> = frames.iter().flat_map(|f| frame::encode(f)).collect();
        assert_eq!(again, rest, "frames do not re-encode to the stream");
    }
    if let Some(h) = rest.get(..frame::HEADER_LEN) {
        let mut header = [0u8; frame::HEADER_LEN];
        header.copy_from_slice(h);
        if let Ok(n) = frame::check_header(header, max) {
            assert!(n >= 1 && n <= max);
        }
    }
}

/// Runs the checks a receiver runs on an envelope of `kind` with the fixture federation.
fn check_envelope(env: &Envelope) {
    let fx = fixture();
    match env.kind {
        MessageKind::Query => {
            let _ = check_query(env, &fx.manifest, NOW);
        }
        MessageKind::Response => {
            let _ = verify_response(env, &fx.query_env, &fx.query, &fx.nhs, &fx.manifest);
        }
        MessageKind::Consent => {
            let _ = verify_consent(env, &fx.manifest);
        }
        MessageKind::ConsentRevoke => {
            let _ = verify_revocation(env, &fx.manifest);
        }
        MessageKind::Credential => {
            for role in [StaffRole::Caseworker, StaffRole::Dpo, StaffRole::Operator] {
                for m in &fx.manifest.members {
                    let _ = verify_credential(env, &m.id, &m.node_keys, NOW, role);
                }
            }
        }
        MessageKind::Manifest => {
            let _ = verify_manifest(env, None, NOW);
            let _ = verify_manifest(env, Some(&fx.manifest), NOW);
        }
        MessageKind::AuditAnswer => {
            let _ = verify_audit_answer(env, &fx.query_env, &fx.nhs, &[fx.nhs_key]);
        }
        _ => {}
    }
    for m in &fx.manifest.members {
        let _ = env.verify_by_any(SignerRole::Node, &m.node_keys);
    }
    let _ = env.verify_threshold(
        SignerRole::Governance,
        &fx.manifest.governance.keys,
        fx.manifest.governance.threshold as usize,
    );
}

/// Decodes the body of an envelope by its kind (what a receiver does after checking the kind).
fn open_body(env: &Envelope) {
    let b = env.body.as_slice();
    match env.kind {
        MessageKind::Query => drop(body_round_trip::<Query>(b)),
        MessageKind::Response => drop(body_round_trip::<Response>(b)),
        MessageKind::Consent => drop(body_round_trip::<Consent>(b)),
        MessageKind::ConsentGrant => drop(body_round_trip::<ConsentGrant>(b)),
        MessageKind::ConsentRevoke => drop(body_round_trip::<ConsentRevocation>(b)),
        MessageKind::Ack => drop(body_round_trip::<Ack>(b)),
        MessageKind::Error => drop(body_round_trip::<ErrorBody>(b)),
        MessageKind::Credential => drop(body_round_trip::<Credential>(b)),
        MessageKind::Manifest => drop(body_round_trip::<Manifest>(b)),
        MessageKind::ClientRequest => drop(body_round_trip::<ClientRequest>(b)),
        MessageKind::ClientResponse => drop(body_round_trip::<ClientResponse>(b)),
        MessageKind::WitnessRequest => drop(body_round_trip::<WitnessRequest>(b)),
        MessageKind::WitnessResponse => drop(body_round_trip::<WitnessResponse>(b)),
        MessageKind::AuditQuery => drop(body_round_trip::<AuditQuery>(b)),
        MessageKind::AuditAnswer => drop(body_round_trip::<AuditAnswer>(b)),
        MessageKind::ManifestSync => drop(body_round_trip::<ManifestSync>(b)),
        MessageKind::CredentialRevoke => drop(body_round_trip::<CredentialRevocation>(b)),
        MessageKind::CredentialAck => drop(body_round_trip::<CredentialAck>(b)),
        MessageKind::Assembly => drop(body_round_trip::<
            throughgate_protocol::assembly::AssemblyStatement,
        >(b)),
    }
}

/// An envelope as it arrives in a frame: decoded within the frame limit, at most 16
/// signatures; it must round-trip; its body is opened by its kind and the receiver's checks run
/// against the fixture federation.
pub fn envelope(data: &[u8]) {
    let Ok(env) = Envelope::from_bytes(data, frame::DEFAULT_MAX_FRAME) else {
        return;
    };
    assert!(env.sigs.len() <= 16, "more than 16 signatures decoded");
    match Envelope::from_bytes(&env.to_bytes(), usize::MAX) {
        Ok(again) => assert_eq!(again, env, "envelope does not round-trip"),
        Err(e) => panic!("envelope re-encoding does not decode: {e}"),
    }
    open_body(&env);
    check_envelope(&env);
}

// ---------------------------------------------------------------------------------------------
// Message bodies, one target each.

/// `query` body.
pub fn body_query(data: &[u8]) {
    if let Some(q) = body_round_trip::<Query>(data) {
        let _ = q.request_for(&fixture().nhs);
    }
}

/// `response` body.
pub fn body_response(data: &[u8]) {
    if let Some(r) = body_round_trip::<Response>(data) {
        let fx = fixture();
        let _ = verify_receipt(&r.receipt, &fx.nhs, &[fx.nhs_key]);
        let _ = r.withheld.is_empty();
    }
}

/// `consent` body.
pub fn body_consent(data: &[u8]) {
    if let Some(c) = body_round_trip::<Consent>(data) {
        let _ = c.validate();
        let _ = c.recipients();
        let _ = c.scope_for(&fixture().nhs);
    }
}

/// `consent_grant` body (the consent inside is an envelope, opened too).
pub fn body_consent_grant(data: &[u8]) {
    if let Some(g) = body_round_trip::<ConsentGrant>(data) {
        let _ = verify_consent(&g.consent, &fixture().manifest);
        if let Some(s) = &g.subject {
            let _ = s.validate();
        }
    }
}

/// `consent_revoke` body.
pub fn body_consent_revoke(data: &[u8]) {
    drop(body_round_trip::<ConsentRevocation>(data));
}

/// `ack` body.
pub fn body_ack(data: &[u8]) {
    drop(body_round_trip::<Ack>(data));
}

/// `error` body.
pub fn body_error(data: &[u8]) {
    drop(body_round_trip::<ErrorBody>(data));
}

/// `credential` body.
pub fn body_credential(data: &[u8]) {
    if let Some(c) = body_round_trip::<Credential>(data) {
        let _ = throughgate_protocol::credential::check_window(&c, NOW);
    }
}

/// `manifest` body (structure checks included).
pub fn body_manifest(data: &[u8]) {
    if let Some(m) = body_round_trip::<Manifest>(data) {
        let _ = m.validate();
    }
}

/// `client_request` body.
pub fn body_client_request(data: &[u8]) {
    drop(body_round_trip::<ClientRequest>(data));
}

/// `client_response` body.
pub fn body_client_response(data: &[u8]) {
    drop(body_round_trip::<ClientResponse>(data));
}

/// `witness_request` body: the checkpoint inside is parsed as a witness would.
pub fn body_witness_request(data: &[u8]) {
    if let Some(w) = body_round_trip::<WitnessRequest>(data) {
        if let Ok(s) = SignedCheckpoint::parse(w.checkpoint.as_bytes()) {
            let fx = fixture();
            let _ = s.verify(&throughgate_protocol::audit::origin(&fx.nhs), &fx.nhs_key);
        }
    }
}

/// `witness_response` body: the cosignature line inside is parsed as the log would.
pub fn body_witness_response(data: &[u8]) {
    if let Some(w) = body_round_trip::<WitnessResponse>(data) {
        if let Some(line) = &w.cosignature {
            if let Ok(sig) = NoteSignature::parse(line) {
                let fx = fixture();
                let _ = verify_cosignature(
                    CHECKPOINT_TEXT,
                    &sig,
                    "throughgate/hmp-leeds/witness",
                    &fx.leeds_key,
                );
            }
        }
    }
}

/// `audit_query` body.
pub fn body_audit_query(data: &[u8]) {
    drop(body_round_trip::<AuditQuery>(data));
}

/// `audit_answer` body: the access receipt is verified as nhs-wy's.
pub fn body_audit_answer(data: &[u8]) {
    if let Some(a) = body_round_trip::<AuditAnswer>(data) {
        let fx = fixture();
        let _ = verify_receipt(&a.access_receipt, &fx.nhs, &[fx.nhs_key]);
    }
}

/// `manifest_sync` body: the manifest inside is verified against the fixture one.
pub fn body_manifest_sync(data: &[u8]) {
    if let Some(s) = body_round_trip::<ManifestSync>(data) {
        let _ = verify_manifest(&s.manifest, Some(&fixture().manifest), NOW);
    }
}

/// `credential_revoke` body.
pub fn body_credential_revoke(data: &[u8]) {
    drop(body_round_trip::<CredentialRevocation>(data));
}

/// `credential_ack` body.
pub fn body_credential_ack(data: &[u8]) {
    drop(body_round_trip::<CredentialAck>(data));
}

// ---------------------------------------------------------------------------------------------
// Verification of whole documents.

/// Manifest verification (SPEC 13) of an envelope, alone and against the trusted fixture
/// manifest. An accepted manifest must be valid, unexpired and at least the trusted version.
pub fn manifest_verify(data: &[u8]) {
    let Ok(env) = Envelope::from_bytes(data, frame::DEFAULT_MAX_FRAME) else {
        return;
    };
    let fx = fixture();
    if let Ok(m) = verify_manifest(&env, None, NOW) {
        assert!(m.validate().is_ok(), "accepted an invalid manifest");
        assert!(NOW < m.expires_at, "accepted an expired manifest");
    }
    if let Ok(m) = verify_manifest(&env, Some(&fx.manifest), NOW) {
        assert!(m.version >= fx.manifest.version, "accepted a rollback");
        assert_eq!(
            m.federation, fx.manifest.federation,
            "accepted another federation"
        );
        if m.version == fx.manifest.version {
            assert_eq!(
                m, fx.manifest,
                "accepted a different document as the same version"
            );
        }
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Checkpoint parsing: the bare checkpoint text and a signed checkpoint. Parsing is strict, so
/// whatever parses must re-serialise to exactly the input.
pub fn checkpoint(data: &[u8]) {
    if let Some(t) = text(data) {
        if let Ok(c) = Checkpoint::from_note_text(t) {
            assert_eq!(c.to_note_text(), t, "checkpoint text does not round-trip");
            assert!(c.validate().is_ok());
        }
    }
    if let Ok(s) = SignedCheckpoint::parse(data) {
        assert_eq!(
            s.to_text().as_bytes(),
            data,
            "signed checkpoint does not round-trip"
        );
        assert_eq!(s.checkpoint().to_note_text(), s.note().text());
        let fx = fixture();
        let origin = throughgate_protocol::audit::origin(&fx.nhs);
        let _ = s.verify(&origin, &fx.nhs_key);
        let _ = SignedCheckpoint::open(data, &origin, &origin, &fx.nhs_key);
    }
}

/// Signed notes and verifier keys.
pub fn note(data: &[u8]) {
    if let Ok(n) = SignedNote::parse(data) {
        assert_eq!(
            n.to_text().as_bytes(),
            data,
            "signed note does not round-trip"
        );
        let fx = fixture();
        let _ = n.verify(&throughgate_protocol::audit::origin(&fx.nhs), &fx.nhs_key);
        if let Ok(again) = SignedNote::parse(n.to_text().as_bytes()) {
            assert_eq!(again, n);
        }
    }
    if let Some(t) = text(data) {
        if let Ok(k) = VerifierKey::parse(t) {
            assert_eq!(
                k.key_id(),
                throughgate_protocol::note::key_id(&k.name, k.sig_type, k.key.as_bytes())
            );
        }
        let _ = SignedNote::new(t);
    }
}

/// Witness cosignatures: the input as one cosignature line over the fixture checkpoint, and as
/// a whole cosigned checkpoint.
pub fn cosignature(data: &[u8]) {
    let fx = fixture();
    let witness = "throughgate/hmp-leeds/witness";
    if let Some(t) = text(data) {
        if let Ok(sig) = NoteSignature::parse(t) {
            let line = sig.to_line();
            assert_eq!(
                NoteSignature::parse(&line).ok().as_ref(),
                Some(&sig),
                "signature line does not round-trip"
            );
            let _ = verify_cosignature(CHECKPOINT_TEXT, &sig, witness, &fx.leeds_key);
        }
    }
    if let Ok(s) = SignedCheckpoint::parse(data) {
        let _ = verify_cosigned(&s, witness, &fx.leeds_key);
        let _ = verify_cosignature_threshold(&s, &[(witness, fx.leeds_key)], 1);
    }
}

/// Audit receipts (SPEC 16.4): decoded from CBOR and verified as nhs-wy's. A verified receipt's
/// entry must belong to nhs-wy and re-decode from its bytes.
pub fn receipt(data: &[u8]) {
    let Ok(r) = cbor::from_slice::<Receipt>("receipt", data, frame::DEFAULT_MAX_FRAME) else {
        return;
    };
    let fx = fixture();
    if let Ok(v) = verify_receipt(&r, &fx.nhs, &[fx.nhs_key]) {
        assert_eq!(v.entry.node, fx.nhs, "verified another node's entry");
        assert!(r.leaf_index < v.checkpoint.checkpoint().size);
        assert_eq!(AuditEntry::from_bytes(&r.entry).ok(), Some(v.entry));
    }
    let _ = verify_receipt(&r, &fx.leeds, &[fx.leeds_key]);
}

/// Passport bundles (SPEC 14): decoded and verified against the fixture manifest.
pub fn bundle(data: &[u8]) {
    let Ok(b) = PassportBundle::from_bytes(data) else {
        return;
    };
    match PassportBundle::from_bytes(&b.to_bytes()) {
        Ok(again) => assert_eq!(again, b, "bundle does not round-trip"),
        Err(e) => panic!("bundle re-encoding does not decode: {e}"),
    }
    if let Ok(v) = verify_bundle(&b, &fixture().manifest) {
        assert_eq!(v.results.len(), b.results.len());
        let _ = v.all_valid();
    }
}

/// Identifier normalisation (SPEC 12.1): the first byte picks the scheme. A normalised value
/// is valid and normalising it again changes nothing.
pub fn identifier(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let Some(&scheme) = IdScheme::ALL.get(usize::from(ctl) % IdScheme::ALL.len()) else {
        return;
    };
    let raw = String::from_utf8_lossy(rest);
    if let Ok(v) = normalise(scheme, &raw) {
        assert_eq!(
            normalise(scheme, &v).ok().as_deref(),
            Some(v.as_str()),
            "not idempotent"
        );
        let id = SubjectIdentifier {
            scheme,
            value: v.clone(),
        };
        assert!(id.validate().is_ok(), "normalised value does not validate");
        assert!(!v.chars().any(char::is_whitespace));
    }
    if let Ok(id) = SubjectIdentifier::parse(scheme, &raw) {
        assert!(id.validate().is_ok());
    }
}

/// A target: its name (the cargo-fuzz target and corpus folder name) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("frame", frame),
    ("envelope", envelope),
    ("body_query", body_query),
    ("body_response", body_response),
    ("body_consent", body_consent),
    ("body_consent_grant", body_consent_grant),
    ("body_consent_revoke", body_consent_revoke),
    ("body_ack", body_ack),
    ("body_error", body_error),
    ("body_credential", body_credential),
    ("body_manifest", body_manifest),
    ("body_client_request", body_client_request),
    ("body_client_response", body_client_response),
    ("body_witness_request", body_witness_request),
    ("body_witness_response", body_witness_response),
    ("body_audit_query", body_audit_query),
    ("body_audit_answer", body_audit_answer),
    ("body_manifest_sync", body_manifest_sync),
    ("body_credential_revoke", body_credential_revoke),
    ("body_credential_ack", body_credential_ack),
    ("manifest_verify", manifest_verify),
    ("checkpoint", checkpoint),
    ("note", note),
    ("cosignature", cosignature),
    ("receipt", receipt),
    ("bundle", bundle),
    ("identifier", identifier),
];
