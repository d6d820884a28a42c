//! Options (RFC 7252 §5.4, §5.10 and §12.2; RFC 7641 Observe; RFC 7959 Block1/Block2,
//! Size1/Size2; RFC 7967 No-Response; RFC 9175 Echo/Request-Tag; OCF's 2049 and 2053): option
//! numbers and what they are (critical, unsafe, format, length range, repeatable), the
//! [`Options`] of a message in wire order, the `uint` format, and typed access to the options
//! Drover reads. The options' wire encoding (delta/length nibbles) is [`crate::wire`]'s.

use bytes::Bytes;
use std::fmt;

use crate::block::BlockOption;

/// An option number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OptionNumber(pub u16);

/// The format of an option value (RFC 7252 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Empty,
    Opaque,
    Uint,
    String,
}

/// What RFC 7252 §5.10's table (and the later RFCs') says of an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Definition {
    pub name: &'static str,
    pub format: Format,
    /// Shortest and longest value allowed, in bytes.
    pub min_len: usize,
    pub max_len: usize,
    pub repeatable: bool,
}

const fn def(
    name: &'static str,
    format: Format,
    min_len: usize,
    max_len: usize,
    repeatable: bool,
) -> Definition {
    Definition {
        name,
        format,
        min_len,
        max_len,
        repeatable,
    }
}

impl OptionNumber {
    pub const IF_MATCH: OptionNumber = OptionNumber(1);
    pub const URI_HOST: OptionNumber = OptionNumber(3);
    pub const ETAG: OptionNumber = OptionNumber(4);
    pub const IF_NONE_MATCH: OptionNumber = OptionNumber(5);
    pub const OBSERVE: OptionNumber = OptionNumber(6);
    pub const URI_PORT: OptionNumber = OptionNumber(7);
    pub const LOCATION_PATH: OptionNumber = OptionNumber(8);
    pub const URI_PATH: OptionNumber = OptionNumber(11);
    pub const CONTENT_FORMAT: OptionNumber = OptionNumber(12);
    pub const MAX_AGE: OptionNumber = OptionNumber(14);
    pub const URI_QUERY: OptionNumber = OptionNumber(15);
    pub const ACCEPT: OptionNumber = OptionNumber(17);
    pub const LOCATION_QUERY: OptionNumber = OptionNumber(20);
    pub const BLOCK2: OptionNumber = OptionNumber(23);
    pub const BLOCK1: OptionNumber = OptionNumber(27);
    pub const SIZE2: OptionNumber = OptionNumber(28);
    pub const PROXY_URI: OptionNumber = OptionNumber(35);
    pub const PROXY_SCHEME: OptionNumber = OptionNumber(39);
    pub const SIZE1: OptionNumber = OptionNumber(60);
    pub const ECHO: OptionNumber = OptionNumber(252);
    pub const NO_RESPONSE: OptionNumber = OptionNumber(258);
    pub const REQUEST_TAG: OptionNumber = OptionNumber(292);
    /// OCF-Accept-Content-Format-Version (OCF Core §12.2.5).
    pub const OCF_ACCEPT_CONTENT_FORMAT_VERSION: OptionNumber = OptionNumber(2049);
    /// OCF-Content-Format-Version.
    pub const OCF_CONTENT_FORMAT_VERSION: OptionNumber = OptionNumber(2053);

    /// Critical options must be understood by a recipient (odd numbers, RFC 7252 §5.4.1).
    pub const fn is_critical(self) -> bool {
        self.0 & 1 == 1
    }
    /// Unsafe-to-forward options (RFC 7252 §5.4.2).
    pub const fn is_unsafe(self) -> bool {
        self.0 & 2 == 2
    }
    /// Not part of the cache key (RFC 7252 §5.4.2).
    pub const fn is_no_cache_key(self) -> bool {
        self.0 & 0x1e == 0x1c
    }

    /// The definition of a registered option this crate knows, `None` for others.
    pub const fn definition(self) -> Option<Definition> {
        use Format::*;
        Some(match self.0 {
            1 => def("If-Match", Opaque, 0, 8, true),
            3 => def("Uri-Host", String, 1, 255, false),
            4 => def("ETag", Opaque, 1, 8, true),
            5 => def("If-None-Match", Empty, 0, 0, false),
            6 => def("Observe", Uint, 0, 3, false),
            7 => def("Uri-Port", Uint, 0, 2, false),
            8 => def("Location-Path", String, 0, 255, true),
            11 => def("Uri-Path", String, 0, 255, true),
            12 => def("Content-Format", Uint, 0, 2, false),
            14 => def("Max-Age", Uint, 0, 4, false),
            15 => def("Uri-Query", String, 0, 255, true),
            17 => def("Accept", Uint, 0, 2, false),
            20 => def("Location-Query", String, 0, 255, true),
            23 => def("Block2", Uint, 0, 3, false),
            27 => def("Block1", Uint, 0, 3, false),
            28 => def("Size2", Uint, 0, 4, false),
            35 => def("Proxy-Uri", String, 1, 1034, false),
            39 => def("Proxy-Scheme", String, 1, 255, false),
            60 => def("Size1", Uint, 0, 4, false),
            252 => def("Echo", Opaque, 1, 40, false),
            258 => def("No-Response", Uint, 0, 1, false),
            292 => def("Request-Tag", Opaque, 0, 8, true),
            2049 => def("OCF-Accept-Content-Format-Version", Uint, 0, 2, false),
            2053 => def("OCF-Content-Format-Version", Uint, 0, 2, false),
            _ => return None,
        })
    }
}

