//! Shared helpers for the `tg` binary's integration tests.
#![allow(dead_code, missing_docs)]

use std::process::{Command, Output};

/// `tg` with colour off and no profile picked up from the environment.
pub fn tg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tg"));
    c.env("NO_COLOR", "1").env_remove("TG_PROFILE");
    c
}

/// Asserts that `out` exited successfully, showing its stderr if not.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
