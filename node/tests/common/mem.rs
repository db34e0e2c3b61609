//! The test process's resident memory, sampled: for attack tests that bound what an attacker
//! can make a node hold.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The process's resident memory in bytes, from `/proc/self/statm` (Linux).
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Samples the resident memory every millisecond on its own thread and keeps the peak above the
/// level at the start.
pub struct PeakRss {
    base: usize,
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn start() -> PeakRss {
        let base = rss();
        let peak = Arc::new(AtomicUsize::new(base));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        PeakRss {
            base,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak growth in bytes.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak
            .load(Ordering::Relaxed)
            .max(rss())
            .saturating_sub(self.base)
    }
}

/// A mebibyte.
pub const MIB: usize = 1024 * 1024;
