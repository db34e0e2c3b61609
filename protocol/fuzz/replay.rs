// The stable-Rust stand-in for cargo-fuzz, shared by `protocol/tests/fuzz_replay.rs` and
// `node/tests/fuzz_replay.rs` (both `include!` this file): replays every file of a target's seed
// corpus, cargo-fuzz corpus and regression folder through the target function, then runs a
// bounded random-mutation run from a fixed seed (bit flips, byte edits, truncations,
// insertions, deletions, duplications and splices of corpus entries), catching panics so that
// every failing input is reported (and written out) rather than only the first.
//
// No dependencies beyond the standard library, so the same code runs in both crates' tests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// SplitMix64: small, fast, and deterministic for a given seed.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() & 0xff) as u8
    }
}

/// Bytes that often sit on decoder boundaries: CBOR headers (maps, arrays, strings, long
/// lengths, indefinite markers, tags, simple values), ASCII structure and UTF-8 edges.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x40, 0x58, 0x5b, 0x5f, 0x60, 0x78, 0x7b,
    0x7f, 0x80, 0x9b, 0x9f, 0xa0, 0xbb, 0xbf, 0xc0, 0xd8, 0xf4, 0xf5, 0xf6, 0xf7, 0xfb, 0xff,
    b'\n', b'\r', b' ', b'"', b',', b'-', b'+', b'=', b'/', b'\\', b'[', b']', b'{', b'}', b'0',
    b'9', b'A', b'z', 0xe2, 0xc3,
];

/// Applies one to four stacked mutations to `input`, drawing splice material from `corpus`.
pub fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(11) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // Set a byte to an interesting value.
            1 if len > 0 => {
                let i = rng.below(len);
                let x = INTERESTING
                    .get(rng.below(INTERESTING.len()))
                    .copied()
                    .unwrap_or(0);
                if let Some(b) = v.get_mut(i) {
                    *b = x;
                }
            }
            // Set a byte to a random value.
            2 if len > 0 => {
                let i = rng.below(len);
                let x = rng.byte();
                if let Some(b) = v.get_mut(i) {
                    *b = x;
                }
            }
            // Add or subtract a little (lengths, counts, digits).
            3 if len > 0 => {
                let i = rng.below(len);
                let d = 1 + rng.below(4) as u8;
                let up = rng.below(2) == 0;
                if let Some(b) = v.get_mut(i) {
                    *b = if up {
                        b.wrapping_add(d)
                    } else {
                        b.wrapping_sub(d)
                    };
                }
            }
            // Truncate.
            4 => {
                let n = rng.below(len + 1);
                v.truncate(n);
            }
            // Delete a range.
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                v.drain(at..at + n);
            }
            // Insert random or interesting bytes.
            6 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        if rng.below(2) == 0 {
                            rng.byte()
                        } else {
                            INTERESTING
                                .get(rng.below(INTERESTING.len()))
                                .copied()
                                .unwrap_or(0)
                        }
                    })
                    .collect();
                v.splice(at..at, bytes);
            }
            // Duplicate a range in place.
            7 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk: Vec<u8> = v.get(at..at + n).map(<[u8]>::to_vec).unwrap_or_default();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, chunk);
            }
            // Splice: our head, another entry's tail.
            8 if !corpus.is_empty() => {
                let other = corpus
                    .get(rng.below(corpus.len()))
                    .cloned()
                    .unwrap_or_default();
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(other.get(from..).unwrap_or_default());
            }
            // Overwrite a range with a range of another entry.
            9 if !corpus.is_empty() && len > 0 => {
                let other = corpus
                    .get(rng.below(corpus.len()))
                    .cloned()
                    .unwrap_or_default();
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(64));
                    let at = rng.below(len);
                    for (k, b) in other.iter().skip(from).take(n).enumerate() {
                        if let Some(slot) = v.get_mut(at + k) {
                            *slot = *b;
                        }
                    }
                }
            }
            // Swap two bytes.
            _ if len > 1 => {
                let (i, j) = (rng.below(len), rng.below(len));
                v.swap(i, j);
            }
            _ => v.push(rng.byte()),
        }
    }
    v.truncate(max_len);
    v
}

/// Every regular file directly in `dir` (none if it does not exist), sorted by name.
pub fn read_dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// What one target's replay and mutation run did.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// Files replayed.
    pub files: usize,
    /// Mutated inputs run.
    pub mutated: usize,
    /// Time taken.
    pub elapsed: Duration,
    /// Failures: where the input came from, the panic message, and where it was saved.
    pub failures: Vec<String>,
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}

