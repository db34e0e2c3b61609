//! Shared helpers for the `tg` binary's integration tests.
#![allow(dead_code, missing_docs)]

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};

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

/// A loopback port for a node process made by `tg node init --listen`: the UDP port free, and
/// the TCP port 1000 above it (where `tg node init` puts the metrics endpoint) free too, when
/// probed. Both lie below the system's ephemeral range, so no `bind(0)` (every `tg` client
/// process makes one) can take them between the probe and the node's bind; each call starts
/// its search at a different point, so tests running at once do not pick the same port.
pub fn free_udp_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low: u16 = 10_000;
    let high = ephemeral_low().saturating_sub(1_000).max(low + 1_000);
    let span = u32::from(high - low);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let start = seed.wrapping_add(u32::from(NEXT.fetch_add(97, Ordering::Relaxed)));
    for i in 0..span {
        let port = low + u16::try_from((start.wrapping_add(i)) % span).unwrap();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1_000)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback UDP port between {low} and {high}");
}

/// The lowest port of the system's ephemeral range (32768 where it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
