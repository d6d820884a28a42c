//! Per-user limits of application connections: how many integration connections (WebSocket
//! streams and MQTT integration connections together) one user may hold open on this node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The user holds the most connections allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user '{user}' has {limit} integration connections open on this node, the most allowed (close one, or ask the operator to raise integration_max_connections_per_user)")]
pub struct TooManyConnections {
    pub user: String,
    pub limit: usize,
}

/// Counts each user's open integration connections against a limit.
#[derive(Debug)]
pub struct UserConnections {
    limit: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open connection of a user; freed when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    owner: Arc<UserConnections>,
    user: String,
}

impl UserConnections {
    /// At most `limit` connections per user (0: no limit).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(UserConnections {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection of `user`, if they are under the limit.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<ConnectionSlot, TooManyConnections> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(user.to_string()).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return Err(TooManyConnections {
                user: user.to_string(),
                limit: self.limit,
            });
        }
        *n += 1;
        Ok(ConnectionSlot {
            owner: self.clone(),
            user: user.to_string(),
        })
    }

    /// How many connections `user` holds.
    pub fn open(&self, user: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(user).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_user_and_free_on_drop() {
        let limits = UserConnections::new(2);
        let a1 = limits.acquire("alice").expect("first");
        let _a2 = limits.acquire("alice").expect("second");
        let e = limits.acquire("alice").expect_err("third");
        assert_eq!(e.limit, 2);
        let _b = limits.acquire("bob").expect("another user");
        drop(a1);
        assert_eq!(limits.open("alice"), 1);
        let _a3 = limits.acquire("alice").expect("room again");
        let unlimited = UserConnections::new(0);
        let many: Vec<_> = (0..1000).map(|_| unlimited.acquire("x")).collect();
        assert!(many.iter().all(Result::is_ok));
    }
}