/// Replays the files of `dirs` through `f`, then runs `iterations` mutated inputs derived from
/// them with a generator seeded from `seed` and the target's name. Panics are caught; failing
/// inputs are written to `save_dir` and listed in the outcome.
pub fn replay_and_mutate(
    name: &str,
    f: fn(&[u8]),
    dirs: &[PathBuf],
    iterations: usize,
    seed: u64,
    max_len: usize,
    save_dir: &Path,
) -> ReplayOutcome {
    let started = Instant::now();
    let mut files = Vec::new();
    for d in dirs {
        files.extend(read_dir_files(d));
    }
    let corpus: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
    let mut failures = Vec::new();
    let run = |input: &[u8], origin: &str, failures: &mut Vec<String>| {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(input))) {
            let _ = std::fs::create_dir_all(save_dir);
            let file = save_dir.join(format!("{name}-{}", failures.len()));
            let _ = std::fs::write(&file, input);
            failures.push(format!(
                "{name}: input from {origin} panicked: {} (saved to {}; {} bytes, hex {})",
                panic_message(e.as_ref()),
                file.display(),
                input.len(),
                hex_prefix(input, 256),
            ));
        }
    };
    for (path, bytes) in &files {
        run(bytes, &path.display().to_string(), &mut failures);
    }
    // The name is mixed into the seed so targets sharing seeds explore differently.
    let mut h: u64 = seed;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = Rng::new(h);
    let base: Vec<Vec<u8>> = if corpus.is_empty() {
        vec![Vec::new()]
    } else {
        corpus.clone()
    };
    for i in 0..iterations {
        let pick = base.get(rng.below(base.len())).cloned().unwrap_or_default();
        let input = mutate(&mut rng, &pick, &base, max_len);
        run(
            &input,
            &format!("mutation {i} (seed {seed:#x})"),
            &mut failures,
        );
    }
    ReplayOutcome {
        files: files.len(),
        mutated: iterations,
        elapsed: started.elapsed(),
        failures,
    }
}

fn hex_prefix(b: &[u8], n: usize) -> String {
    let mut s: String = b.iter().take(n).map(|x| format!("{x:02x}")).collect();
    if b.len() > n {
        s.push_str("...");
    }
    s
}

/// The number of mutated inputs per target: `TG_FUZZ_REPLAY_ITERS` if set, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("TG_FUZZ_REPLAY_ITERS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The test harness both crates' `tests/fuzz_replay.rs` build on. `env!` here expands in the
// including test crate, so `fuzz_dir` is that crate's `fuzz/` folder.

/// The mutation run's seed ("throughg").
pub const SEED: u64 = 0x7468_726f_7567_6867;
/// Mutated inputs per target unless `TG_FUZZ_REPLAY_ITERS` says otherwise.
pub const DEFAULT_ITERS: usize = 20_000;

/// The including crate's `fuzz/` folder.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The folder holding the cargo-fuzz corpora, one sub-folder per target: `TG_FUZZ_CORPUS` if
/// set, else the including crate's `fuzz/corpus/`. Corpora are not kept in git; a fresh clone
/// has none and the replay runs the seeds and regressions only.
pub fn corpus_root() -> PathBuf {
    match std::env::var_os("TG_FUZZ_CORPUS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => fuzz_dir().join("corpus"),
    }
}

/// Where a target's inputs live: its seed corpus and regression folder (both in git) and its
/// cargo-fuzz corpus under [`corpus_root`] (absent unless fuzzed locally).
pub fn corpus_dirs(name: &str) -> Vec<PathBuf> {
    let f = fuzz_dir();
    vec![
        f.join("seeds").join(name),
        f.join("regressions").join(name),
        corpus_root().join(name),
    ]
}

/// Replays target `name` (`iters` mutated inputs unless `TG_FUZZ_REPLAY_ITERS` says otherwise,
/// none longer than `max_len`) and asserts that it has a corpus and that nothing panicked.
pub fn run_target(name: &str, f: fn(&[u8]), iters: usize, max_len: usize) {
    let save = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-replay-failures");
    let out = replay_and_mutate(
        name,
        f,
        &corpus_dirs(name),
        iterations(iters),
        SEED,
        max_len,
        &save,
    );
    eprintln!(
        "{name}: {} corpus files, {} mutated inputs, {:?}",
        out.files, out.mutated, out.elapsed
    );
    assert!(
        out.files > 0,
        "{name} has no corpus: run the ignored test regenerate_seed_corpus"
    );
    assert!(
        out.failures.is_empty(),
        "{} failing inputs:\n{}",
        out.failures.len(),
        out.failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Asserts that every target in `targets` has a cargo-fuzz target file calling it and a
/// `[[bin]]` entry in the fuzz crate's manifest.
pub fn assert_cargo_fuzz_targets<F>(targets: &[(&str, F)]) {
    let manifest_path = fuzz_dir().join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
    for (name, _) in targets {
        let file = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let src = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            src.contains(&format!("targets::{name}(data)")),
            "{} does not call targets::{name}",
            file.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "no [[bin]] {name} in {}",
            manifest_path.display()
        );
    }
}

/// One `#[test]` per target (named after it, running `targets::<name>` through
/// [`run_target`] with the given iteration count and `max_len`), plus
/// `every_target_is_replayed`, which checks the list matches `targets::TARGETS` exactly. The
/// including crate must have `targets` and `replay` modules at its root.
macro_rules! fuzz_tests {
    (max_len: $max_len:expr; $($name:ident: $iters:expr,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::replay::run_target(
                    stringify!($name),
                    $crate::targets::$name,
                    $iters,
                    $max_len,
                );
            }
        )*

        /// Every target in `targets::TARGETS` has a test here, and nothing else does.
        #[test]
        fn every_target_is_replayed() {
            let here: Vec<&str> = vec![$(stringify!($name),)*];
            let all: Vec<&str> = $crate::targets::TARGETS.iter().map(|(n, _)| *n).collect();
            assert_eq!(here, all);
        }
    };
}
pub(crate) use fuzz_tests;
