//! Frames, CBOR and signed envelopes: what malformed input gets, and how signatures are checked
//! (over the exact bytes received, domain-separated by kind and role, strictly).

use throughgate_protocol::category::Category;
use throughgate_protocol::envelope::{Envelope, MessageKind, Signature, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{ErrorCode, HolderRequest, Query, RefusalReason};

use super::{case, refusal_of_env};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft::{self, RawEnvelope};
use crate::peer::End;

/// The envelope cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Envelope;
    vec![
        case!(a, "envelope.garbage_cbor", "a frame of bytes that are not CBOR gets error malformed", garbage_cbor),
        case!(a, "envelope.not_an_envelope", "valid CBOR that is not an envelope gets error malformed", not_an_envelope),
        case!(a, "envelope.unknown_kind", "an envelope of an unknown kind gets error malformed or unsupported_kind", unknown_kind),
        case!(a, "envelope.response_kind_refused", "a response sent to a holder gets error unsupported_kind", response_kind_refused),
        case!(a, "envelope.client_request_from_peer_refused", "a client_request from a member node gets error unsupported_kind or forbidden", client_request_from_peer),
        case!(a, "envelope.body_of_other_kind", "a consent_grant envelope whose body is a query gets error malformed or bad_request", body_of_other_kind),
        case!(a, "envelope.oversized_announcement", "a frame announcing 4 GiB gets error too_large without the bytes being sent", oversized_announcement),
        case!(a, "envelope.truncated_frame", "a stream ending inside a frame's payload gets error malformed", truncated_frame),
        case!(a, "envelope.truncated_header", "a stream ending inside the 4-byte length gets error malformed", truncated_header),
        case!(a, "envelope.empty_frame", "a zero-length frame gets error malformed", empty_frame),
        case!(a, "envelope.trailing_bytes", "an envelope followed by extra bytes inside its frame gets error malformed", trailing_bytes),
        case!(a, "envelope.deep_nesting", "an envelope with an extra key holding 5000 nested arrays gets error malformed (nesting over 32 refused, no stack exhaustion)", deep_nesting),
        case!(a, "envelope.duplicate_map_key", "an envelope map with the key kind twice gets error malformed", duplicate_map_key),
        case!(a, "envelope.keys_in_any_order", "an envelope and query body whose map keys arrive in reverse order, signed as sent, are accepted (no_consent)", keys_in_any_order),
        case!(a, "envelope.weak_key_refused", "a query carrying an extra signature whose key is a small-order point (the identity) is refused as malformed when decoding", weak_key_refused),
        case!(a, "envelope.vectors_undecodable", "every protocol vector of an undecodable envelope (invalid, trailing_bytes, too_many_signatures) gets error malformed", vectors_undecodable),
        case!(a, "envelope.vectors_frames", "protocol frame vectors: empty -> malformed, truncated in the first frame -> malformed, announcing over 64 MiB -> too_large", vectors_frames),
        case!(a, "envelope.huge_declared_length", "a byte string declaring 2^63 bytes gets error malformed (no allocation)", huge_declared_length),
        case!(a, "envelope.body_not_cbor", "a signed query envelope whose body is not CBOR gets error malformed", body_not_cbor),
        case!(a, "envelope.body_trailing_bytes", "a signed query body with trailing bytes gets error malformed", body_trailing_bytes),
        case!(a, "envelope.body_over_limit", "a signed query body over the 64 KiB query limit gets error malformed or too_large", body_over_limit),
        case!(a, "envelope.too_many_signatures", "an envelope with 17 signatures gets error malformed", too_many_signatures),
        case!(a, "envelope.sixteen_signatures_accepted", "a valid query carrying 16 signatures (14 by unlisted keys) is processed (no_consent)", sixteen_signatures),
        case!(a, "envelope.bad_node_signature", "a query whose node signature has one flipped bit is refused requester_signature_invalid", bad_node_signature),
        case!(a, "envelope.node_signature_missing", "a query without a node signature is refused requester_signature_invalid", node_signature_missing),
        case!(a, "envelope.node_signature_by_stranger", "a query countersigned by a key not listed for the requester is refused requester_signature_invalid", node_signature_by_stranger),
        case!(a, "envelope.signature_other_kind", "a node signature made for kind response over the same body is refused requester_signature_invalid", signature_other_kind),
        case!(a, "envelope.signature_wrong_role", "a node-key signature made in role person but labelled node is refused requester_signature_invalid", signature_wrong_role),
        case!(a, "envelope.body_tampered_after_signing", "a query whose body changed by one byte after signing is refused requester_signature_invalid", body_tampered),
        case!(a, "envelope.malleated_signature", "a node signature with S replaced by S+L is refused requester_signature_invalid (strict verification)", malleated_signature),
        case!(a, "envelope.non_canonical_body_verified_as_sent", "a query body in a valid non-canonical encoding (its keys in reverse order), signed as sent, is verified as sent and answered (no_consent) naming the digest of those bytes", non_canonical_body),
    ]
}

