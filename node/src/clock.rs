//! The node's clock: wall time plus an adjustable offset, so tests can move time forward
//! (expiry of consents and credentials) without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use throughgate_protocol::time::Timestamp;

/// A shareable clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock with no offset.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Now, in whole seconds since the epoch.
    pub fn now(&self) -> Timestamp {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let off = self.offset_secs.load(Ordering::Relaxed);
        Timestamp(wall.saturating_add_signed(off))
    }

    /// Moves this clock (and every clone of it) by `secs`.
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }
}
