//! Destination safety: which addresses deliveries may connect to.
//!
//! Endpoints are URLs an admin types in, so without a guard anyone who can
//! write a configuration could make sluice send requests into the network
//! it runs in: the cloud metadata service at 169.254.169.254, an internal
//! admin page, the engine's own API. Addresses in the loopback, private,
//! link-local, carrier-grade NAT, unspecified, multicast, broadcast and
//! reserved ranges, and the IPv6 forms that embed such an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo), are refused unless the
//! operator allows a range (`allow_destinations`).
//!
//! This module owns that rule ([`DestinationPolicy`]), the ranges operators
//! write ([`IpRange`]), the DNS resolver that applies the rule to the very
//! addresses a connection is made to ([`GuardedResolver`]), and the
//! client settings every delivery client gets ([`guard`], [`refuse`]).
//!
//! It must never check one DNS answer and let the connection use another
//! (a name that passes a check and then resolves elsewhere, DNS
//! rebinding): the resolver returns only the addresses it allowed, and
//! those are the ones connected to. It must never let a client built here
//! use a proxy (the proxy would resolve the name, unchecked) or follow a
//! redirect (a redirect to a literal address would skip the resolver).
//! Literal addresses never reach a resolver, so they are checked when a
//! configuration is saved and again when its client is built.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::model::export::ConfigError;

/// A range of addresses as operators write it: `10.0.0.0/8`, `fc00::/7`,
/// or one address (`::1`, the same as `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct IpRange {
    /// The first address; no bit past the prefix is set.
    network: IpAddr,
    prefix: u8,
}

/// Why a range was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Not an address, optionally followed by `/` and a prefix length.
    #[error("`{0}` is not an address or a range such as 10.0.0.0/8 or fc00::/7")]
    Malformed(String),
    /// The prefix is longer than the address (32 bits for IPv4, 128 for IPv6).
    #[error("`{input}`: the prefix length is at most {max}")]
    PrefixTooLong { input: String, max: u8 },
    /// Bits are set past the prefix: almost always a typo for the network.
    #[error("`{input}` has bits set past its prefix; did you mean {network}?")]
    HostBits { input: String, network: IpRange },
}

impl IpRange {
    /// A range from its first address and prefix length, for the table of
    /// built-in ranges (`network` has no bit set past `prefix`).
    const fn new(network: IpAddr, prefix: u8) -> Self {
        Self { network, prefix }
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix)
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self::new(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), prefix)
    }

    /// Parses `ADDRESS[/PREFIX]`.
    pub fn parse(raw: &str) -> Result<Self, RangeError> {
        let input = raw.trim();
        let malformed = || RangeError::Malformed(input.chars().take(100).collect());
        let (addr, prefix) = match input.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (input, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| malformed())?;
        let max = width(addr);
        let prefix = match prefix {
            None => max,
            // Digits only, so a failed parse is an overflow: too long.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().unwrap_or(u8::MAX),
            Some(_) => return Err(malformed()),
        };
        if prefix > max {
            return Err(RangeError::PrefixTooLong { input: input.to_owned(), max });
        }
        let network = Self::new(from_bits(bits(addr) & mask(max, prefix), addr), prefix);
        if network.network != addr {
            return Err(RangeError::HostBits { input: input.to_owned(), network });
        }
        Ok(network)
    }

    /// Parses a comma-separated list (the environment variable's form);
    /// empty items are skipped, so `""` is no range at all.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, RangeError> {
        raw.split(',').filter(|item| !item.trim().is_empty()).map(Self::parse).collect()
    }

    /// Whether `ip` is in this range (an IPv4 range holds no IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let max = width(self.network);
        width(ip) == max && (bits(ip) ^ bits(self.network)) & mask(max, self.prefix) == 0
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for IpRange {
    type Err = RangeError;
    fn from_str(raw: &str) -> Result<Self, RangeError> {
        Self::parse(raw)
    }
}

