#![no_main]
//! cargo-fuzz target `receipt`: see `protocol/fuzz/targets.rs`.

#[allow(dead_code, unused_imports)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::receipt(data));
