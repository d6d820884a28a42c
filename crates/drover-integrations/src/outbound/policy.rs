//! The outbound address policy: which addresses a tenant-configured URL may reach.
//!
//! By default an address of one of the [`AddressClass`]es is refused (loopback, unspecified,
//! link-local, private, shared/CGNAT, multicast, broadcast, reserved); every other (public)
//! address is allowed. IPv6 forms that carry an IPv4 address (`::ffff:a.b.c.d`, `::a.b.c.d`,
//! NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they carry. Documentation
//! ranges (192.0.2.0/24, 2001:db8::/32, …) are not routed anywhere and count as public. Teredo
//! (2001::/32) is not decoded.
//!
//! The operator's allow-list opens exceptions: a CIDR (or a single address) allows the addresses
//! in it, a host name allows whatever that exact name resolves to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use url::{Host, Url};

/// Why an address is not reachable by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 0.0.0.0/8 ("this network"), ::.
    Unspecified,
    /// 169.254.0.0/16 (where cloud metadata services live), fe80::/10.
    LinkLocal,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, fec0::/10, 64:ff9b:1::/48.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT).
    SharedAddressSpace,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, 192.0.0.0/24 (IETF protocol assignments), 198.18.0.0/15 (benchmarking),
    /// IPv4-compatible IPv6 (::a.b.c.d, deprecated).
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "shared address space (CGNAT)",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// The class of `ip` if it is refused by default; `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    match ip.octets() {
        [0, ..] => Some(Unspecified),
        [127, ..] => Some(Loopback),
        [10, ..] | [192, 168, ..] => Some(Private),
        [172, b, ..] if (16..=31).contains(&b) => Some(Private),
        [169, 254, ..] => Some(LinkLocal),
        [100, b, ..] if (64..=127).contains(&b) => Some(SharedAddressSpace),
        [192, 0, 0, _] | [198, 18 | 19, ..] => Some(Reserved),
        [255, 255, 255, 255] => Some(Broadcast),
        [a, ..] if a >= 240 => Some(Reserved),
        [a, ..] if a >= 224 => Some(Multicast),
        _ => None,
    }
}

/// The IPv4 address in the last 32 bits of `ip`.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    let s = ip.segments();
    match s {
        // IPv4-compatible (deprecated): nothing routes it; say what it carries if that is worse.
        [0, 0, 0, 0, 0, 0, _, _] => Some(classify_v4(low_v4(ip)).unwrap_or(Reserved)),
        // NAT64, well-known prefix: the IPv4 host behind the translator.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => classify_v4(low_v4(ip)),
        // NAT64, local-use prefix: translates into the operator's own network.
        [0x64, 0xff9b, 1, ..] => Some(Private),
        // 6to4: the IPv4 address in bits 16..48.
        [0x2002, hi, lo, ..] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            classify_v4(Ipv4Addr::new(a, b, c, d))
        }
        [x, ..] if x & 0xffc0 == 0xfe80 => Some(LinkLocal),
        [x, ..] if x & 0xffc0 == 0xfec0 => Some(Private),
        [x, ..] if x & 0xfe00 == 0xfc00 => Some(Private),
        [x, ..] if x & 0xff00 == 0xff00 => Some(Multicast),
        _ => None,
    }
}

/// One entry of the operator's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// Addresses in this network (a single address is a /32 or /128).
    Net(IpNet),
    /// Whatever this host name (lower case, no trailing dot) resolves to.
    Host(String),
}

/// An allow-list entry that is neither a CIDR, an address nor a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid outbound allow-list entry '{entry}': expected a CIDR (10.0.0.0/8, fd00::/8), an IP address or a host name")]
pub struct AllowEntryError {
    pub entry: String,
}

impl FromStr for AllowEntry {
    type Err = AllowEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let err = || AllowEntryError {
            entry: entry.to_string(),
        };
        if entry.contains('/') {
            return entry
                .parse::<IpNet>()
                .map(|n| AllowEntry::Net(n.trunc()))
                .map_err(|_| err());
        }
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(AllowEntry::Net(IpNet::from(ip.to_canonical())));
        }
        let name = normalize_host(entry);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() <= 253 && name.split('.').all(label_ok) {
            Ok(AllowEntry::Host(name))
        } else {
            Err(err())
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net(n) => write!(f, "{n}"),
            AllowEntry::Host(h) => f.write_str(h),
        }
    }
}

