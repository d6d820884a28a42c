//! Consumer groups that span nodes. On one node a group's dispatcher hands every event to one of
//! its members and commits the acknowledged prefix. On a cluster several nodes may run the same
//! group (members of a shared group connect to different nodes), so they split the work:
//!
//! - the **view** is the set of nodes that have online members of the group; every node that
//!   takes part announces itself (see [`crate::cluster::NatsGroups`]);
//! - a device's events belong to one node of the view (rendezvous hashing of node and device,
//!   [`crate::rendezvous`]), the others skip them;
//! - when a node's view changes it **rewinds** to the group's committed offset and reads on from
//!   there (events may be delivered twice around a change, never lost);
//! - each node reports its acknowledged prefix under its view; the group's offset is committed
//!   by the view's first node, as the minimum of the reports of every node of the same view.
//!
//! Without peers (one node), [`View::solo`] owns everything and commits go straight to the log.

use async_trait::async_trait;

use crate::rendezvous::{self, Fnv1a};
use crate::{Offset, Result, StreamKey};

/// The nodes that share a group's work now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Identifies the set of nodes (equal sets, equal epochs).
    pub epoch: u64,
    /// Sorted node names (empty: this node alone, or nobody online).
    pub nodes: Vec<String>,
    /// This node's name.
    pub me: String,
}

impl View {
    /// This node alone.
    pub fn solo(me: impl Into<String>) -> Self {
        let me = me.into();
        Self::of(me.clone(), vec![me])
    }

    /// The view of `nodes` as seen by `me`.
    pub fn of(me: String, mut nodes: Vec<String>) -> Self {
        nodes.sort();
        nodes.dedup();
        let mut h = Fnv1a::new();
        for n in &nodes {
            h.write(n.as_bytes());
            h.write(&[0]);
        }
        Self {
            epoch: h.value(),
            nodes,
            me,
        }
    }

    /// Whether `device`'s events are this node's to deliver: the view's node of the highest
    /// rendezvous weight for it ([`rendezvous::owner`]); everything when the view is empty.
    pub fn owns(&self, device: &str) -> bool {
        if self.nodes.is_empty() {
            return true;
        }
        rendezvous::owner(self.nodes.iter().map(|n| (n, n)), device).is_some_and(|n| *n == self.me)
    }

    /// The node that commits the group's offset.
    pub fn leader(&self) -> Option<&str> {
        self.nodes.first().map(String::as_str)
    }
}

/// The other nodes that may run the same groups.
pub trait GroupPeers: Send + Sync + 'static {
    /// Takes part in `group` of `stream` while the returned link lives.
    fn join(&self, stream: &StreamKey, group: &str) -> Box<dyn GroupLink>;
}

/// One node's part in a group that spans nodes.
#[async_trait]
pub trait GroupLink: Send + Sync {
    /// The current view; changes when nodes come or go.
    fn view(&self) -> tokio::sync::watch::Receiver<View>;
    /// Whether this node has online members (only then it is part of the view).
    fn set_active(&self, active: bool);
    /// This node has everything up to `point` acknowledged under the view of `epoch`; commits
    /// the group's offset when this node leads and every node of the view reported.
    async fn report(&self, epoch: u64, point: Offset) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_has_exactly_one_owner_in_a_view() {
        let nodes = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let views: Vec<View> = ["a", "b", "c"]
            .iter()
            .map(|me| View::of(me.to_string(), nodes.clone()))
            .collect();
        assert!(views.windows(2).all(|w| w[0].epoch == w[1].epoch));
        assert_eq!(views[0].leader(), Some("a"));
        let mut per_node = [0; 3];
        for d in 0..300 {
            let device = format!("device-{d}");
            let owners: Vec<usize> = (0..3).filter(|i| views[*i].owns(&device)).collect();
            assert_eq!(owners.len(), 1, "{device}");
            per_node[owners[0]] += 1;
        }
        assert!(per_node.iter().all(|n| *n > 50), "spread: {per_node:?}");
        assert!(View::solo("x").owns("anything"));
        assert_ne!(View::of("a".into(), vec!["a".into()]).epoch, views[0].epoch);
    }
}