impl fmt::Display for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.definition() {
            Some(d) => write!(f, "{} ({})", self.0, d.name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OptionNumber({self})")
    }
}

/// Registered content formats (CoAP Content-Formats registry) Drover names.
pub mod content_format {
    pub const TEXT_PLAIN: u16 = 0;
    pub const LINK_FORMAT: u16 = 40;
    pub const XML: u16 = 41;
    pub const OCTET_STREAM: u16 = 42;
    pub const JSON: u16 = 50;
    pub const CBOR: u16 = 60;
    pub const SENML_JSON: u16 = 110;
    pub const SENML_CBOR: u16 = 112;
    /// `application/vnd.ocf+cbor`.
    pub const OCF_CBOR: u16 = 10000;
}

/// The value of a `uint` option: big-endian, leading zero bytes dropped (0 is empty).
pub fn encode_uint(value: u32) -> Bytes {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    Bytes::copy_from_slice(&bytes[skip..])
}

/// Reads a `uint` value of at most `max_len` bytes (leading zeros are accepted, RFC 7252 §3.2).
pub fn decode_uint(value: &[u8], max_len: usize) -> Option<u32> {
    if value.len() > max_len.min(4) {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Why an option's value cannot be read as its definition says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The option occurs more than once but may not.
    #[error("option {0} repeated")]
    Repeated(OptionNumber),
    /// The value's length is outside the option's range.
    #[error("option {number} has a value of {len} bytes")]
    Length { number: OptionNumber, len: usize },
    /// A string option that is not UTF-8.
    #[error("option {0} is not UTF-8")]
    Utf8(OptionNumber),
    /// A Block1/Block2 value with the reserved size exponent 7 (BERT is not supported).
    #[error("option {0} uses the reserved block size exponent 7")]
    BlockSize(OptionNumber),
}

/// The options of a message, in wire order: ascending by number, repeated options in the
/// order they were added (their order is significant, e.g. Uri-Path segments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options(Vec<(OptionNumber, Bytes)>);

impl Options {
    pub fn new() -> Options {
        Options::default()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Every option, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (OptionNumber, &Bytes)> {
        self.0.iter().map(|(n, v)| (*n, v))
    }

    /// Adds an option after every option of the same or a lower number.
    pub fn push(&mut self, number: OptionNumber, value: impl Into<Bytes>) {
        let at = self.0.partition_point(|(n, _)| *n <= number);
        self.0.insert(at, (number, value.into()));
    }
    /// Adds an option read from the wire (numbers arrive ascending, so this appends).
    pub(crate) fn push_decoded(&mut self, number: OptionNumber, value: Bytes) {
        debug_assert!(self.0.last().is_none_or(|(n, _)| *n <= number));
        self.0.push((number, value));
    }
    /// Replaces every occurrence of `number` with one value.
    pub fn set(&mut self, number: OptionNumber, value: impl Into<Bytes>) {
        self.remove(number);
        self.push(number, value);
    }
    pub fn set_uint(&mut self, number: OptionNumber, value: u32) {
        self.set(number, encode_uint(value));
    }
    pub fn remove(&mut self, number: OptionNumber) {
        self.0.retain(|(n, _)| *n != number);
    }
    /// Every value of `number`, in order.
    pub fn get_all(&self, number: OptionNumber) -> impl Iterator<Item = &Bytes> {
        self.0
            .iter()
            .filter(move |(n, _)| *n == number)
            .map(|(_, v)| v)
    }
    /// The only value of a non-repeatable option (an error if it occurs more than once).
    pub fn get(&self, number: OptionNumber) -> Result<Option<&Bytes>, OptionError> {
        let mut all = self.get_all(number);
        let first = all.next();
        if all.next().is_some() {
            return Err(OptionError::Repeated(number));
        }
        Ok(first)
    }
    pub fn contains(&self, number: OptionNumber) -> bool {
        self.0.iter().any(|(n, _)| *n == number)
    }

    /// A `uint` option, checked against its length range (at most 4 bytes for unknown ones).
    pub fn get_uint(&self, number: OptionNumber) -> Result<Option<u32>, OptionError> {
        let Some(value) = self.get(number)? else {
            return Ok(None);
        };
        let max = number.definition().map_or(4, |d| d.max_len);
        decode_uint(value, max)
            .map(Some)
            .ok_or(OptionError::Length {
                number,
                len: value.len(),
            })
    }

    fn strings(&self, number: OptionNumber) -> Result<Vec<&str>, OptionError> {
        self.get_all(number)
            .map(|v| {
                if v.len() > 255 {
                    return Err(OptionError::Length {
                        number,
                        len: v.len(),
                    });
                }
                std::str::from_utf8(v).map_err(|_| OptionError::Utf8(number))
            })
            .collect()
    }
    /// The Uri-Path segments.
    pub fn uri_path(&self) -> Result<Vec<&str>, OptionError> {
        self.strings(OptionNumber::URI_PATH)
    }
    /// The Uri-Query arguments.
    pub fn uri_query(&self) -> Result<Vec<&str>, OptionError> {
        self.strings(OptionNumber::URI_QUERY)
    }
    /// The Location-Path segments.
    pub fn location_path(&self) -> Result<Vec<&str>, OptionError> {
        self.strings(OptionNumber::LOCATION_PATH)
    }
    /// Appends one Uri-Path option per `/`-separated segment of `path` (leading `/` ignored).
    pub fn push_uri_path(&mut self, path: &str) {
        for segment in path.trim_start_matches('/').split('/') {
            self.push(
                OptionNumber::URI_PATH,
                Bytes::copy_from_slice(segment.as_bytes()),
            );
        }
    }
    pub fn content_format(&self) -> Result<Option<u16>, OptionError> {
        self.u16_option(OptionNumber::CONTENT_FORMAT)
    }
    pub fn accept(&self) -> Result<Option<u16>, OptionError> {
        self.u16_option(OptionNumber::ACCEPT)
    }
    fn u16_option(&self, number: OptionNumber) -> Result<Option<u16>, OptionError> {
        // The definition caps these at 2 bytes, so the value fits.
        Ok(self
            .get_uint(number)?
            .map(|v| u16::try_from(v).unwrap_or(u16::MAX)))
    }
    /// Observe (RFC 7641): 0 registers, 1 deregisters; in notifications a sequence number.
    pub fn observe(&self) -> Result<Option<u32>, OptionError> {
        self.get_uint(OptionNumber::OBSERVE)
    }
    pub fn max_age(&self) -> Result<Option<u32>, OptionError> {
        self.get_uint(OptionNumber::MAX_AGE)
    }
    pub fn size1(&self) -> Result<Option<u32>, OptionError> {
        self.get_uint(OptionNumber::SIZE1)
    }
    pub fn size2(&self) -> Result<Option<u32>, OptionError> {
        self.get_uint(OptionNumber::SIZE2)
    }
    pub fn block1(&self) -> Result<Option<BlockOption>, OptionError> {
        self.block(OptionNumber::BLOCK1)
    }
    pub fn block2(&self) -> Result<Option<BlockOption>, OptionError> {
        self.block(OptionNumber::BLOCK2)
    }
    fn block(&self, number: OptionNumber) -> Result<Option<BlockOption>, OptionError> {
        match self.get_uint(number)? {
            None => Ok(None),
            Some(v) => BlockOption::from_uint(v)
                .map(Some)
                .ok_or(OptionError::BlockSize(number)),
        }
    }
    pub fn set_block1(&mut self, block: BlockOption) {
        self.set_uint(OptionNumber::BLOCK1, block.to_uint());
    }
    pub fn set_block2(&mut self, block: BlockOption) {
        self.set_uint(OptionNumber::BLOCK2, block.to_uint());
    }
    /// ETag values (opaque, 1–8 bytes each).
    pub fn etags(&self) -> impl Iterator<Item = &Bytes> {
        self.get_all(OptionNumber::ETAG)
    }
    pub fn if_none_match(&self) -> bool {
        self.contains(OptionNumber::IF_NONE_MATCH)
    }

    /// The first critical option a recipient must reject the message for (RFC 7252 §5.4.1):
    /// one this crate does not define and that is not in `also_known`, a defined one whose
    /// value length is out of range, or a non-repeatable one that is repeated. A request gets
    /// 4.02 Bad Option, a confirmable response RST. Elective options are never reported.
    pub fn unrecognized_critical(&self, also_known: &[OptionNumber]) -> Option<OptionNumber> {
        let mut previous = None;
        for (number, value) in self.iter() {
            let repeated = previous == Some(number);
            previous = Some(number);
            if !number.is_critical() || also_known.contains(&number) {
                continue;
            }
            let Some(d) = number.definition() else {
                return Some(number);
            };
            if value.len() < d.min_len || value.len() > d.max_len || (repeated && !d.repeatable) {
                return Some(number);
            }
        }
        None
    }
}

impl FromIterator<(OptionNumber, Bytes)> for Options {
    fn from_iter<I: IntoIterator<Item = (OptionNumber, Bytes)>>(iter: I) -> Options {
        let mut options = Options::new();
        for (n, v) in iter {
            options.push(n, v);
        }
        options
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn option_number_properties() {
        // RFC 7252 §5.4.6's examples.
        assert!(OptionNumber::IF_MATCH.is_critical());
        assert!(!OptionNumber::ETAG.is_critical());
        assert!(OptionNumber::URI_HOST.is_unsafe());
        assert!(!OptionNumber::CONTENT_FORMAT.is_unsafe());
        assert!(OptionNumber::SIZE1.is_no_cache_key());
        assert!(!OptionNumber::URI_PATH.is_no_cache_key());
        assert_eq!(
            OptionNumber::OCF_CONTENT_FORMAT_VERSION.to_string(),
            "2053 (OCF-Content-Format-Version)"
        );
    }

    #[test]
    fn uint_is_minimal_and_accepts_leading_zeros() {
        assert!(encode_uint(0).is_empty());
        assert_eq!(&encode_uint(60)[..], &[60]);
        assert_eq!(&encode_uint(0x0100)[..], &[1, 0]);
        assert_eq!(&encode_uint(u32::MAX)[..], &[0xff; 4]);
        assert_eq!(decode_uint(&[0, 0, 5], 3), Some(5));
        assert_eq!(decode_uint(&[], 0), Some(0));
        assert_eq!(decode_uint(&[1, 2, 3], 2), None);
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5], 8), None);
    }

    #[test]
    fn options_keep_wire_order() {
        let mut o = Options::new();
        o.push(OptionNumber::URI_QUERY, &b"a=1"[..]);
        o.push_uri_path("/v1/telemetry");
        o.set_uint(OptionNumber::CONTENT_FORMAT, 50);
        o.push(OptionNumber::URI_QUERY, &b"b=2"[..]);
        let numbers: Vec<u16> = o.iter().map(|(n, _)| n.0).collect();
        assert_eq!(numbers, [11, 11, 12, 15, 15]);
        assert_eq!(o.uri_path().unwrap(), ["v1", "telemetry"]);
        assert_eq!(o.uri_query().unwrap(), ["a=1", "b=2"]);
        assert_eq!(o.content_format().unwrap(), Some(50));
        o.set_uint(OptionNumber::CONTENT_FORMAT, 0);
        assert_eq!(o.content_format().unwrap(), Some(0));
        assert_eq!(o.accept().unwrap(), None);
    }

    #[test]
    fn typed_access_reports_bad_values() {
        let mut o = Options::new();
        o.push(OptionNumber::CONTENT_FORMAT, &[1, 2, 3][..]);
        assert_eq!(
            o.content_format(),
            Err(OptionError::Length {
                number: OptionNumber::CONTENT_FORMAT,
                len: 3
            })
        );
        o.push(OptionNumber::MAX_AGE, &[1][..]);
        o.push(OptionNumber::MAX_AGE, &[2][..]);
        assert_eq!(
            o.max_age(),
            Err(OptionError::Repeated(OptionNumber::MAX_AGE))
        );
        o.push(OptionNumber::URI_PATH, &[0xff][..]);
        assert_eq!(o.uri_path(), Err(OptionError::Utf8(OptionNumber::URI_PATH)));
        o.push(OptionNumber::BLOCK2, &[0x0f][..]);
        assert_eq!(
            o.block2(),
            Err(OptionError::BlockSize(OptionNumber::BLOCK2))
        );
    }

    #[test]
    fn unrecognized_critical_options() {
        let mut o = Options::new();
        o.push(OptionNumber(2048), &b"elective"[..]);
        o.push_uri_path("a");
        assert_eq!(o.unrecognized_critical(&[]), None);
        o.push(OptionNumber(4209), &b"Basic x"[..]);
        assert_eq!(o.unrecognized_critical(&[]), Some(OptionNumber(4209)));
        assert_eq!(o.unrecognized_critical(&[OptionNumber(4209)]), None);
        let mut o = Options::new();
        o.push(OptionNumber::URI_HOST, Bytes::new());
        assert_eq!(o.unrecognized_critical(&[]), Some(OptionNumber::URI_HOST));
        let mut o = Options::new();
        o.set_uint(OptionNumber::URI_PORT, 5683);
        o.push(OptionNumber::URI_PORT, encode_uint(5684));
        assert_eq!(o.unrecognized_critical(&[]), Some(OptionNumber::URI_PORT));
    }
}
