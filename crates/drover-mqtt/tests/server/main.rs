//! End-to-end tests: a real server on 127.0.0.1:0, rumqttc clients and a raw codec client.

mod common;
mod connect;
mod lifecycle;
mod limits;
mod outbound;
mod publish;
mod robustness;
mod session;
mod subscribe;
mod throughput;
