//! End-to-end tests of the MQTT integration: a real SQLite registry, embedded event log and
//! MQTT server on 127.0.0.1:0, rumqttc (MQTT 3.1.1 and 5) as the applications. Events are
//! appended to the log directly: the bus is where endpoints and integrations meet.

mod access;
mod common;
mod delivery;
mod guarantees;
