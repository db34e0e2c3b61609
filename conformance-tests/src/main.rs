//! tg-conformance: black-box conformance suite (being built).

fn main() {}
