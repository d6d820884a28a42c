//! Signaling messages of CoAP over TCP/TLS (RFC 8323 §5): 7.01 CSM (Max-Message-Size,
//! Block-Wise-Transfer), 7.02 Ping and 7.03 Pong (Custody), 7.04 Release (Alternative-Address,
//! Hold-Off), 7.05 Abort (Bad-CSM-Option) as a typed [`Signal`], to and from [`Message`]s, and
//! a peer's cumulative CSM settings ([`CsmSettings`]). Signaling option numbers are scoped to
//! their code; an unknown critical (odd) one is an error the server answers with Abort.

use bytes::Bytes;

use crate::code::Code;
use crate::message::{Message, Token};
use crate::option::{decode_uint, encode_uint, OptionNumber, Options};
use crate::tcp::BASE_MAX_MESSAGE_SIZE;

/// Option 2 of CSM.
pub const MAX_MESSAGE_SIZE: OptionNumber = OptionNumber(2);
/// Option 4 of CSM.
pub const BLOCK_WISE_TRANSFER: OptionNumber = OptionNumber(4);
/// Option 2 of Ping and Pong.
pub const CUSTODY: OptionNumber = OptionNumber(2);
/// Option 2 of Release.
pub const ALTERNATIVE_ADDRESS: OptionNumber = OptionNumber(2);
/// Option 4 of Release.
pub const HOLD_OFF: OptionNumber = OptionNumber(4);
/// Option 2 of Abort.
pub const BAD_CSM_OPTION: OptionNumber = OptionNumber(2);

/// A signaling message. A diagnostic payload (UTF-8, RFC 8323 §5.1) travels in the
/// [`Message`]'s payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// 7.01: the sender's capabilities and settings.
    Csm {
        max_message_size: Option<u32>,
        block_wise_transfer: bool,
    },
    /// 7.02: asks for a Pong; with custody, for one after pending responses.
    Ping { custody: bool },
    /// 7.03: the answer to a Ping, with its token.
    Pong { custody: bool },
    /// 7.04: the sender will close the connection; the peer may reconnect to an alternative
    /// address (`coap+tcp://...` URIs), not before `hold_off` seconds.
    Release {
        alternative_addresses: Vec<String>,
        hold_off: Option<u32>,
    },
    /// 7.05: the sender closes the connection now; `bad_csm_option` names the CSM option that
    /// made it.
    Abort { bad_csm_option: Option<u16> },
}

/// Why a 7.xx message is not a signal this crate can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The code is not of class 7.
    #[error("{0} is not a signaling code")]
    NotSignaling(Code),
    /// A 7.xx code RFC 8323 does not define (7.00, 7.06–7.31).
    #[error("unknown signaling code {0}")]
    UnknownCode(Code),
    /// A critical option the code does not define (RFC 8323 §5.2: answered with Abort).
    #[error("unknown critical option {number} in {code}")]
    UnknownCriticalOption { code: Code, number: OptionNumber },
    /// A defined option with a value it cannot have.
    #[error("bad value of option {number} in {code}")]
    BadOption { code: Code, number: OptionNumber },
}

impl Signal {
    pub fn code(&self) -> Code {
        match self {
            Signal::Csm { .. } => Code::CSM,
            Signal::Ping { .. } => Code::PING,
            Signal::Pong { .. } => Code::PONG,
            Signal::Release { .. } => Code::RELEASE,
            Signal::Abort { .. } => Code::ABORT,
        }
    }

    /// The message of this signal (empty payload). Pong must carry the Ping's token.
    pub fn to_message(&self, token: Token) -> Message {
        let mut options = Options::new();
        match self {
            Signal::Csm {
                max_message_size,
                block_wise_transfer,
            } => {
                if let Some(size) = max_message_size {
                    options.push(MAX_MESSAGE_SIZE, encode_uint(*size));
                }
                if *block_wise_transfer {
                    options.push(BLOCK_WISE_TRANSFER, Bytes::new());
                }
            }
            Signal::Ping { custody } | Signal::Pong { custody } => {
                if *custody {
                    options.push(CUSTODY, Bytes::new());
                }
            }
            Signal::Release {
                alternative_addresses,
                hold_off,
            } => {
                for address in alternative_addresses {
                    options.push(
                        ALTERNATIVE_ADDRESS,
                        Bytes::copy_from_slice(address.as_bytes()),
                    );
                }
                if let Some(seconds) = hold_off {
                    options.push(HOLD_OFF, encode_uint(*seconds));
                }
            }
            Signal::Abort { bad_csm_option } => {
                if let Some(number) = bad_csm_option {
                    options.push(BAD_CSM_OPTION, encode_uint(u32::from(*number)));
                }
            }
        }
        Message {
            code: self.code(),
            token,
            options,
            payload: Bytes::new(),
        }
    }