async fn raw_error(ctx: &Ctx, bytes: &[u8], codes: &[ErrorCode]) -> CaseResult {
    let conn = ctx.conn().await?;
    let answer = conn.exchange_raw(bytes, End::Finish).await?;
    let e = check::error(&answer, codes)?;
    conn.close();
    Ok(format!(
        "error {}: {}",
        e.code,
        e.message.chars().take(100).collect::<String>()
    ))
}

async fn garbage_cbor(ctx: &Ctx) -> CaseResult {
    raw_error(
        ctx,
        &craft::frame(b"\xff\xfe\xfdnot cbor"),
        &[ErrorCode::Malformed],
    )
    .await
}

async fn not_an_envelope(ctx: &Ctx) -> CaseResult {
    // {"kind": "query"}: a map missing body and sigs.
    let bytes = craft::cbor(&std::collections::BTreeMap::from([("kind", "query")]));
    raw_error(ctx, &craft::frame(&bytes), &[ErrorCode::Malformed]).await
}

fn domain(kind: &str, role: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for part in [
        throughgate_protocol::PROTOCOL_NAME.as_bytes(),
        throughgate_protocol::PROTOCOL_VERSION
            .to_string()
            .as_bytes(),
        kind.as_bytes(),
        role.as_bytes(),
    ] {
        v.extend_from_slice(part);
        v.push(0);
    }
    v.extend_from_slice(body);
    v
}

async fn unknown_kind(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let body = craft::cbor(&q);
    let key = ctx.me.node_key();
    let raw = RawEnvelope {
        kind: "frobnicate".into(),
        sigs: vec![craft::RawSignature::from(&Signature {
            role: SignerRole::Node,
            key: key.public(),
            sig: key.sign(&domain("frobnicate", "node", &body)),
        })],
        body,
    };
    raw_error(
        ctx,
        &craft::frame(&craft::cbor(&raw)),
        &[ErrorCode::Malformed, ErrorCode::UnsupportedKind],
    )
    .await
}

async fn response_kind_refused(ctx: &Ctx) -> CaseResult {
    let env = Envelope::seal_bytes(
        MessageKind::Response,
        craft::cbor(&"not really a response"),
        &[(SignerRole::Node, ctx.me.node_key())],
    );
    raw_error(
        ctx,
        &craft::frame(&env.to_bytes()),
        &[ErrorCode::UnsupportedKind],
    )
    .await
}

async fn client_request_from_peer(ctx: &Ctx) -> CaseResult {
    let env = Envelope::seal_bytes(
        MessageKind::ClientRequest,
        craft::cbor(&"status"),
        &[(SignerRole::Person, &ctx.me.cw.key)],
    );
    raw_error(
        ctx,
        &craft::frame(&env.to_bytes()),
        &[ErrorCode::UnsupportedKind, ErrorCode::Forbidden],
    )
    .await
}

async fn body_of_other_kind(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = Envelope::seal_bytes(
        MessageKind::ConsentGrant,
        craft::cbor(&q),
        &[(SignerRole::Node, ctx.me.node_key())],
    );
    raw_error(
        ctx,
        &craft::frame(&env.to_bytes()),
        &[ErrorCode::Malformed, ErrorCode::BadRequest],
    )
    .await
}

async fn oversized_announcement(ctx: &Ctx) -> CaseResult {
    raw_error(
        ctx,
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        &[ErrorCode::TooLarge],
    )
    .await
}

async fn truncated_frame(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let full = craft::frame(&craft::seal_query(&ctx.me, &q).to_bytes());
    let cut = full.get(..full.len() / 2).unwrap_or_default();
    raw_error(ctx, cut, &[ErrorCode::Malformed]).await
}

