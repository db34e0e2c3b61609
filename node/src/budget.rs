//! Memory held by requests that are still arriving: counted per connection, per peer key and for
//! the whole node, each with a cap. A request's buffer is charged as it grows with the bytes that
//! actually arrive, and released when the request is done, so a caller who announces large
//! frames and then idles holds almost nothing, and one who sends a lot is stopped at a cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use throughgate_protocol::keys::PublicKey;

/// Which cap a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExhausted {
    /// The connection's requests hold their cap.
    #[error("this connection has too many request bytes in flight; wait for answers and retry")]
    Connection,
    /// The caller's key holds its cap across its connections.
    #[error("this caller has too many request bytes in flight; wait for answers and retry")]
    Key,
    /// The node holds its cap across every caller.
    #[error("the node has too many request bytes in flight; retry shortly")]
    Node,
}

impl BudgetExhausted {
    /// The metric label for the cap.
    pub fn metric(self) -> &'static str {
        match self {
            BudgetExhausted::Connection => "request_bytes_per_connection",
            BudgetExhausted::Key => "request_bytes_per_key",
            BudgetExhausted::Node => "request_bytes_per_node",
        }
    }
}

/// Something a growing receive buffer is charged to.
pub trait Charge: Send {
    /// Charges `bytes` more; refuses (charging nothing) when a cap would be passed.
    fn charge(&mut self, bytes: usize) -> Result<(), BudgetExhausted>;
}

/// Charges nothing: for answers read from a node this node itself asked.
#[derive(Debug, Default)]
pub struct Unmetered;

impl Charge for Unmetered {
    fn charge(&mut self, _bytes: usize) -> Result<(), BudgetExhausted> {
        Ok(())
    }
}

/// The node-wide and per-key counts.
#[derive(Debug)]
pub struct Budgets {
    node_cap: usize,
    key_cap: usize,
    conn_cap: usize,
    node: AtomicUsize,
    keys: Mutex<HashMap<PublicKey, usize>>,
}

impl Budgets {
    /// Caps in bytes: per connection, per key, per node.
    pub fn new(conn_cap: usize, key_cap: usize, node_cap: usize) -> Arc<Budgets> {
        Arc::new(Budgets {
            node_cap,
            key_cap,
            conn_cap,
            node: AtomicUsize::new(0),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes held across the node.
    pub fn node_held(&self) -> usize {
        self.node.load(Ordering::Relaxed)
    }

    /// The budget of one new connection from `key`.
    pub fn connection(self: &Arc<Budgets>, key: PublicKey) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            budgets: self.clone(),
            key,
            held: AtomicUsize::new(0),
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, usize>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, conn: &ConnectionBudget, bytes: usize) -> Result<(), BudgetExhausted> {
        // The per-key map's lock orders every take and release, so the three counts move together.
        let mut keys = self.keys();
        let conn_now = conn.held.load(Ordering::Relaxed);
        if conn_now.saturating_add(bytes) > self.conn_cap {
            return Err(BudgetExhausted::Connection);
        }
        let key_now = keys.get(&conn.key).copied().unwrap_or(0);
        if key_now.saturating_add(bytes) > self.key_cap {
            return Err(BudgetExhausted::Key);
        }
        let node_now = self.node.load(Ordering::Relaxed);
        if node_now.saturating_add(bytes) > self.node_cap {
            return Err(BudgetExhausted::Node);
        }
        conn.held.store(conn_now + bytes, Ordering::Relaxed);
        keys.insert(conn.key, key_now + bytes);
        self.node.store(node_now + bytes, Ordering::Relaxed);
        Ok(())
    }

    fn give_back(&self, conn: &ConnectionBudget, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut keys = self.keys();
        let c = conn.held.load(Ordering::Relaxed);
        conn.held.store(c.saturating_sub(bytes), Ordering::Relaxed);
        if let Some(k) = keys.get_mut(&conn.key) {
            *k = k.saturating_sub(bytes);
            if *k == 0 {
                keys.remove(&conn.key);
            }
        }
        let n = self.node.load(Ordering::Relaxed);
        self.node.store(n.saturating_sub(bytes), Ordering::Relaxed);
    }
}

/// One connection's share.
#[derive(Debug)]
pub struct ConnectionBudget {
    budgets: Arc<Budgets>,
    key: PublicKey,
    held: AtomicUsize,
}

impl ConnectionBudget {
    /// A new, empty charge for one request on this connection.
    pub fn request(self: &Arc<ConnectionBudget>) -> RequestCharge {
        RequestCharge {
            conn: self.clone(),
            held: 0,
        }
    }
}

/// The bytes one request holds; given back when dropped.
#[derive(Debug)]
pub struct RequestCharge {
    conn: Arc<ConnectionBudget>,
    held: usize,
}

impl RequestCharge {
    /// Gives back everything this request holds (its buffer has been released).
    pub fn release(&mut self) {
        self.conn.budgets.give_back(&self.conn, self.held);
        self.held = 0;
    }
}

impl Charge for RequestCharge {
    fn charge(&mut self, bytes: usize) -> Result<(), BudgetExhausted> {
        self.conn.budgets.take(&self.conn, bytes)?;
        self.held = self.held.saturating_add(bytes);
        Ok(())
    }
}

impl Drop for RequestCharge {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        throughgate_protocol::keys::SecretKey::from_seed(&[n; 32]).public()
    }

    #[test]
    fn each_cap_is_enforced_and_released_on_drop() {
        let b = Budgets::new(10, 15, 25);
        let c1 = b.connection(key(1));
        let c2 = b.connection(key(1));
        let mut r1 = c1.request();
        r1.charge(8).unwrap();
        let mut r2 = c1.request();
        assert_eq!(r2.charge(3), Err(BudgetExhausted::Connection));
        r2.charge(2).unwrap();
        let mut r3 = c2.request();
        assert_eq!(r3.charge(6), Err(BudgetExhausted::Key));
        r3.charge(5).unwrap();
        let other = b.connection(key(2));
        let mut r4 = other.request();
        r4.charge(10).unwrap();
        let mut r5 = b.connection(key(3)).request();
        assert_eq!(r5.charge(1), Err(BudgetExhausted::Node));
        assert_eq!(b.node_held(), 25);
        drop(r1);
        drop(r4);
        assert_eq!(b.node_held(), 7);
        r5.charge(10).unwrap();
        drop((r2, r3, r5));
        assert_eq!(b.node_held(), 0);
        assert!(b.keys().is_empty(), "idle keys are forgotten");
    }

    #[test]
    fn a_refused_charge_takes_nothing() {
        let b = Budgets::new(10, 10, 10);
        let c = b.connection(key(1));
        let mut r = c.request();
        assert!(r.charge(11).is_err());
        assert_eq!(b.node_held(), 0);
        assert_eq!(c.held.load(Ordering::Relaxed), 0);
    }
}
