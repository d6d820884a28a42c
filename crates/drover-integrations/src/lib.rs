//! Drover's integrations: how applications receive their devices' events. They read the
//! application's stream from `drover-bus` and speak the application-facing wire formats
//! (CloudEvents in JSON structured mode, binary mode over MQTT 5 and HTTP, Event Grid's schema
//! for webhooks).
//!
//! Integrations know nothing of device protocols: they meet the endpoints only in the bus.

pub mod access;
pub mod cloudevent;
pub mod commands;
pub mod eventgrid;
pub mod limits;
pub mod mqtt;
pub mod outbound;
pub mod twins;
pub mod webhooks;
pub mod websocket;
