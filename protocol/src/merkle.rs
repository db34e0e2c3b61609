//! RFC 6962 / RFC 9162 Merkle tree hashing with SHA-256, for the tamper-evident audit log.
//!
//! * A leaf hash is `SHA-256(0x00 || entry)`, an interior node `SHA-256(0x01 || left || right)`,
//!   and the root of the empty tree is `SHA-256("")` (RFC 9162 section 2.1.1).
//! * [`MerkleFrontier`] appends leaves in O(log n) time and space and gives the root after each
//!   append, without keeping the leaves. It is serde-serialisable so a node can persist it.
//! * [`root_from_leaves`] recomputes a root from every leaf hash (whole-log verification), with
//!   no heap allocation.
//! * [`inclusion_proof`] and [`consistency_proof`] build proofs from stored leaf hashes following
//!   the PATH and SUBPROOF algorithms of RFC 9162 sections 2.1.3.1 and 2.1.4.1;
//!   [`inclusion_proof_with`] and [`consistency_proof_with`] do the same from any store of
//!   perfect-subtree hashes, so a node that keeps interior nodes answers in O(log n) lookups.
//! * [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162 sections 2.1.3.2 and
//!   2.1.4.2 step by step.
//!
//! The verifiers take hashes as byte slices (anything `AsRef<[u8]>` for proofs), so that input
//! straight off the wire can be checked without a separate conversion step: a hash of the wrong
//! length is an error ([`MerkleError::HashLength`]), never a panic.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The length of every hash in the tree, in bytes.
pub const HASH_LEN: usize = 32;

/// Domain-separation prefix of a leaf hash.
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash.
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle proof could not be built or does not verify, or a frontier is unusable.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree (`index >= size`).
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked about.
        index: u64,
        size: u64,
    },
    /// A consistency proof was asked for from a larger tree to a smaller one.
    #[error("the first tree (size {size1}) is larger than the second (size {size2})")]
    SizeOrder {
        /// The first (older) tree size.
        size1: u64,
        /// The second (newer) tree size.
        size2: u64,
    },
    /// A consistency proof from the empty tree was asked for or offered. RFC 9162 defines
    /// consistency proofs only for `0 < size1`; every tree trivially extends the empty one, so
    /// there is nothing to prove and callers holding no earlier tree must not pretend otherwise.
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyOldTree,
    /// The proof has the wrong number of hashes for the tree sizes and index given.
    #[error("the proof has {got} hashes; {expected} expected")]
    ProofLength {
        got: usize,
        /// Hashes a correct proof has.
        expected: usize,
    },
    /// A hash in the input is not 32 bytes long.
    #[error("the {what} is {len} bytes; a hash is 32")]
    HashLength {
        /// Which hash: "leaf hash", "root hash", "first root hash", "proof hash".
        what: &'static str,
        len: usize,
    },
    /// The proof does not lead to the root hash given (for a consistency proof: to the second
    /// root; with equal tree sizes: the two roots differ).
    #[error("the proof does not match the root hash")]
    RootMismatch,
    /// A consistency proof does not reproduce the first (older) root hash.
    #[error("the consistency proof does not match the first root hash")]
    OldRootMismatch,
    /// Proof generation was asked about more leaves than were supplied.
    #[error("a tree of size {size} was asked for, but only {available} leaves are available")]
    NotEnoughLeaves {
        /// The tree size asked for.
        size: u64,
        available: u64,
    },
    /// The subtree-hash store did not have a hash the proof needs.
    #[error("no stored hash for the subtree at level {level}, index {index}")]
    MissingHash {
        /// The subtree's height (0 for a leaf).
        level: u32,
        /// The subtree's index among the subtrees of that height.
        index: u64,
    },
    /// A frontier's hash list does not match its size (it must hold one hash per set bit).
    #[error("a frontier of size {size} needs {expected} hashes; it has {got}")]
    InvalidFrontier {
        size: u64,
        got: usize,
        expected: usize,
    },
    /// The tree already holds 2^64 - 1 leaves.
    #[error("the tree is full")]
    TreeFull,
}

/// The leaf hash of an entry: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_children(left, right)
}

