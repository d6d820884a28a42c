//! Drover's device endpoints: they authenticate devices (through `drover-auth`), turn what the
//! devices send into model [`Event`](drover_model::Event)s and append them to the application's
//! stream (through `drover-bus`). Each device protocol is parsed here and nowhere else.
//!
//! Endpoints know nothing of integrations: the two meet only in the bus.

pub mod azure;
pub mod dps;
pub mod event;
pub mod http;
pub mod mqtt;
pub mod tls;
