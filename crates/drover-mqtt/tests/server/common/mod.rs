//! Test server, recording policy, and a raw MQTT client built on the codec.

#![allow(dead_code)]

mod policy;
mod raw;
mod server;

pub use policy::*;
pub use raw::*;
pub use server::*;