impl TryFrom<String> for IpRange {
    type Error = RangeError;
    fn try_from(raw: String) -> Result<Self, RangeError> {
        Self::parse(&raw)
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `bits` back into an address of `like`'s family.
fn from_bits(bits: u128, like: IpAddr) -> IpAddr {
    match like {
        // The value came from an IPv4 address, masked: it fits.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// The network part of a `width`-bit address with a `prefix`-bit prefix.
fn mask(width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let all = u128::MAX >> (128 - u32::from(width));
    (u128::MAX << (u32::from(width) - u32::from(prefix))) & all
}

/// The kind of range a refused address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reserved {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 (unique local),
    /// fec0::/10 (the deprecated site-local), 64:ff9b:1::/48 (local NAT64).
    Private,
    /// 169.254.0.0/16 (cloud metadata services live here), fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10, the shared address space of carrier-grade NAT.
    CarrierGradeNat,
    /// 0.0.0.0/8 ("this network", which Linux connects to the host itself), ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, 192.0.0.0/24 (protocol assignments), 198.18.0.0/15
    /// (benchmarking), 100::/64 (discard).
    Special,
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback range",
            Self::Private => "private range",
            Self::LinkLocal => "link-local range",
            Self::CarrierGradeNat => "carrier-grade NAT range",
            Self::Unspecified => "unspecified range",
            Self::Multicast => "multicast range",
            Self::Broadcast => "broadcast address",
            Self::Special => "reserved range",
        })
    }
}

/// Ranges refused unless allowed, most specific first (the first match names
/// the kind).
const RESERVED: &[(IpRange, Reserved)] = &[
    (IpRange::v4(0, 0, 0, 0, 8), Reserved::Unspecified),
    (IpRange::v4(10, 0, 0, 0, 8), Reserved::Private),
    (IpRange::v4(100, 64, 0, 0, 10), Reserved::CarrierGradeNat),
    (IpRange::v4(127, 0, 0, 0, 8), Reserved::Loopback),
    (IpRange::v4(169, 254, 0, 0, 16), Reserved::LinkLocal),
    (IpRange::v4(172, 16, 0, 0, 12), Reserved::Private),
    (IpRange::v4(192, 0, 0, 0, 24), Reserved::Special),
    (IpRange::v4(192, 168, 0, 0, 16), Reserved::Private),
    (IpRange::v4(198, 18, 0, 0, 15), Reserved::Special),
    (IpRange::v4(224, 0, 0, 0, 4), Reserved::Multicast),
    (IpRange::v4(255, 255, 255, 255, 32), Reserved::Broadcast),
    (IpRange::v4(240, 0, 0, 0, 4), Reserved::Special),
    (IpRange::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Reserved::Unspecified),
    (IpRange::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Reserved::Loopback),
    (IpRange::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Reserved::Private),
    (IpRange::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Reserved::Special),
    (IpRange::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Reserved::Private),
    (IpRange::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Reserved::LinkLocal),
    (IpRange::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Reserved::Private),
    (IpRange::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Reserved::Multicast),
];

/// The IPv4 address an IPv6 address stands for, where packets to it end up
/// at that IPv4 address: IPv4-mapped (`::ffff:a.b.c.d`, which dual-stack
/// sockets connect to over IPv4), IPv4-translated, IPv4-compatible,
/// NAT64 (`64:ff9b::a.b.c.d`), 6to4 (`2002:AABB:CCDD::`) and Teredo
/// (`2001:0:server:flags:port:client`, 2001::/32), whose packets reach the
/// client's IPv4 address, stored with every bit inverted.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    let tail = Ipv4Addr::new(a, b, c, d);
    match ip.segments() {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        _ if ip.is_unspecified() || ip.is_loopback() => None,
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, high, low, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))),
        [0x2001, 0, .., high, low] => Some(Ipv4Addr::from(!((u32::from(high) << 16) | u32::from(low)))),
        _ => None,
    }
}

/// The kind of reserved range `ip` is in, if any, looking through IPv6
/// forms that embed an IPv4 address.
pub fn reserved(ip: IpAddr) -> Option<Reserved> {
    let direct = |ip: IpAddr| RESERVED.iter().find(|(range, _)| range.contains(ip)).map(|(_, kind)| *kind);
    direct(ip).or_else(|| match ip {
        IpAddr::V6(v6) => embedded_v4(v6).and_then(|v4| direct(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    })
}

/// An address the policy refuses, and the kind of range it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub ip: IpAddr,
    pub range: Reserved,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.ip, self.range)
    }
}