async fn truncated_header(ctx: &Ctx) -> CaseResult {
    raw_error(ctx, &[0, 0], &[ErrorCode::Malformed]).await
}

async fn empty_frame(ctx: &Ctx) -> CaseResult {
    raw_error(ctx, &[0, 0, 0, 0], &[ErrorCode::Malformed]).await
}

async fn trailing_bytes(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut payload = craft::seal_query(&ctx.me, &q).to_bytes();
    payload.extend_from_slice(&[0x00, 0x01]);
    raw_error(ctx, &craft::frame(&payload), &[ErrorCode::Malformed]).await
}

async fn deep_nesting(ctx: &Ctx) -> CaseResult {
    // A valid query envelope with a fourth key, "pad", whose value nests 5000 arrays: a
    // decoder that skips unknown keys by descending into them must stop at its depth limit.
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = craft::seal_query(&ctx.me, &q);
    let mut payload = vec![0xa4];
    payload.extend_from_slice(&craft::cbor(&"kind"));
    payload.extend_from_slice(&craft::cbor(&"query"));
    payload.extend_from_slice(&craft::cbor(&"body"));
    payload.extend_from_slice(&craft::cbor(&serde_bytes::Bytes::new(&env.body)));
    payload.extend_from_slice(&craft::cbor(&"sigs"));
    payload.extend_from_slice(&craft::cbor(&env.sigs));
    payload.extend_from_slice(&craft::cbor(&"pad"));
    payload.extend(std::iter::repeat_n(0x81u8, 5000));
    payload.push(0x00);
    let out = raw_error(ctx, &craft::frame(&payload), &[ErrorCode::Malformed]).await?;
    // And the node is still there.
    let conn = ctx.conn().await?;
    let q = craft::unconsented_query(ctx, &ctx.me);
    let (env, answer) = super::send_query(&conn, &ctx.me, &q).await?;
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    Ok(out)
}

async fn duplicate_map_key(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = craft::seal_query(&ctx.me, &q);
    let payload = craft::edit_map(&env.to_bytes(), |m| {
        if let Some(first) = m.first().cloned() {
            m.push(first);
        }
    })
    .ok_or_else(|| CaseError::Fail("suite: envelope is not a map".into()))?;
    raw_error(ctx, &craft::frame(&payload), &[ErrorCode::Malformed]).await
}

async fn keys_in_any_order(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let body = craft::edit_map(&craft::cbor(&q), |m| m.reverse())
        .ok_or_else(|| CaseError::Fail("suite: query is not a map".into()))?;
    let env = Envelope::seal_bytes(
        MessageKind::Query,
        body,
        &[
            (SignerRole::Person, &ctx.me.cw.key),
            (SignerRole::Node, ctx.me.node_key()),
        ],
    );
    let payload = craft::edit_map(&env.to_bytes(), |m| m.reverse())
        .ok_or_else(|| CaseError::Fail("suite: envelope is not a map".into()))?;
    let conn = ctx.conn().await?;
    let answer = conn
        .exchange_raw(&craft::frame(&payload), End::Finish)
        .await?;
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    Ok("reversed keys accepted: no_consent, digest over the bytes sent".into())
}

async fn weak_key_refused(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = craft::seal_query(&ctx.me, &q);
    let mut raw = RawEnvelope::from(&env);
    let mut identity = vec![0u8; 32];
    if let Some(b) = identity.first_mut() {
        *b = 1;
    }
    raw.sigs.push(craft::RawSignature {
        role: "node".into(),
        key: identity,
        sig: vec![0u8; 64],
    });
    raw_error(
        ctx,
        &craft::frame(&craft::cbor(&raw)),
        &[ErrorCode::Malformed],
    )
    .await
}