    /// Reads a signaling message. Unknown elective options are ignored.
    pub fn from_message(msg: &Message) -> Result<Signal, SignalError> {
        let code = msg.code;
        if !code.is_signaling() {
            return Err(SignalError::NotSignaling(code));
        }
        // The options each code defines; the others are unknown.
        let defined: &[OptionNumber] = match code {
            Code::CSM => &[MAX_MESSAGE_SIZE, BLOCK_WISE_TRANSFER],
            Code::PING | Code::PONG => &[CUSTODY],
            Code::RELEASE => &[ALTERNATIVE_ADDRESS, HOLD_OFF],
            Code::ABORT => &[BAD_CSM_OPTION],
            _ => return Err(SignalError::UnknownCode(code)),
        };
        if let Some((number, _)) = msg
            .options
            .iter()
            .find(|(n, _)| n.is_critical() && !defined.contains(n))
        {
            return Err(SignalError::UnknownCriticalOption { code, number });
        }
        let bad = |number| SignalError::BadOption { code, number };
        let single = |number: OptionNumber| -> Result<Option<&Bytes>, SignalError> {
            msg.options.get(number).map_err(|_| bad(number))
        };
        let uint = |number: OptionNumber, max_len: usize| -> Result<Option<u32>, SignalError> {
            single(number)?
                .map(|v| decode_uint(v, max_len).ok_or(bad(number)))
                .transpose()
        };
        let flag = |number: OptionNumber| -> Result<bool, SignalError> {
            match single(number)? {
                None => Ok(false),
                Some(v) if v.is_empty() => Ok(true),
                Some(_) => Err(bad(number)),
            }
        };
        Ok(match code {
            Code::CSM => Signal::Csm {
                max_message_size: uint(MAX_MESSAGE_SIZE, 4)?,
                block_wise_transfer: flag(BLOCK_WISE_TRANSFER)?,
            },
            Code::PING => Signal::Ping {
                custody: flag(CUSTODY)?,
            },
            Code::PONG => Signal::Pong {
                custody: flag(CUSTODY)?,
            },
            Code::RELEASE => Signal::Release {
                alternative_addresses: msg
                    .options
                    .get_all(ALTERNATIVE_ADDRESS)
                    .map(|v| match std::str::from_utf8(v) {
                        Ok(s) if (1..=255).contains(&s.len()) => Ok(s.to_string()),
                        _ => Err(bad(ALTERNATIVE_ADDRESS)),
                    })
                    .collect::<Result<_, _>>()?,
                hold_off: uint(HOLD_OFF, 3)?,
            },
            _ => Signal::Abort {
                bad_csm_option: uint(BAD_CSM_OPTION, 2)?
                    .map(|n| u16::try_from(n).unwrap_or(u16::MAX)),
            },
        })
    }
}

/// What a peer's CSMs said so far (RFC 8323 §5.3: settings are cumulative, an option a later
/// CSM leaves out keeps its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsmSettings {
    /// The largest message the peer accepts (base value 1152).
    pub max_message_size: u32,
    /// Whether the peer does block-wise transfer (RFC 7959) over this connection.
    pub block_wise_transfer: bool,
}

impl Default for CsmSettings {
    fn default() -> CsmSettings {
        CsmSettings {
            max_message_size: BASE_MAX_MESSAGE_SIZE as u32,
            block_wise_transfer: false,
        }
    }
}

impl CsmSettings {
    /// Applies a CSM; other signals leave the settings as they are.
    pub fn apply(&mut self, signal: &Signal) {
        if let Signal::Csm {
            max_message_size,
            block_wise_transfer,
        } = signal
        {
            if let Some(size) = max_message_size {
                self.max_message_size = *size;
            }
            self.block_wise_transfer |= *block_wise_transfer;
        }
    }
}