/// Why a destination may not be connected to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Every address the name resolved to is refused (at most a few are named).
    #[error("destination_forbidden: {host} resolves to {}", list(.refused))]
    Resolved { host: String, refused: Vec<Forbidden> },
    /// The endpoint's host is a literal address the policy refuses.
    #[error("destination_forbidden: {0}")]
    Literal(Forbidden),
    /// The name resolved, to nothing.
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    /// The name did not resolve.
    #[error("cannot resolve {host}")]
    Lookup {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

fn list(refused: &[Forbidden]) -> String {
    const SHOWN: usize = 4;
    let mut out = refused.iter().take(SHOWN).map(Forbidden::to_string).collect::<Vec<_>>().join(", ");
    if refused.len() > SHOWN {
        out.push_str(&format!(" and {} more", refused.len() - SHOWN));
    }
    out
}

/// Which reserved ranges this instance may deliver to: none by default.
/// Public addresses are always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allowed: Vec<IpRange>,
    /// How this engine is reached (`host:port`): endpoints that are its own
    /// hosted catchers there are delivered in-process, never connected to.
    own_origins: Vec<String>,
}

impl DestinationPolicy {
    /// A policy allowing the reserved addresses within `allowed`.
    pub fn new(allowed: Vec<IpRange>) -> Self {
        Self { allowed, own_origins: Vec::new() }
    }

    /// Knows the engine's own origins, for its hosted catchers.
    pub fn with_own_origins(self, own_origins: Vec<String>) -> Self {
        Self { own_origins, ..self }
    }

    /// The catcher token of an endpoint that is one of this engine's
    /// hosted catchers ([`crate::pipeline::catcher`]).
    pub fn own_catcher(&self, endpoint: &str) -> Option<String> {
        let url = reqwest::Url::parse(endpoint).ok()?;
        crate::pipeline::catcher::own_token(&self.own_origins, &url)
    }

    pub fn allowed(&self) -> &[IpRange] {
        &self.allowed
    }

    /// Refuses `ip` when it is in a reserved range no allowed range covers.
    /// An allowed range covers an IPv6 form of an IPv4 address when it
    /// covers that IPv4 address (`127.0.0.0/8` allows `::ffff:127.0.0.1`).
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let Some(range) = reserved(ip) else { return Ok(()) };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self.allowed.iter().any(|r| r.contains(ip) || embedded.is_some_and(|v4| r.contains(v4)));
        if allowed { Ok(()) } else { Err(Forbidden { ip, range }) }
    }

    /// Checks a URL's host when it is a literal address; names pass (they
    /// are checked by [`GuardedResolver`] on every connection, since what
    /// they resolve to changes).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Forbidden> {
        // The URL parser has already read every IPv4 spelling (`2130706433`,
        // `0x7f.1`) as dotted decimal; IPv6 hosts come in brackets.
        let host = url.host_str().unwrap_or_default();
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }

    /// Configuration save: refuses an endpoint whose host is a literal
    /// address this policy refuses, with the stable code
    /// `destination_forbidden`. An endpoint that is not a URL passes (the
    /// endpoint's own validation refuses it).
    pub fn validate_endpoint(&self, endpoint: &str) -> Result<(), ConfigError> {
        let Ok(url) = reqwest::Url::parse(endpoint) else { return Ok(()) };
        if crate::pipeline::catcher::own_token(&self.own_origins, &url).is_some() {
            // Delivered in-process: no connection is made to check.
            return Ok(());
        }
        self.check_url(&url).map_err(|forbidden| ConfigError {
            code: "destination_forbidden",
            field: "endpoint".into(),
            reason: format!(
                "{forbidden}: this instance does not deliver to loopback, private, link-local or other reserved addresses \
                 unless its operator allows the range (setting `allow_destinations`)"
            ),
        })
    }

    /// The addresses of `addrs` this policy allows, in their order; an
    /// error naming the refused ones when none is.
    pub fn sift(&self, host: &str, addrs: impl IntoIterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, DestinationError> {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for addr in addrs {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(forbidden) => refused.push(forbidden),
            }
        }
        match (allowed.is_empty(), refused.is_empty()) {
            (false, _) => Ok(allowed),
            (true, false) => Err(DestinationError::Resolved { host: host.to_owned(), refused }),
            (true, true) => Err(DestinationError::NoAddress { host: host.to_owned() }),
        }
    }
}