/// The root hash of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x01 || left || right)` over slices (their lengths are checked by callers).
fn hash_children(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Folds the hashes of a right-to-left list of subtrees into one root: for subtrees
/// `h1, h2, ..., hk` from left to right, `h1 . (h2 . (... . hk))`.
fn fold_right<'a>(mut from_right: impl Iterator<Item = &'a Hash>) -> Option<Hash> {
    let mut acc = *from_right.next()?;
    for h in from_right {
        acc = node_hash(h, &acc);
    }
    Some(acc)
}

/// The root of the tree whose leaf hashes are `leaves`, in order (RFC 9162 MTH).
///
/// Iterative and allocation-free: it keeps a stack of at most 64 perfect-subtree hashes on the
/// call stack, so the cost is exactly `leaves.len() - 1` interior hashes.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    let mut stack = [[0u8; HASH_LEN]; 64];
    let mut depth = 0usize;
    for (count, leaf) in (0u64..).zip(leaves) {
        let mut h = *leaf;
        // Each trailing one bit of the count is a complete left sibling waiting on the stack.
        let mut c = count;
        while c & 1 == 1 {
            depth -= 1;
            if let Some(left) = stack.get(depth) {
                h = node_hash(left, &h);
            }
            c >>= 1;
        }
        if let Some(slot) = stack.get_mut(depth) {
            *slot = h;
        }
        depth += 1;
    }
    stack
        .get(..depth)
        .and_then(|s| fold_right(s.iter().rev()))
        .unwrap_or_else(empty_root)
}

/// The compact state of an append-only Merkle tree: its size and the roots of the perfect
/// subtrees that make it up, largest (leftmost) first, one per set bit of the size.
///
/// Appending costs at most O(log n) hashes, O(1) amortised; the root costs O(log n). Serialises as
/// `{ size, hashes }`, with each hash as hex in human-readable formats (JSON, TOML) and as a
/// byte string in binary ones (CBOR). Deserialisation checks the hash count against the size.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "FrontierRepr", into = "FrontierRepr")]
pub struct MerkleFrontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl MerkleFrontier {
    /// The empty tree.
    pub fn new() -> MerkleFrontier {
        MerkleFrontier::default()
    }

    /// Rebuilds a frontier from persisted parts, checking there is one hash per set bit of
    /// `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<MerkleFrontier, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::InvalidFrontier {
                size,
                got: hashes.len(),
                expected,
            });
        }
        Ok(MerkleFrontier { size, hashes })
    }

    /// The frontier after appending every leaf hash in `leaves` to the empty tree.
    pub fn from_leaves(leaves: &[Hash]) -> MerkleFrontier {
        let mut f = MerkleFrontier::new();
        for leaf in leaves {
            // Fewer than 2^64 - 1 leaves fit in memory, so this cannot fail.
            let _ = f.push(*leaf);
        }
        f
    }

    /// Appends one leaf hash (from [`leaf_hash`]). Returns the index the leaf was given.
    pub fn push(&mut self, leaf_hash: Hash) -> Result<u64, MerkleError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(MerkleError::TreeFull)?;
        let mut h = leaf_hash;
        let mut c = index;
        while c & 1 == 1 {
            match self.hashes.pop() {
                Some(left) => h = node_hash(&left, &h),
                // Unreachable for a frontier built through this API (the invariant is checked
                // on construction), but never panic.
                None => break,
            }
            c >>= 1;
        }
        self.hashes.push(h);
        self.size = new_size;
        Ok(index)
    }

    /// Hashes `entry` as a leaf and appends it. Returns the index the leaf was given.
    pub fn push_entry(&mut self, entry: &[u8]) -> Result<u64, MerkleError> {
        self.push(leaf_hash(entry))
    }

    /// The root hash of the tree as it stands.
    pub fn root(&self) -> Hash {
        fold_right(self.hashes.iter().rev()).unwrap_or_else(empty_root)
    }

    /// The number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }
}

impl fmt::Debug for MerkleFrontier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MerkleFrontier(size {}, root {})",
            self.size,
            hex::encode(self.root())
        )
    }
}