/// Sends each vector's bytes on its own stream of one connection; collects mismatches.
async fn replay_vectors(
    ctx: &Ctx,
    picked: &[(&'static crate::vectors::Vector, Vec<u8>, ErrorCode)],
) -> CaseResult {
    if picked.is_empty() {
        return fail("the suite was built without protocol vectors (protocol/vectors/messages)");
    }
    let conn = ctx.conn().await?;
    let mut bad = Vec::new();
    for (v, bytes, code) in picked {
        let answer = conn.exchange_raw(bytes, End::Finish).await?;
        if let Err(e) = check::error(&answer, &[*code]) {
            bad.push(format!("{} ({}): {e}", v.id, v.expect));
        }
    }
    conn.close();
    if bad.is_empty() {
        Ok(format!(
            "{} vectors: {}",
            picked.len(),
            picked
                .iter()
                .map(|(v, _, _)| v.id)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        fail(bad.join("; "))
    }
}

async fn vectors_undecodable(ctx: &Ctx) -> CaseResult {
    let picked: Vec<_> = crate::vectors::VECTORS
        .iter()
        .filter(|v| {
            v.group() == "envelope"
                && v.message.is_none()
                && v.max_bytes.is_none()
                && ["invalid", "trailing_bytes", "too_many_signatures"].contains(&v.expect)
        })
        .filter_map(|v| {
            v.bytes()
                .map(|b| (v, craft::frame(&b), ErrorCode::Malformed))
        })
        .collect();
    replay_vectors(ctx, &picked).await
}

async fn vectors_frames(ctx: &Ctx) -> CaseResult {
    const MAX_CONFIGURABLE: u64 = 64 * 1024 * 1024;
    let picked: Vec<_> = crate::vectors::VECTORS
        .iter()
        .filter(|v| v.group() == "frame")
        .filter_map(|v| {
            let bytes = v.bytes()?;
            let announced = bytes
                .get(..4)
                .and_then(|h| <[u8; 4]>::try_from(h).ok())
                .map(|h| u64::from(u32::from_be_bytes(h)));
            let code = match v.expect {
                "empty" => ErrorCode::Malformed,
                // Only when the bytes end inside the first frame: a node reads one frame per
                // stream and answers it, whatever follows.
                "truncated" if announced.is_none_or(|n| (bytes.len() as u64) < 4 + n) => {
                    ErrorCode::Malformed
                }
                "too_large" if announced.is_some_and(|n| n > MAX_CONFIGURABLE) => {
                    ErrorCode::TooLarge
                }
                _ => return None,
            };
            Some((v, bytes, code))
        })
        .collect();
    replay_vectors(ctx, &picked).await
}

async fn huge_declared_length(ctx: &Ctx) -> CaseResult {
    // {"kind": "query", "body": <byte string of 2^63 - 1 bytes, none present>}
    let mut payload = vec![0xa2];
    payload.extend_from_slice(&craft::cbor(&"kind"));
    payload.extend_from_slice(&craft::cbor(&"query"));
    payload.extend_from_slice(&craft::cbor(&"body"));
    payload.extend_from_slice(&[0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    raw_error(ctx, &craft::frame(&payload), &[ErrorCode::Malformed]).await
}

fn sealed_bytes(ctx: &Ctx, body: Vec<u8>) -> Vec<u8> {
    let env = Envelope::seal_bytes(
        MessageKind::Query,
        body,
        &[
            (SignerRole::Person, &ctx.me.cw.key),
            (SignerRole::Node, ctx.me.node_key()),
        ],
    );
    craft::frame(&env.to_bytes())
}

async fn body_not_cbor(ctx: &Ctx) -> CaseResult {
    raw_error(
        ctx,
        &sealed_bytes(ctx, b"\xff\xff\xff".to_vec()),
        &[ErrorCode::Malformed],
    )
    .await
}

async fn body_trailing_bytes(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut body = craft::cbor(&q);
    body.push(0x00);
    raw_error(ctx, &sealed_bytes(ctx, body), &[ErrorCode::Malformed]).await
}

async fn body_over_limit(ctx: &Ctx) -> CaseResult {
    let mut q = craft::unconsented_query(ctx, &ctx.me);
    for i in 0..4000 {
        if let Ok(holder) = AgencyId::new(format!("padding-holder-{i}")) {
            q.requests.push(HolderRequest {
                holder,
                categories: vec![Category::Health],
            });
        }
    }
    let body = craft::cbor(&q);
    ensure(body.len() > 64 * 1024, || {
        format!("suite built only {} bytes", body.len())
    })?;
    raw_error(
        ctx,
        &sealed_bytes(ctx, body),
        &[ErrorCode::Malformed, ErrorCode::TooLarge],
    )
    .await
}

fn with_extra_signatures(ctx: &Ctx, extra: usize) -> (Envelope, Query) {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut env = craft::seal_query(&ctx.me, &q);
    for _ in 0..extra {
        env.add_signature(SignerRole::Node, &SecretKey::generate());
    }
    (env, q)
}

async fn too_many_signatures(ctx: &Ctx) -> CaseResult {
    let (env, _) = with_extra_signatures(ctx, 15);
    ensure(env.sigs.len() == 17, || "suite miscounted".into())?;
    raw_error(ctx, &craft::frame(&env.to_bytes()), &[ErrorCode::Malformed]).await
}

async fn sixteen_signatures(ctx: &Ctx) -> CaseResult {
    let (env, q) = with_extra_signatures(ctx, 14);
    ensure(env.sigs.len() == 16, || "suite miscounted".into())?;
    let conn = ctx.conn().await?;
    let answer = conn.request(&env).await?;
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    Ok("processed: refused no_consent".into())
}

/// A query signed by the caseworker only; the case adds its own node signature.
fn person_signed(ctx: &Ctx) -> Envelope {
    let q = craft::unconsented_query(ctx, &ctx.me);
    Envelope::seal(&q, &[(SignerRole::Person, &ctx.me.cw.key)])
}

async fn bad_node_signature(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut env = craft::seal_query(&ctx.me, &q);
    match env.sigs.iter_mut().find(|s| s.role == SignerRole::Node) {
        Some(s) => {
            if let Some(b) = s.sig.get_mut(10) {
                *b ^= 0x04;
            }
        }
        None => return fail("suite built a query without a node signature"),
    }
    refusal_of_env(ctx, &env, RefusalReason::RequesterSignatureInvalid).await
}

async fn node_signature_missing(ctx: &Ctx) -> CaseResult {
    refusal_of_env(
        ctx,
        &person_signed(ctx),
        RefusalReason::RequesterSignatureInvalid,
    )
    .await
}

async fn node_signature_by_stranger(ctx: &Ctx) -> CaseResult {
    let mut env = person_signed(ctx);
    env.add_signature(SignerRole::Node, &SecretKey::generate());
    refusal_of_env(ctx, &env, RefusalReason::RequesterSignatureInvalid).await
}

async fn signature_other_kind(ctx: &Ctx) -> CaseResult {
    let mut env = person_signed(ctx);
    craft::foreign_signature(
        &mut env,
        ctx.me.node_key(),
        MessageKind::Response,
        SignerRole::Node,
        SignerRole::Node,
    );
    refusal_of_env(ctx, &env, RefusalReason::RequesterSignatureInvalid).await
}

async fn signature_wrong_role(ctx: &Ctx) -> CaseResult {
    let mut env = person_signed(ctx);
    craft::foreign_signature(
        &mut env,
        ctx.me.node_key(),
        MessageKind::Query,
        SignerRole::Person,
        SignerRole::Node,
    );
    refusal_of_env(ctx, &env, RefusalReason::RequesterSignatureInvalid).await
}

async fn body_tampered(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut env = craft::seal_query(&ctx.me, &q);
    // Flip one bit of the nonce inside the signed body: still a valid query, new bytes.
    let at = env
        .body
        .windows(q.nonce.len())
        .position(|w| w == q.nonce)
        .ok_or_else(|| CaseError::Fail("suite could not find the nonce in the body".into()))?;
    if let Some(b) = env.body.get_mut(at) {
        *b ^= 0x01;
    }
    refusal_of_env(ctx, &env, RefusalReason::RequesterSignatureInvalid).await
}

async fn malleated_signature(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let mut env = craft::seal_query(&ctx.me, &q);
    for s in env.sigs.iter_mut().filter(|s| s.role == SignerRole::Node) {
        craft::malleate(&mut s.sig);
    }
    refusal_of_env(ctx, &env, RefusalReason::RequesterSignatureInvalid).await
}

async fn non_canonical_body(ctx: &Ctx) -> CaseResult {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let body = craft::reordered_map(&craft::cbor(&q))
        .ok_or_else(|| CaseError::Fail("suite: query body is not a map".into()))?;
    let env = Envelope::seal_bytes(
        MessageKind::Query,
        body,
        &[
            (SignerRole::Person, &ctx.me.cw.key),
            (SignerRole::Node, ctx.me.node_key()),
        ],
    );
    let conn = ctx.conn().await?;
    let answer = conn.request(&env).await?;
    // `refused` also checks the response's digest is over the bytes exactly as sent.
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    Ok("verified over the bytes sent: no_consent, digest of the non-canonical body".into())
}
