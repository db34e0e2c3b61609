#![no_main]
//! cargo-fuzz target `body_audit_answer`: see `protocol/fuzz/targets.rs`.

#[allow(dead_code, unused_imports)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::body_audit_answer(data));