impl fmt::Display for DestinationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed.is_empty() {
            return f.write_str("none");
        }
        let all: Vec<String> = self.allowed.iter().map(IpRange::to_string).collect();
        f.write_str(&all.join(", "))
    }
}

/// Resolves names with the system resolver (tokio's `lookup_host`) and
/// hands reqwest only the addresses the policy allows: the addresses
/// checked are the addresses connected to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<DestinationPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<DestinationPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port (or the scheme's) in.
            let allowed = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => policy.sift(&host, addrs),
                Err(source) => Err(DestinationError::Lookup { host: host.clone(), source }),
            };
            match allowed {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(Box::new(e) as BoxError),
            }
        })
    }
}

/// What every delivery client is built with: names resolved by a
/// [`GuardedResolver`], no proxy (a proxy would resolve the name itself,
/// unchecked), no redirects (a redirect to a literal address would not go
/// through the resolver).
pub fn guard(builder: reqwest::ClientBuilder, policy: &Arc<DestinationPolicy>) -> reqwest::ClientBuilder {
    builder.dns_resolver(Arc::new(GuardedResolver::new(policy.clone()))).no_proxy().redirect(reqwest::redirect::Policy::none())
}

/// Makes every connection of the client fail with `forbidden`: the client
/// of a configuration whose endpoint is a literal address the policy
/// refuses (saved before the policy changed). Its sends become failed
/// attempts that say why; nothing reaches the address.
pub fn refuse(builder: reqwest::ClientBuilder, forbidden: Forbidden) -> reqwest::ClientBuilder {
    builder.connector_layer(Refuse(forbidden))
}

/// The connector layer of [`refuse`].
#[derive(Debug, Clone, Copy)]
struct Refuse(Forbidden);

impl<S> tower_layer::Layer<S> for Refuse {
    type Service = Refused<S>;
    fn layer(&self, inner: S) -> Refused<S> {
        Refused { _inner: inner, forbidden: self.0 }
    }
}

