//! Message codes (RFC 7252 §3 and §12.1, RFC 8323 §5): the `c.dd` byte, its classes (request,
//! success, client error, server error, signaling) and the named codes Drover uses.

use std::fmt;

/// A message code: class (3 bits) and detail (5 bits), written `c.dd`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

/// What a code is, by its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// 0.00.
    Empty,
    /// 0.01–0.31.
    Request,
    /// 2.xx, 4.xx, 5.xx.
    Response,
    /// 7.xx (RFC 8323; reserved over UDP).
    Signaling,
    /// Classes 1, 3 and 6.
    Reserved,
}

impl Code {
    /// A code from its class (0–7) and detail (0–31); out-of-range bits are masked.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0x07) << 5) | (detail & 0x1f))
    }
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }
    pub const fn kind(self) -> CodeKind {
        match self.class() {
            0 if self.0 == 0 => CodeKind::Empty,
            0 => CodeKind::Request,
            2 | 4 | 5 => CodeKind::Response,
            7 => CodeKind::Signaling,
            _ => CodeKind::Reserved,
        }
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn is_request(self) -> bool {
        matches!(self.kind(), CodeKind::Request)
    }
    pub const fn is_response(self) -> bool {
        matches!(self.kind(), CodeKind::Response)
    }
    pub const fn is_signaling(self) -> bool {
        matches!(self.kind(), CodeKind::Signaling)
    }
    /// 2.xx.
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }

    pub const EMPTY: Code = Code::new(0, 0);
    pub const GET: Code = Code::new(0, 1);
    pub const POST: Code = Code::new(0, 2);
    pub const PUT: Code = Code::new(0, 3);
    pub const DELETE: Code = Code::new(0, 4);
    pub const FETCH: Code = Code::new(0, 5);
    pub const PATCH: Code = Code::new(0, 6);
    pub const IPATCH: Code = Code::new(0, 7);

    pub const CREATED: Code = Code::new(2, 1);
    pub const DELETED: Code = Code::new(2, 2);
    pub const VALID: Code = Code::new(2, 3);
    pub const CHANGED: Code = Code::new(2, 4);
    pub const CONTENT: Code = Code::new(2, 5);
    pub const CONTINUE: Code = Code::new(2, 31);

    pub const BAD_REQUEST: Code = Code::new(4, 0);
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    pub const BAD_OPTION: Code = Code::new(4, 2);
    pub const FORBIDDEN: Code = Code::new(4, 3);
    pub const NOT_FOUND: Code = Code::new(4, 4);
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    pub const CONFLICT: Code = Code::new(4, 9);
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    pub const UNPROCESSABLE_ENTITY: Code = Code::new(4, 22);
    pub const TOO_MANY_REQUESTS: Code = Code::new(4, 29);

    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    pub const BAD_GATEWAY: Code = Code::new(5, 2);
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    pub const GATEWAY_TIMEOUT: Code = Code::new(5, 4);
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);

    /// 7.01 Capabilities and Settings Message (RFC 8323 §5.3).
    pub const CSM: Code = Code::new(7, 1);
    /// 7.02 Ping.
    pub const PING: Code = Code::new(7, 2);
    /// 7.03 Pong.
    pub const PONG: Code = Code::new(7, 3);
    /// 7.04 Release.
    pub const RELEASE: Code = Code::new(7, 4);
    /// 7.05 Abort.
    pub const ABORT: Code = Code::new(7, 5);
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_and_classify() {
        assert_eq!(Code::CONTENT.0, 0x45);
        assert_eq!(Code::CSM.0, 0xe1);
        assert_eq!(Code::ABORT.0, 0xe5);
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.to_string(), "4.13");
        assert_eq!(Code::GET.kind(), CodeKind::Request);
        assert_eq!(Code::EMPTY.kind(), CodeKind::Empty);
        assert_eq!(Code::SERVICE_UNAVAILABLE.kind(), CodeKind::Response);
        assert_eq!(Code::PONG.kind(), CodeKind::Signaling);
        assert_eq!(Code::new(1, 0).kind(), CodeKind::Reserved);
        assert_eq!(Code::new(6, 3).kind(), CodeKind::Reserved);
        assert!(Code::CONTINUE.is_success());
    }
}
