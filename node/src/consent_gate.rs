//! The order between the holder's disclosure decisions and changes of consent status.

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// Orders disclosure decisions against consent status changes, so that a withdrawal and a
/// decision never interleave.
///
/// - A **decision** (SPEC §8.3: the holder reads a consent's status, decides, and queues the
///   decision's log entry) holds the gate shared, through [`ConsentGate::decision`], from the
///   status read until its entry is queued. Decisions run alongside each other.
/// - A **change** of consent status holds it exclusively, through [`ConsentGate::change`],
///   from the read it depends on until its log entry is queued: a withdrawal, a supersession
///   (recorded here or delivered), the store of a delivered grant (which fixes its passport's
///   subject, and applies a withdrawal that arrived before it), and keeping a withdrawal
///   that overtook its consent.
///
/// So the audit log places every decision wholly before or wholly after each change it raced
/// with: no decision logged after a withdrawal disclosed under the withdrawn consent, and no
/// grant is stored active beside a withdrawal that was kept aside for it. The gate guards no
/// data of its own; a panic while it was held leaves nothing half-written, so poisoning is
/// ignored.
#[derive(Debug, Default)]
pub struct ConsentGate(RwLock<()>);

/// The gate held shared for one decision; released when dropped. It cannot be held across an
/// `.await` in a task (it is not `Send`).
#[derive(Debug)]
pub struct Deciding<'a> {
    _shared: RwLockReadGuard<'a, ()>,
}

impl ConsentGate {
    /// An open gate.
    pub fn new() -> ConsentGate {
        ConsentGate::default()
    }

    /// Holds the gate shared until the guard is dropped: for a decision, from reading consent
    /// status to queueing the decision's log entry. Waits while a change runs.
    pub fn decision(&self) -> Deciding<'_> {
        Deciding {
            _shared: self.0.read().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Runs `change` with the gate held exclusively: no decision and no other change runs
    /// meanwhile. `change` reads what it depends on, writes the new status and queues its log
    /// entry; it must not wait on anything that takes the gate.
    pub fn change<T>(&self, change: impl FnOnce() -> T) -> T {
        let _exclusive = self.0.write().unwrap_or_else(PoisonError::into_inner);
        change()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::Arc;
    use std::time::Duration;

    use super::ConsentGate;

    /// How long a blocked side is given to (wrongly) get through. A correct gate passes
    /// whatever the scheduling; a broken one is caught unless its thread is not scheduled at
    /// all for this long.
    const GRACE: Duration = Duration::from_millis(200);

    #[test]
    fn decisions_share_the_gate() {
        let gate = ConsentGate::new();
        let first = gate.decision();
        let second = gate.decision();
        drop((first, second));
        assert_eq!(gate.change(|| 7), 7);
    }

    #[test]
    fn a_change_waits_for_the_decision_in_progress() {
        let gate = Arc::new(ConsentGate::new());
        let deciding = gate.decision();
        let (changed_tx, changed_rx) = mpsc::channel();
        let changer = std::thread::spawn({
            let gate = gate.clone();
            move || gate.change(|| changed_tx.send(()).unwrap())
        });
        assert_eq!(
            changed_rx.recv_timeout(GRACE),
            Err(RecvTimeoutError::Timeout),
            "a change ran while a decision held the gate"
        );
        drop(deciding);
        changed_rx.recv().unwrap();
        changer.join().unwrap();
    }

    #[test]
    fn a_decision_waits_for_the_change_in_progress() {
        let gate = Arc::new(ConsentGate::new());
        let (inside_tx, inside_rx) = mpsc::channel();
        let (finish_tx, finish_rx) = mpsc::channel::<()>();
        let changer = std::thread::spawn({
            let gate = gate.clone();
            move || {
                gate.change(|| {
                    inside_tx.send(()).unwrap();
                    finish_rx.recv().unwrap();
                })
            }
        });
        inside_rx.recv().unwrap();
        let (decided_tx, decided_rx) = mpsc::channel();
        let decider = std::thread::spawn({
            let gate = gate.clone();
            move || {
                let _deciding = gate.decision();
                decided_tx.send(()).unwrap();
            }
        });
        assert_eq!(
            decided_rx.recv_timeout(GRACE),
            Err(RecvTimeoutError::Timeout),
            "a decision ran while a change held the gate"
        );
        finish_tx.send(()).unwrap();
        changer.join().unwrap();
        decided_rx.recv().unwrap();
        decider.join().unwrap();
    }

    #[test]
    fn changes_exclude_each_other() {
        let gate = Arc::new(ConsentGate::new());
        let (inside_tx, inside_rx) = mpsc::channel();
        let (finish_tx, finish_rx) = mpsc::channel::<()>();
        let first = std::thread::spawn({
            let gate = gate.clone();
            move || {
                gate.change(|| {
                    inside_tx.send(()).unwrap();
                    finish_rx.recv().unwrap();
                })
            }
        });
        inside_rx.recv().unwrap();
        let (second_tx, second_rx) = mpsc::channel();
        let second = std::thread::spawn({
            let gate = gate.clone();
            move || gate.change(|| second_tx.send(()).unwrap())
        });
        assert_eq!(
            second_rx.recv_timeout(GRACE),
            Err(RecvTimeoutError::Timeout),
            "two changes ran at once"
        );
        finish_tx.send(()).unwrap();
        first.join().unwrap();
        second_rx.recv().unwrap();
        second.join().unwrap();
    }
}
