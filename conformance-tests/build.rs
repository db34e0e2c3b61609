//! Embeds the protocol's message test vectors (`protocol/vectors/messages/{envelope,body,frame}`)
//! into the suite, so the binary carries them wherever it runs. Missing folders embed nothing.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/vectors/messages");
    let mut out = String::from(
        "/// Protocol message vectors embedded at build time.\npub static VECTORS: &[Vector] = &[\n",
    );
    for dir in ["envelope", "body", "frame"] {
        let d = root.join(dir);
        println!("cargo:rerun-if-changed={}", d.display());
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
            let (Some(id), Some(hex), Some(expect)) = (s("id"), s("hex"), s("expect")) else {
                continue;
            };
            let frames = v
                .get("frames")
                .and_then(|x| x.as_array())
                .map_or(0, Vec::len);
            let _ = writeln!(
                out,
                "    Vector {{ id: {id:?}, message: {:?}, expect: {expect:?}, max_bytes: {:?}, frames: {frames}, hex: {hex:?} }},",
                s("message"),
                v.get("max_bytes").and_then(serde_json::Value::as_u64),
            );
        }
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("vectors.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=could not write {}: {e}", dest.display());
    }
}
