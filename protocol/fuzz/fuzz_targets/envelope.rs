#![no_main]
//! cargo-fuzz target `envelope`: see `protocol/fuzz/targets.rs`.

#[allow(dead_code, unused_imports)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::envelope(data));
