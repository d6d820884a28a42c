//! # drover-coap
//!
//! CoAP machinery shared by Drover's CoAP device endpoint and (later) the OCF cloud: the
//! message model and the codecs of both transports, with the helpers a server needs around
//! them. Like `drover-mqtt` for MQTT, **it owns** every CoAP byte Drover parses and writes, and
//! **it knows nothing of** the registry, the bus, Drover's topics or sockets: everything here is
//! pure and driven by its caller.
//!
//! - [`message`]: [`Message`] (code, token, options, payload) shared by both transports,
//!   [`UdpMessage`] (type and message id around it), [`Token`].
//! - [`code`]: [`Code`] (`c.dd`) and the named codes; [`option`]: [`OptionNumber`] with the
//!   registered options' definitions (incl. Observe, Block1/Block2, OCF's 2049/2053),
//!   [`Options`] in wire order with typed access, the critical-option rule.
//! - [`udp`]: RFC 7252 datagrams ([`UdpCodec`]); [`tcp`]: RFC 8323 framing ([`TcpCodec`], a
//!   streaming decoder, also a `tokio_util` codec); [`signal`]: RFC 8323 signaling
//!   (CSM, Ping/Pong, Release, Abort). Both codecs bound messages by a configurable maximum
//!   size and report malformed input as a precise [`DecodeError`].
//! - [`reliability`]: message ids, deduplication and the confirmable retransmission schedule
//!   (RFC 7252 §4); [`block`]: block-wise transfer (RFC 7959).
//!
//! ```
//! use drover_coap::{Code, Message, MessageType, Token, UdpCodec, UdpMessage};
//!
//! let codec = UdpCodec::default();
//! let mut request = Message::new(Code::POST, Token::new(&[1, 2]).unwrap());
//! request.options.push_uri_path("v1/telemetry");
//! request.payload = "21.5".into();
//! let datagram = UdpMessage { mtype: MessageType::Confirmable, message_id: 7, message: request };
//! let bytes = codec.to_bytes(&datagram).unwrap();
//! assert_eq!(codec.decode(&bytes).unwrap(), datagram);
//! ```

pub mod block;
pub mod code;
pub mod error;
pub mod message;
pub mod option;
pub mod reliability;
pub mod signal;
pub mod tcp;
pub mod udp;
mod wire;

pub use block::{Block1Assembler, Block1Progress, BlockError, BlockOption};
pub use code::{Code, CodeKind};
pub use error::{DecodeError, EncodeError, Part};
pub use message::{Message, MessageType, Token, TokenTooLong, UdpMessage};
pub use option::{OptionError, OptionNumber, Options};
pub use signal::{CsmSettings, Signal, SignalError};
pub use tcp::TcpCodec;
pub use udp::UdpCodec;
pub use wire::MAX_OPTION_LEN;
