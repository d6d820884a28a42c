//! The cluster over NATS: what the nodes of a cluster tell each other.
//!
//! - [`commands`](NatsPeers) — commands between nodes: a command goes to the node holding the
//!   device's (or a gateway's) connection, waits in a shared queue when there is none, and its
//!   reply comes back to the caller's node; a device connecting to one node ends its
//!   connections on the others (takeover notices). The router's side is [`crate::commands`].
//! - [`groups`](NatsGroups) — consumer groups spanning nodes: heartbeats give each node the
//!   view of the group's nodes, among which devices are split and offsets committed. The rules
//!   are in [`crate::groups`].
//!
//! Both prefix their subjects with the cluster's prefix and put names (device names and group
//! names are free text) into subject tokens base64url-encoded.

mod commands;
mod groups;

pub use self::commands::{ClusterConfig, ClusterError, NatsPeers, TakeoverHandler};
pub use self::groups::NatsGroups;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A name as one NATS subject token: base64url without padding (no `.`, `*`, `>` or space).
fn token(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s.as_bytes())
}