impl serde::Serialize for AllowEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lower case, without a trailing dot (`Localhost.` and `localhost` are one name).
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost` and names under `.localhost` (RFC 6761): loopback without asking DNS.
fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// A connection the policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct OutboundRefusal {
    /// The URL's host as written (a name or an address).
    pub host: String,
    /// The address it resolved to (`None`: judged by the name alone, e.g. `localhost`).
    pub addr: Option<IpAddr>,
    pub class: AddressClass,
}

impl fmt::Display for OutboundRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused by the outbound address policy: ")?;
        match self.addr {
            Some(a) if self.host.trim_matches(['[', ']']).parse() == Ok(a) => {
                write!(f, "{} is a {} address", self.host, self.class)?
            }
            Some(a) => write!(f, "{} resolves to {a} ({})", self.host, self.class)?,
            None => write!(f, "{} is a {} name", self.host, self.class)?,
        }
        f.write_str("; allow it with --outbound-allow (DROVER_OUTBOUND_ALLOW)")
    }
}

/// Which addresses tenant-configured URLs may reach: everything public, plus the allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allow: Vec<AllowEntry>,
}

impl OutboundPolicy {
    pub fn new(allow: Vec<AllowEntry>) -> Self {
        Self { allow }
    }

    /// A comma-separated allow-list (`10.0.0.0/8, lns.internal`); empty entries are skipped.
    pub fn parse_list(list: &str) -> Result<Vec<AllowEntry>, AllowEntryError> {
        list.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(str::parse)
            .collect()
    }

    pub fn allow_list(&self) -> &[AllowEntry] {
        &self.allow
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.allow
            .iter()
            .any(|e| matches!(e, AllowEntry::Host(h) if *h == host))
    }

    fn allows_addr(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow
            .iter()
            .any(|e| matches!(e, AllowEntry::Net(n) if n.contains(&ip)))
    }

    /// Whether `host` (as written in the URL) may be reached at `ip`.
    pub fn check_addr(&self, host: &str, ip: IpAddr) -> Result<(), OutboundRefusal> {
        match classify(ip) {
            Some(class) if !self.allows_host(host) && !self.allows_addr(ip) => {
                Err(OutboundRefusal {
                    host: host.to_string(),
                    addr: Some(ip),
                    class,
                })
            }
            _ => Ok(()),
        }
    }

    /// The addresses `host` resolved to that may be reached; the first refusal when none may.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, OutboundRefusal> {
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check_addr(host, a.ip()) {
                Ok(()) => true,
                Err(r) => {
                    refusal.get_or_insert(r);
                    false
                }
            })
            .collect();
        match refusal {
            Some(r) if allowed.is_empty() => Err(r),
            _ => Ok(allowed),
        }
    }

    /// A URL whose host is a literal address: judged on it (no resolver ever sees it). Names
    /// pass; they are judged on what they resolve to when connecting.
    pub fn check_literal(&self, url: &Url) -> Result<(), OutboundRefusal> {
        let host = url.host_str().unwrap_or_default();
        match url.host() {
            Some(Host::Ipv4(a)) => self.check_addr(host, a.into()),
            Some(Host::Ipv6(a)) => self.check_addr(host, a.into()),
            Some(Host::Domain(_)) | None => Ok(()),
        }
    }

    /// What can be judged without DNS, for writes: a literal address, or `localhost` (allowed
    /// by name, or when 127.0.0.1 is). Other names are judged when they are resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), OutboundRefusal> {
        self.check_literal(url)?;
        let Some(Host::Domain(d)) = url.host() else {
            return Ok(());
        };
        let name = normalize_host(d);
        let allowed = self.allows_host(&name) || self.allows_addr(Ipv4Addr::LOCALHOST.into());
        if is_localhost(&name) && !allowed {
            return Err(OutboundRefusal {
                host: d.to_string(),
                addr: None,
                class: AddressClass::Loopback,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn class(ip: &str) -> Option<AddressClass> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn address_classes() {
        use AddressClass::*;
        for (ip, want) in [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.170", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            // Public, and the neighbours of the ranges above.
            ("8.8.8.8", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.255.0.1", None),
            ("192.0.2.1", None),
            ("2001:4860:4860::8888", None),
            ("2001:db8::1", None),
            ("fbff::1", None),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_what_they_carry() {
        use AddressClass::*;
        for (ip, want) in [
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::8.8.8.8", Some(Reserved)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::808:808", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("2002:808:808::1", None),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn allow_list_entries_parse_and_print() {
        let list =
            OutboundPolicy::parse_list(" 10.0.0.0/8, 127.0.0.1,[::1], LNS.Internal., fd00::/8 ,")
                .unwrap();
        let printed: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "10.0.0.0/8",
                "127.0.0.1/32",
                "::1/128",
                "lns.internal",
                "fd00::/8"
            ]
        );
        // Host bits are dropped; a mapped address is its IPv4 address.
        assert_eq!(
            "10.1.2.3/8".parse::<AllowEntry>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "::ffff:127.0.0.1"
                .parse::<AllowEntry>()
                .unwrap()
                .to_string(),
            "127.0.0.1/32"
        );
        assert!(OutboundPolicy::parse_list("").unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "http://x",
            "a b",
            "-x.example",
            "x..example",
            "*.example.com",
        ] {
            let e = bad.parse::<AllowEntry>().unwrap_err();
            assert_eq!(e.entry, bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = OutboundPolicy::parse_list("10.0.0.0/8,nope/1").unwrap_err();
        assert_eq!(e.entry, "nope/1");
    }

    #[test]
    fn the_allow_list_opens_exceptions() {
        let p = OutboundPolicy::new(
            OutboundPolicy::parse_list("127.0.0.1, 10.0.0.0/8, lns.internal").unwrap(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_addr("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(p.check_addr("x", ip("::ffff:127.0.0.1")).is_ok(), "mapped");
        assert!(p.check_addr("x", ip("10.9.9.9")).is_ok());
        assert!(p.check_addr("LNS.internal.", ip("192.168.0.7")).is_ok());
        assert!(p.check_addr("x", ip("8.8.8.8")).is_ok());
        let r = p.check_addr("x", ip("127.0.0.2")).unwrap_err();
        assert_eq!(r.class, AddressClass::Loopback);
        let r = p.check_addr("x", ip("::1")).unwrap_err();
        assert_eq!(
            r.to_string(),
            "refused by the outbound address policy: x resolves to ::1 (loopback); allow it with --outbound-allow (DROVER_OUTBOUND_ALLOW)"
        );
        assert!(OutboundPolicy::default()
            .check_addr("x", ip("127.0.0.1"))
            .is_err());
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let p = OutboundPolicy::new(OutboundPolicy::parse_list("127.0.0.1").unwrap());
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Only the allowed addresses remain.
        assert_eq!(
            p.filter("localhost", [sa("[::1]:80"), sa("127.0.0.1:80")])
                .unwrap(),
            [sa("127.0.0.1:80")]
        );
        assert_eq!(
            p.filter("mixed", [sa("10.0.0.1:80"), sa("93.184.215.14:80")])
                .unwrap(),
            [sa("93.184.215.14:80")]
        );
        // None allowed: the first refusal names it.
        let r = OutboundPolicy::default()
            .filter(
                "rebound.example",
                [sa("169.254.169.254:80"), sa("[::1]:80")],
            )
            .unwrap_err();
        assert_eq!(r.host, "rebound.example");
        assert_eq!(r.addr, Some("169.254.169.254".parse().unwrap()));
        assert_eq!(r.class, AddressClass::LinkLocal);
        assert!(r
            .to_string()
            .contains("rebound.example resolves to 169.254.169.254 (link-local)"));
        // Nothing resolved is not a refusal (the connection fails on its own).
        assert!(OutboundPolicy::default()
            .filter("x", [])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn urls_are_judged_by_literal_addresses_and_localhost() {
        let deny = OutboundPolicy::default();
        let url = |s: &str| Url::parse(s).unwrap();
        for (u, msg) in [
            ("http://127.0.0.1:9/x", "127.0.0.1 is a loopback address"),
            ("http://[::1]/", "[::1] is a loopback address"),
            (
                "http://[::ffff:127.0.0.1]/",
                "[::ffff:7f00:1] is a loopback address",
            ),
            // WHATWG host parsing: these are 127.0.0.1 too.
            ("http://2130706433/", "127.0.0.1 is a loopback address"),
            ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("http://localhost:8011/api", "localhost is a loopback name"),
            ("http://LOCALHOST./", "localhost. is a loopback name"),
            (
                "http://admin.localhost/",
                "admin.localhost is a loopback name",
            ),
        ] {
            let e = deny.check_url(&url(u)).unwrap_err().to_string();
            assert!(e.contains(msg), "{u}: {e}");
            assert!(e.contains("--outbound-allow"), "{u}: {e}");
        }
        // Names are judged when they are resolved.
        assert!(deny.check_url(&url("http://lns.example.com/")).is_ok());
        assert!(deny.check_literal(&url("http://localhost/")).is_ok());
        assert!(deny.check_literal(&url("http://127.0.0.1/")).is_err());
        assert!(deny.check_url(&url("http://8.8.8.8/")).is_ok());
        let allow = OutboundPolicy::new(OutboundPolicy::parse_list("127.0.0.1").unwrap());
        assert!(allow.check_url(&url("http://127.0.0.1:9/")).is_ok());
        assert!(allow.check_url(&url("http://localhost:9/")).is_ok());
        assert!(allow.check_url(&url("http://[::1]:9/")).is_err());
        let by_name = OutboundPolicy::new(OutboundPolicy::parse_list("localhost").unwrap());
        assert!(by_name.check_url(&url("http://localhost:9/")).is_ok());
        assert!(by_name.check_url(&url("http://127.0.0.1:9/")).is_err());
    }
}