/// A connector that never connects. It keeps the connector it replaces
/// only because reqwest's layer API hands it over.
#[derive(Debug, Clone)]
struct Refused<S> {
    _inner: S,
    forbidden: Forbidden,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower_service::Service<R> for Refused<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = std::future::Ready<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _destination: R) -> Self::Future {
        std::future::ready(Err(DestinationError::Literal(self.forbidden).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allowed: &str) -> DestinationPolicy {
        DestinationPolicy::new(IpRange::parse_list(allowed).unwrap())
    }

    #[test]
    fn every_reserved_range_is_refused_by_default() {
        let p = DestinationPolicy::default();
        for (addr, kind) in [
            ("169.254.169.254", Reserved::LinkLocal),
            ("169.254.0.1", Reserved::LinkLocal),
            ("fe80::1", Reserved::LinkLocal),
            ("febf:ffff::1", Reserved::LinkLocal),
            ("10.0.0.1", Reserved::Private),
            ("10.255.255.255", Reserved::Private),
            ("172.16.0.1", Reserved::Private),
            ("172.31.255.254", Reserved::Private),
            ("192.168.1.1", Reserved::Private),
            ("fc00::1", Reserved::Private),
            ("fd12:3456::1", Reserved::Private),
            ("fec0::1", Reserved::Private),
            ("100.64.0.1", Reserved::CarrierGradeNat),
            ("100.127.255.254", Reserved::CarrierGradeNat),
            ("127.0.0.1", Reserved::Loopback),
            ("127.255.0.9", Reserved::Loopback),
            ("::1", Reserved::Loopback),
            ("0.0.0.0", Reserved::Unspecified),
            ("0.1.2.3", Reserved::Unspecified),
            ("::", Reserved::Unspecified),
            ("224.0.0.1", Reserved::Multicast),
            ("239.255.255.250", Reserved::Multicast),
            ("ff02::1", Reserved::Multicast),
            ("255.255.255.255", Reserved::Broadcast),
            ("240.0.0.1", Reserved::Special),
            ("198.18.0.1", Reserved::Special),
            ("192.0.0.170", Reserved::Special),
            ("100::1", Reserved::Special),
        ] {
            assert_eq!(p.check(ip(addr)), Err(Forbidden { ip: ip(addr), range: kind }), "{addr}");
        }
    }

    #[test]
    fn public_addresses_and_range_neighbours_pass() {
        let p = DestinationPolicy::default();
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "fbff::1",
            "fe7f::1",
        ] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_of_reserved_ipv4_addresses_are_refused() {
        let p = DestinationPolicy::default();
        for (addr, kind) in [
            ("::ffff:127.0.0.1", Reserved::Loopback),
            ("::ffff:169.254.169.254", Reserved::LinkLocal),
            ("::ffff:10.1.2.3", Reserved::Private),
            ("::ffff:0.0.0.0", Reserved::Unspecified),
            ("::ffff:0:192.168.0.1", Reserved::Private),
            ("::127.0.0.1", Reserved::Loopback),
            ("64:ff9b::a9fe:a9fe", Reserved::LinkLocal),
            ("2002:7f00:1::", Reserved::Loopback),
            ("2002:c0a8:101::1", Reserved::Private),
            // Teredo: the client's address is the last 32 bits inverted.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Reserved::Loopback),
            ("2001:0:4136:e378:8000:63bf:5601:5601", Reserved::LinkLocal),
            ("2001::f5fe:fefc", Reserved::Private),
            ("2001:0:4136:e378:8000:63bf:ffff:ffff", Reserved::Unspecified),
        ] {
            assert_eq!(p.check(ip(addr)), Err(Forbidden { ip: ip(addr), range: kind }), "{addr}");
        }
        for addr in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn allowed_ranges_override_and_cover_ipv6_forms() {
        let p = policy("127.0.0.0/8, ::1/128");
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("127.9.9.9")), Ok(()));
        assert_eq!(p.check(ip("::1")), Ok(()));
        assert_eq!(p.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert!(p.check(ip("10.0.0.1")).is_err());
        assert!(p.check(ip("169.254.169.254")).is_err());

        let p = policy("10.1.0.0/16,fd00::/8");
        assert_eq!(p.check(ip("10.1.200.3")), Ok(()));
        assert!(p.check(ip("10.2.0.1")).is_err());
        assert_eq!(p.check(ip("fd00:1::5")), Ok(()));
        assert!(p.check(ip("fc00::5")).is_err());
        // An IPv4 range says nothing about IPv6 addresses that embed none.
        assert!(policy("0.0.0.0/0").check(ip("::1")).is_err());
        assert_eq!(policy("0.0.0.0/0").check(ip("::ffff:10.0.0.1")), Ok(()));
        assert_eq!(policy("::/0").check(ip("fe80::1")), Ok(()));
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(IpRange::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(IpRange::parse(" ::1 ").unwrap().to_string(), "::1/128");
        assert_eq!(IpRange::parse("192.168.1.7").unwrap().to_string(), "192.168.1.7/32");
        assert_eq!(IpRange::parse("fc00::/7").unwrap().to_string(), "fc00::/7");
        assert_eq!(IpRange::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        for bad in ["", "/8", "10.0.0.0/", "10.0.0/8", "10.0.0.0/x", "10.0.0.0/-1", "10.0.0.0/8/8", "localhost", "[::1]/128", "10.0.0.0 /8"]
        {
            assert!(matches!(IpRange::parse(bad), Err(RangeError::Malformed(_))), "{bad}");
        }
        assert_eq!(IpRange::parse("10.0.0.0/33"), Err(RangeError::PrefixTooLong { input: "10.0.0.0/33".into(), max: 32 }));
        assert!(matches!(IpRange::parse("::/129"), Err(RangeError::PrefixTooLong { max: 128, .. })));
        assert!(matches!(IpRange::parse("10.0.0.0/99999"), Err(RangeError::PrefixTooLong { .. })));
        let err = IpRange::parse("10.1.2.3/8").unwrap_err();
        assert_eq!(err.to_string(), "`10.1.2.3/8` has bits set past its prefix; did you mean 10.0.0.0/8?");
        assert!(matches!(IpRange::parse("fe80::1/10"), Err(RangeError::HostBits { .. })));

        assert_eq!(IpRange::parse_list("").unwrap(), vec![]);
        assert_eq!(IpRange::parse_list(" , ").unwrap(), vec![]);
        assert_eq!(IpRange::parse_list("127.0.0.0/8,::1/128").unwrap().len(), 2);
        assert!(IpRange::parse_list("127.0.0.0/8,nope").is_err());
    }

    #[test]
    fn literal_endpoints_are_refused_at_save_and_names_pass() {
        let p = DestinationPolicy::default();
        for endpoint in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data/",
            "https://[::1]/x",
            "http://[::ffff:7f00:1]/",
            // The URL parser reads these IPv4 spellings as 127.0.0.1.
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let e = p.validate_endpoint(endpoint).unwrap_err();
            assert_eq!((e.code, e.field.as_str()), ("destination_forbidden", "endpoint"), "{endpoint}");
        }
        let e = p.validate_endpoint("http://169.254.169.254/").unwrap_err();
        assert!(e.reason.starts_with("169.254.169.254 (link-local range)"), "{}", e.reason);
        for endpoint in ["https://receiver.example/hook", "http://localhost:9/", "http://8.8.8.8/", "not a url"] {
            assert_eq!(p.validate_endpoint(endpoint), Ok(()), "{endpoint}");
        }
        assert_eq!(policy("127.0.0.0/8").validate_endpoint("http://127.0.0.1:9/hook"), Ok(()));
    }

    #[test]
    fn sifting_keeps_allowed_addresses_and_names_refused_ones() {
        let addrs = |list: &[&str]| list.iter().map(|a| SocketAddr::new(ip(a), 0)).collect::<Vec<_>>();
        let p = DestinationPolicy::default();
        let kept = p.sift("mixed.example", addrs(&["10.0.0.1", "93.184.215.14", "::1"])).unwrap();
        assert_eq!(kept, addrs(&["93.184.215.14"]));
        let e = p.sift("evil.example", addrs(&["169.254.169.254"])).unwrap_err();
        assert_eq!(e.to_string(), "destination_forbidden: evil.example resolves to 169.254.169.254 (link-local range)");
        let e = p.sift("many.example", addrs(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"])).unwrap_err();
        assert!(e.to_string().ends_with("10.0.0.4 (private range) and 1 more"), "{e}");
        assert!(matches!(p.sift("empty.example", []), Err(DestinationError::NoAddress { .. })));
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_unless_loopback_is_allowed() {
        use reqwest::dns::Resolve;
        let name = || "localhost".parse::<reqwest::dns::Name>().unwrap();

        let refused = GuardedResolver::new(Arc::default()).resolve(name()).await.err().expect("localhost is refused");
        let message = refused.to_string();
        assert!(message.starts_with("destination_forbidden: localhost resolves to "), "{message}");
        assert!(message.contains("(loopback range)"), "{message}");

        let allowed = GuardedResolver::new(Arc::new(policy("127.0.0.0/8")));
        let addrs: Vec<SocketAddr> = allowed.resolve(name()).await.expect("localhost resolves").collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_ipv4() && a.ip().is_loopback()), "{addrs:?}");
    }

    /// Clients built with [`guard`] and [`refuse`] connect only where the
    /// policy allows, and say why when they do not.
    #[tokio::test]
    async fn guarded_clients_never_connect_to_refused_addresses() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            // Held open, never answered: a connection is all that counts.
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let chain = |e: &reqwest::Error| {
            let mut all = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                all.push_str(&format!(" / {s}"));
                source = s.source();
            }
            all
        };

        let closed = Arc::new(DestinationPolicy::default());
        let client = guard(reqwest::Client::builder(), &closed).build().unwrap();
        let e = client.get(format!("http://localhost:{port}/")).send().await.unwrap_err();
        let why = chain(&e);
        assert!(why.contains("destination_forbidden: localhost resolves to ") && why.contains("127.0.0.1 (loopback range)"), "{why}");

        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let forbidden = closed.check_url(&url).unwrap_err();
        let client = refuse(guard(reqwest::Client::builder(), &closed), forbidden).build().unwrap();
        let e = client.get(url).send().await.unwrap_err();
        assert!(chain(&e).contains("destination_forbidden: 127.0.0.1 (loopback range)"), "{}", chain(&e));

        let open = Arc::new(policy("127.0.0.0/8"));
        let client = guard(reqwest::Client::builder(), &open).build().unwrap();
        let _ = client.get(format!("http://localhost:{port}/")).timeout(std::time::Duration::from_millis(300)).send().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "only the allowed request connected");
    }
}
