#![no_main]
//! cargo-fuzz target `import_jsonl`: see `node/fuzz/targets.rs`.

#[allow(dead_code, unused_imports)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::import_jsonl(data));