/// One hash inside the serialised frontier: hex when human-readable, bytes otherwise.
#[derive(Serialize, Deserialize)]
struct HashRepr(#[serde(with = "crate::keys::fixed_bytes")] Hash);

/// The serialised shape of a [`MerkleFrontier`].
#[derive(Serialize, Deserialize)]
struct FrontierRepr {
    size: u64,
    hashes: Vec<HashRepr>,
}

impl TryFrom<FrontierRepr> for MerkleFrontier {
    type Error = MerkleError;
    fn try_from(r: FrontierRepr) -> Result<Self, MerkleError> {
        MerkleFrontier::from_parts(r.size, r.hashes.into_iter().map(|h| h.0).collect())
    }
}

impl From<MerkleFrontier> for FrontierRepr {
    fn from(f: MerkleFrontier) -> Self {
        FrontierRepr {
            size: f.size,
            hashes: f.hashes.into_iter().map(HashRepr).collect(),
        }
    }
}

/// The largest power of two strictly less than `n` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    // n >= 2, so n - 1 >= 1 and the shift is at most 63.
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The hash of the RFC 9162 subtree over leaves `[begin, end)`, where `begin` is a multiple of
/// the smallest power of two not below `end - begin` (true of every subtree the RFC recursion
/// visits). It is assembled from the aligned perfect subtrees of the binary decomposition of
/// `end - begin`, looked up through `get(level, index)`.
fn range_root<F>(begin: u64, end: u64, get: &F) -> Result<Hash, MerkleError>
where
    F: Fn(u32, u64) -> Option<Hash>,
{
    let len = end.saturating_sub(begin);
    let mut acc: Option<Hash> = None;
    let mut right_end = end;
    for level in 0..64u32 {
        if (len >> level) & 1 == 0 {
            continue;
        }
        let start = right_end - (1u64 << level);
        let index = start >> level;
        let h = get(level, index).ok_or(MerkleError::MissingHash { level, index })?;
        acc = Some(match acc {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
        right_end = start;
    }
    acc.ok_or(MerkleError::MissingHash { level: 0, index: 0 })
}

/// A perfect-subtree lookup over a slice of leaf hashes: the subtree at `level` and `index`
/// covers leaves `[index << level, (index + 1) << level)`. Costs `2^level - 1` hashes.
fn leaf_store(leaves: &[Hash]) -> impl Fn(u32, u64) -> Option<Hash> + '_ {
    move |level, index| {
        let width = 1u64.checked_shl(level)?;
        let start = usize::try_from(index.checked_mul(width)?).ok()?;
        let end = start.checked_add(usize::try_from(width).ok()?)?;
        leaves.get(start..end).map(root_from_leaves)
    }
}

fn check_available(size: u64, available: usize) -> Result<(), MerkleError> {
    let available = available as u64;
    if size > available {
        return Err(MerkleError::NotEnoughLeaves { size, available });
    }
    Ok(())
}

/// The inclusion proof of leaf `index` in the tree made of the first `size` of `leaves`
/// (RFC 9162 section 2.1.3.1, PATH), lowest sibling first.
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
    check_available(size, leaves.len())?;
    inclusion_proof_with(index, size, leaf_store(leaves))
}

/// Like [`inclusion_proof`], reading perfect-subtree hashes through `get(level, index)`: the
/// hash of the perfect subtree of height `level` over leaves `[index << level, (index + 1) <<
/// level)` (level 0 is the leaf hashes themselves), or `None` if it is not stored.
///
/// Only subtrees lying entirely inside the tree of `size` are asked for. A store that keeps
/// every complete interior node answers each proof with O(log n) lookups and hashes.
pub fn inclusion_proof_with<F>(index: u64, size: u64, get: F) -> Result<Vec<Hash>, MerkleError>
where
    F: Fn(u32, u64) -> Option<Hash>,
{
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::with_capacity(64);
    let (mut begin, mut end) = (0u64, size);
    while end - begin > 1 {
        let k = split_point(end - begin);
        if index < begin + k {
            proof.push(range_root(begin + k, end, &get)?);
            end = begin + k;
        } else {
            proof.push(range_root(begin, begin + k, &get)?);
            begin += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof between the trees made of the first `size1` and the first `size2` of
/// `leaves` (RFC 9162 section 2.1.4.1, SUBPROOF), lowest subtree first.
///
/// `size1 == size2` gives the empty proof; `size1 == 0` is refused with
/// [`MerkleError::EmptyOldTree`], as [`verify_consistency`] would refuse any proof from it.
pub fn consistency_proof(
    leaves: &[Hash],
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, MerkleError> {
    check_available(size2, leaves.len())?;
    consistency_proof_with(size1, size2, leaf_store(leaves))
}

/// Like [`consistency_proof`], reading perfect-subtree hashes through `get(level, index)` as
/// described for [`inclusion_proof_with`].
pub fn consistency_proof_with<F>(size1: u64, size2: u64, get: F) -> Result<Vec<Hash>, MerkleError>
where
    F: Fn(u32, u64) -> Option<Hash>,
{
    if size1 > size2 {
        return Err(MerkleError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(MerkleError::EmptyOldTree);
    }
    let mut proof = Vec::with_capacity(64);
    let (mut begin, mut end) = (0u64, size2);
    // Whether the current subtree is the original right-hand tree (RFC's `b` flag): if the
    // first tree is exactly such a subtree, the verifier already knows its hash.
    let mut whole = true;
    loop {
        if size1 == end {
            if !whole {
                proof.push(range_root(begin, end, &get)?);
            }
            break;
        }
        let k = split_point(end - begin);
        if size1 <= begin + k {
            proof.push(range_root(begin + k, end, &get)?);
            end = begin + k;
        } else {
            proof.push(range_root(begin, begin + k, &get)?);
            begin += k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks a hash slice is 32 bytes.
fn as_hash<'a>(what: &'static str, h: &'a [u8]) -> Result<&'a [u8], MerkleError> {
    if h.len() == HASH_LEN {
        Ok(h)
    } else {
        Err(MerkleError::HashLength { what, len: h.len() })
    }
}

/// Number of bits needed to write `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// The length of a correct inclusion proof for `index` in a tree of `size` (`index < size`):
/// the levels below the point where the paths to `index` and `size - 1` meet, plus the left
/// siblings above it.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The length of a correct consistency proof for `0 < size1 < size2`.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let shift = size1.trailing_zeros();
    let inner = bit_len((size1 - 1) ^ (size2 - 1)).saturating_sub(shift);
    let border = (size1 - 1)
        .checked_shr(bit_len((size1 - 1) ^ (size2 - 1)))
        .unwrap_or(0)
        .count_ones();
    let seed = if size1.is_power_of_two() { 0 } else { 1 };
    (seed + inner + border) as usize
}

/// Verifies that `leaf_hash` is the leaf at `index` in the tree of `size` leaves whose root is
/// `root`, given the inclusion `proof` (RFC 9162 section 2.1.3.2).
///
/// Fails if `index >= size`, if any hash is not 32 bytes, if the proof is longer or shorter than
/// a proof for this index and size, or if it does not lead to `root`.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), MerkleError> {
    // Step 1.
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let leaf_hash = as_hash("leaf hash", leaf_hash)?;
    let root = as_hash("root hash", root)?;
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    // Steps 2 and 3.
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r: Hash = leaf_hash.try_into().map_err(|_| MerkleError::HashLength {
        what: "leaf hash",
        len: leaf_hash.len(),
    })?;
    // Step 4.
    for p in proof {
        let p = as_hash("proof hash", p.as_ref())?;
        if s_n == 0 {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = hash_children(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = hash_children(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    if s_n != 0 {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    if r.as_slice() != root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1`, given the consistency `proof` (RFC 9162 section 2.1.4.2).
///
/// Edge cases, which the RFC leaves to implementations (these match the published
/// transparency-dev test vectors):
/// * `size1 > size2` fails with [`MerkleError::SizeOrder`];
/// * `size1 == 0` fails with [`MerkleError::EmptyOldTree`], whatever the other arguments;
/// * `size1 == size2` succeeds exactly when the proof is empty and the two roots are the same
///   bytes (they are compared as given, without a length check);
/// * otherwise every hash must be 32 bytes and the proof exactly as long as a correct one.
pub fn verify_consistency<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), MerkleError> {
    if size1 > size2 {
        return Err(MerkleError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(MerkleError::EmptyOldTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    let root1 = as_hash("first root hash", root1)?;
    let root2 = as_hash("root hash", root2)?;
    let expected = consistency_proof_len(size1, size2);
    let too_short_or_long = || MerkleError::ProofLength {
        got: proof.len(),
        expected,
    };
    // Step 1: an empty proof fails.
    if proof.is_empty() || proof.len() != expected {
        return Err(too_short_or_long());
    }
    // Step 2: if size1 is a power of two, the proof starts from root1 (prepended, in effect).
    let mut rest = proof.iter();
    let seed: &[u8] = if size1.is_power_of_two() {
        root1
    } else {
        match rest.next() {
            Some(p) => as_hash("proof hash", p.as_ref())?,
            None => return Err(too_short_or_long()),
        }
    };
    // Step 3.
    let (mut f_n, mut s_n) = (size1 - 1, size2 - 1);
    // Step 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let mut f_r: Hash = seed.try_into().map_err(|_| MerkleError::HashLength {
        what: "proof hash",
        len: seed.len(),
    })?;
    let mut s_r = f_r;
    // Step 6.
    for c in rest {
        let c = as_hash("proof hash", c.as_ref())?;
        if s_n == 0 {
            return Err(too_short_or_long());
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = hash_children(c, &f_r);
            s_r = hash_children(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = hash_children(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(too_short_or_long());
    }
    if f_r.as_slice() != root1 {
        return Err(MerkleError::OldRootMismatch);
    }
    if s_r.as_slice() != root2 {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::path::{Path, PathBuf};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The RFC 6962 recursive definition of MTH, as the reference.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // RFC 6962 leaf hash of the empty entry.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        // Root of the RFC 6962 reference tree of eight entries (as in the test vectors).
        let entries: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        assert_eq!(
            hex::encode(root_from_leaves(&hashes)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    #[test]
    fn root_from_leaves_matches_frontier_and_reference() {
        let all = leaves(300);
        let mut f = MerkleFrontier::new();
        assert_eq!(f.root(), empty_root());
        assert_eq!(root_from_leaves(&[]), empty_root());
        for n in 1..=all.len() {
            assert_eq!(f.push(all[n - 1]).unwrap(), (n - 1) as u64);
            let r = root_from_leaves(&all[..n]);
            assert_eq!(f.root(), r, "size {n}");
            assert_eq!(mth(&all[..n]), r, "size {n}");
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.hashes().len(), (n as u64).count_ones() as usize);
        }
    }

    #[test]
    fn frontier_serde_round_trip_and_validation() {
        let f = MerkleFrontier::from_leaves(&leaves(13));
        let json = serde_json::to_string(&f).unwrap();
        let back: MerkleFrontier = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        let cbor = crate::cbor::to_vec(&f);
        let back: MerkleFrontier = crate::cbor::from_slice("frontier", &cbor, 1 << 16).unwrap();
        assert_eq!(back, f);
        // 13 = 0b1101 has three hashes; 15 = 0b1111 needs four.
        let hexes: Vec<String> = f.hashes().iter().map(hex::encode).collect();
        let bad = format!(r#"{{"size":15,"hashes":{}}}"#, serde_json::json!(hexes));
        assert!(serde_json::from_str::<MerkleFrontier>(&bad).is_err());
        assert!(matches!(
            MerkleFrontier::from_parts(1, vec![]),
            Err(MerkleError::InvalidFrontier { .. })
        ));
        let mut full = MerkleFrontier::from_parts(u64::MAX, vec![[0u8; 32]; 64]).unwrap();
        assert_eq!(full.push([1u8; 32]), Err(MerkleError::TreeFull));
    }

    #[test]
    fn generated_proofs_verify_and_flipped_bits_fail() {
        let all = leaves(64);
        for size in 1..=64u64 {
            let root = root_from_leaves(&all[..size as usize]);
            for index in 0..size {
                let proof = inclusion_proof(&all, index, size).unwrap();
                let leaf = all[index as usize];
                verify_inclusion(&leaf, index, size, &proof, &root)
                    .unwrap_or_else(|e| panic!("inclusion {index}/{size}: {e}"));
                // Any flipped bit in any proof hash, the leaf or the root fails.
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][(index as usize + i) % 32] ^= 1 << (i % 8);
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
                let mut bad_leaf = leaf;
                bad_leaf[0] ^= 0x80;
                assert!(verify_inclusion(&bad_leaf, index, size, &proof, &root).is_err());
                let mut bad_root = root;
                bad_root[31] ^= 1;
                assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
                // Wrong index or size fails.
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                }
                // (A larger size is not always detectable from the proof alone: the proof of
                // leaf 0 of 3 has the shape of one for leaf 0 of 4. The root binds the size.)
                // Longer and shorter proofs fail.
                let mut longer = proof.clone();
                longer.push(root);
                assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(&leaf, index, size, shorter, &root).is_err());
                }
            }
            assert!(matches!(
                inclusion_proof(&all, size, size),
                Err(MerkleError::IndexOutOfRange { .. })
            ));
        }
        for size2 in 1..=64u64 {
            let root2 = root_from_leaves(&all[..size2 as usize]);
            for size1 in 1..=size2 {
                let root1 = root_from_leaves(&all[..size1 as usize]);
                let proof = consistency_proof(&all, size1, size2).unwrap();
                verify_consistency(size1, size2, &proof, &root1, &root2)
                    .unwrap_or_else(|e| panic!("consistency {size1}->{size2}: {e}"));
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][(size1 as usize + i) % 32] ^= 1 << (i % 8);
                    assert!(
                        verify_consistency(size1, size2, &bad, &root1, &root2).is_err(),
                        "flipped proof {size1}->{size2} at {i}"
                    );
                }
                let mut bad1 = root1;
                bad1[5] ^= 4;
                assert!(verify_consistency(size1, size2, &proof, &bad1, &root2).is_err());
                let mut bad2 = root2;
                bad2[7] ^= 2;
                assert!(verify_consistency(size1, size2, &proof, &root1, &bad2).is_err());
                if size1 < size2 {
                    // Claiming a different old size fails. (As with inclusion, a larger new size
                    // is not always visible in the proof's shape; root2 binds it.)
                    assert!(verify_consistency(size1 + 1, size2, &proof, &root1, &root2).is_err());
                }
                let mut longer = proof.clone();
                longer.push(root1);
                assert!(verify_consistency(size1, size2, &longer, &root1, &root2).is_err());
            }
            assert!(matches!(
                consistency_proof(&all, 0, size2),
                Err(MerkleError::EmptyOldTree)
            ));
            assert!(matches!(
                consistency_proof(&all, size2 + 1, size2),
                Err(MerkleError::SizeOrder { .. })
            ));
        }
        assert!(matches!(
            inclusion_proof(&all, 0, 65),
            Err(MerkleError::NotEnoughLeaves { .. })
        ));
    }

    #[test]
    fn proofs_from_a_subtree_store_match_proofs_from_leaves() {
        // A store holding every complete interior node, level by level.
        let all = leaves(100);
        let mut levels: Vec<Vec<Hash>> = vec![all.clone()];
        while levels.last().unwrap().len() > 1 {
            let next: Vec<Hash> = levels
                .last()
                .unwrap()
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        let get = |level: u32, index: u64| {
            levels
                .get(level as usize)
                .and_then(|l| l.get(index as usize))
                .copied()
        };
        for size in 1..=100u64 {
            for index in 0..size {
                assert_eq!(
                    inclusion_proof_with(index, size, get).unwrap(),
                    inclusion_proof(&all, index, size).unwrap()
                );
            }
            for size1 in 1..=size {
                assert_eq!(
                    consistency_proof_with(size1, size, get).unwrap(),
                    consistency_proof(&all, size1, size).unwrap()
                );
            }
        }
        let nothing = |_: u32, _: u64| None;
        assert!(matches!(
            inclusion_proof_with(0, 2, nothing),
            Err(MerkleError::MissingHash { .. })
        ));
    }

    #[test]
    fn edge_cases() {
        let all = leaves(8);
        let root = root_from_leaves(&all);
        let no_proof: &[Hash] = &[];
        // A one-leaf tree: the leaf is the root and the proof is empty.
        verify_inclusion(&all[0], 0, 1, no_proof, &all[0]).unwrap();
        assert!(matches!(
            verify_inclusion(&all[0], 1, 1, no_proof, &all[0]),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            verify_inclusion(&all[0], 0, 0, no_proof, &empty_root()),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            verify_inclusion(&all[0][..31], 0, 1, no_proof, &all[0]),
            Err(MerkleError::HashLength { .. })
        ));
        // Equal sizes: empty proof and equal roots.
        verify_consistency(8, 8, no_proof, &root, &root).unwrap();
        assert_eq!(
            verify_consistency(8, 8, &[root], &root, &root),
            Err(MerkleError::ProofLength {
                got: 1,
                expected: 0
            })
        );
        assert_eq!(
            verify_consistency(8, 8, no_proof, &root, &all[0]),
            Err(MerkleError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(0, 0, no_proof, &empty_root(), &empty_root()),
            Err(MerkleError::EmptyOldTree)
        );
        assert_eq!(
            verify_consistency(0, 8, no_proof, &empty_root(), &root),
            Err(MerkleError::EmptyOldTree)
        );
        assert!(matches!(
            verify_consistency(4, 8, no_proof, &root, &root),
            Err(MerkleError::ProofLength { got: 0, .. })
        ));
        assert!(matches!(
            verify_consistency(8, 4, no_proof, &root, &root),
            Err(MerkleError::SizeOrder { .. })
        ));
        // Huge sizes do not overflow or loop.
        let proof = vec![[0u8; 32]; 64];
        assert!(verify_inclusion(&all[0], u64::MAX - 1, u64::MAX, &proof, &root).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &proof, &root, &root).is_err());
        assert!(verify_consistency(1, u64::MAX, &proof, &root, &root).is_err());
    }

    // ---- Published RFC 6962 test vectors (transparency-dev/merkle testdata). ----

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InclusionCase {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConsistencyCase {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
    }

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("bad base64 {s:?} in a vector: {e}"))
    }

    fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                json_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }

    fn vectors(kind: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("vectors/rfc6962")
            .join(kind);
        let mut files = Vec::new();
        json_files(&dir, &mut files);
        files.sort();
        files
    }

    #[test]
    fn rfc6962_inclusion_vectors() {
        let files = vectors("inclusion");
        assert!(files.len() >= 90, "only {} inclusion vectors", files.len());
        let mut ok = 0;
        for path in &files {
            let c: InclusionCase =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let proof: Vec<Vec<u8>> = c.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
            let got = verify_inclusion(
                &b64(&c.leaf_hash),
                c.leaf_idx,
                c.tree_size,
                &proof,
                &b64(&c.root),
            );
            assert_eq!(
                got.is_err(),
                c.want_err,
                "{} ({}): {got:?}",
                path.display(),
                c.desc
            );
            if !c.want_err {
                ok += 1;
            }
        }
        assert!(ok >= 6);
    }

    #[test]
    fn rfc6962_consistency_vectors() {
        let files = vectors("consistency");
        assert!(
            files.len() >= 90,
            "only {} consistency vectors",
            files.len()
        );
        let mut ok = 0;
        for path in &files {
            let c: ConsistencyCase =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let proof: Vec<Vec<u8>> = c.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
            let got = verify_consistency(c.size1, c.size2, &proof, &b64(&c.root1), &b64(&c.root2));
            assert_eq!(
                got.is_err(),
                c.want_err,
                "{} ({}): {got:?}",
                path.display(),
                c.desc
            );
            if !c.want_err {
                ok += 1;
            }
        }
        assert!(ok >= 6);
    }

    /// Throughput of whole-log verification. Run with
    /// `cargo test -p throughgate-protocol --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn root_from_leaves_speed() {
        const N: usize = 1_000_000;
        let entries: Vec<[u8; 64]> = (0..N as u64)
            .map(|i| {
                let mut e = [0u8; 64];
                e[..8].copy_from_slice(&i.to_le_bytes());
                e
            })
            .collect();
        let t = std::time::Instant::now();
        let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let leaf_time = t.elapsed();
        let mut best = f64::INFINITY;
        let mut root = empty_root();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            root = std::hint::black_box(root_from_leaves(std::hint::black_box(&hashes)));
            best = best.min(t.elapsed().as_secs_f64());
        }
        assert_eq!(root, MerkleFrontier::from_leaves(&hashes).root());
        println!(
            "root_from_leaves: {N} leaf hashes in {:.1} ms = {:.2e} entries/s (best of 5); \
             hashing {N} 64-byte entries as leaves: {:.1} ms = {:.2e} entries/s",
            best * 1e3,
            N as f64 / best,
            leaf_time.as_secs_f64() * 1e3,
            N as f64 / leaf_time.as_secs_f64()
        );
    }
}
