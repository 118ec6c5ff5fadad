//! Outbound HTTP for wagate: webhook deliveries now, media fetched by URL later.
//!
//! A customer-supplied URL must never make the gateway talk to itself or its neighbours
//! (loopback, private networks, the cloud metadata endpoint at 169.254.169.254, ...). The
//! [`AddressGuard`] decides which addresses are acceptable, and is applied twice:
//!
//! - when a URL is saved ([`AddressGuard::check_url`], [`AddressGuard::check_url_resolving`]), so
//!   that a client hears about a bad URL at once;
//! - on every request, against the address actually connected to ([`EgressClient`]): names are
//!   resolved by a resolver that drops refused addresses (so a name that resolves to a public
//!   address when saved and to 127.0.0.1 later, DNS rebinding, connects nowhere), IP literals
//!   (which skip the resolver) are checked before the request is built, redirects are never
//!   followed and proxies are never used.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use url::Url;

/// What kind of network an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    /// RFC 1918, carrier-grade NAT (100.64/10), IPv6 unique local (fc00::/7) and site-local.
    Private,
    /// 169.254/16 (the cloud metadata endpoint lives there) and fe80::/10.
    LinkLocal,
    Multicast,
    /// 0.0.0.0/8 and `::`.
    Unspecified,
    /// Broadcast, 240/4, documentation, benchmarking and other special-purpose ranges.
    Reserved,
}

impl AddressClass {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, c, _] = ip.octets();
        match (a, b) {
            (0, _) => Self::Unspecified,
            (127, _) => Self::Loopback,
            (10, _) | (192, 168) => Self::Private,
            (172, 16..=31) | (100, 64..=127) => Self::Private,
            (169, 254) => Self::LinkLocal,
            (224..=239, _) => Self::Multicast,
            (240..=255, _) => Self::Reserved,
            (192, 0) if c == 0 || c == 2 => Self::Reserved,
            (198, 18..=19) => Self::Reserved,
            (198, 51) if c == 100 => Self::Reserved,
            (203, 0) if c == 113 => Self::Reserved,
            _ => Self::Public,
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        if ip.is_unspecified() {
            return Self::Unspecified;
        }
        if ip.is_loopback() {
            return Self::Loopback;
        }
        // Addresses that carry an IPv4 address are what that address is: IPv4-mapped
        // (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let s = ip.segments();
        let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        match s {
            [0, 0, 0, 0, 0, 0, hi, lo] => return Self::of_v4(embedded(hi, lo)),
            [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return Self::of_v4(embedded(hi, lo)),
            [0x2002, hi, lo, ..] => return Self::of_v4(embedded(hi, lo)),
            _ => {}
        }
        match s[0] {
            x if x & 0xfe00 == 0xfc00 => Self::Private,
            x if x & 0xffc0 == 0xfec0 => Self::Private,
            x if x & 0xffc0 == 0xfe80 => Self::LinkLocal,
            x if x & 0xff00 == 0xff00 => Self::Multicast,
            0x0100 if s[1..4] == [0, 0, 0] => Self::Reserved,
            0x2001 if s[1] == 0x0db8 => Self::Reserved,
            _ => Self::Public,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Reserved => "reserved",
        }
    }
}

/// Why a URL or an address is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid absolute URL")]
    Malformed,
    #[error("the scheme must be http or https")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("{host} is a {} address, which the gateway does not connect to", .class.as_str())]
    Refused { host: String, class: AddressClass },
    #[error("{host} resolves only to addresses the gateway does not connect to ({})", .class.as_str())]
    ResolvesOnlyToRefused { host: String, class: AddressClass },
}

/// Which addresses outbound requests may reach: public ones always; loopback and private
/// networks only when allowed (self-hosting beside your own services, and tests); link-local,
/// multicast, unspecified and reserved ones never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressGuard {
    pub allow_private: bool,
}

impl AddressGuard {
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// `Err(class)` when `ip` may not be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AddressClass> {
        match AddressClass::of(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Loopback | AddressClass::Private if self.allow_private => Ok(()),
            class => Err(class),
        }
    }

    /// Parses `raw` and checks what can be checked without the network: the scheme, and the
    /// host when it is an IP literal or a `localhost` name.
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlError> {
        let url = Url::parse(raw).map_err(|_| UrlError::Malformed)?;
        self.check_parsed(&url)?;
        Ok(url)
    }

    /// As [`AddressGuard::check_url`], and a host name must resolve to at least one acceptable
    /// address. A name that does not resolve now is accepted (every request checks again).
    pub async fn check_url_resolving(&self, raw: &str, timeout: Duration) -> Result<Url, UrlError> {
        let url = self.check_url(raw)?;
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            if let Ok(Ok(addrs)) = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await {
                self.filter(addrs).map_err(|class| UrlError::ResolvesOnlyToRefused { host: name.to_owned(), class })?;
            }
        }
        Ok(url)
    }

    fn check_parsed(&self, url: &Url) -> Result<(), UrlError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme);
        }
        let refused = |host: String, class| UrlError::Refused { host, class };
        match url.host().ok_or(UrlError::NoHost)? {
            url::Host::Ipv4(ip) => self.check_ip(ip.into()).map_err(|c| refused(ip.to_string(), c)),
            url::Host::Ipv6(ip) => self.check_ip(ip.into()).map_err(|c| refused(format!("[{ip}]"), c)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(UrlError::NoHost);
                }
                // Resolvers answer these from /etc/hosts or by rule (RFC 6761): loopback.
                if (name == "localhost" || name.ends_with(".localhost")) && !self.allow_private {
                    return Err(refused(name, AddressClass::Loopback));
                }
                Ok(())
            }
        }
    }

    /// The acceptable ones among `addrs`, or the class of a refused one when none is.
    fn filter(&self, addrs: impl Iterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, AddressClass> {
        let (mut allowed, mut refused) = (Vec::new(), None);
        for addr in addrs {
            match self.check_ip(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(class) => refused = Some(class),
            }
        }
        if allowed.is_empty() {
            // No address at all is reported as the resolver's own failure would be.
            return Err(refused.unwrap_or(AddressClass::Unspecified));
        }
        Ok(allowed)
    }
}

/// Resolves names for the client, keeping only the addresses the guard accepts.
struct GuardedResolver {
    guard: AddressGuard,
}

#[derive(Debug)]
struct RefusedName {
    name: String,
    class: AddressClass,
}

impl fmt::Display for RefusedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", UrlError::ResolvesOnlyToRefused { host: self.name.clone(), class: self.class })
    }
}

impl std::error::Error for RefusedName {}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed = guard.filter(addrs).map_err(|class| RefusedName { name, class })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client that connects only where its [`AddressGuard`] allows, never follows a
/// redirect and never uses a proxy. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct EgressClient {
    client: reqwest::Client,
    guard: AddressGuard,
}

impl EgressClient {
    /// Every request gives up after `timeout` (connecting included).
    pub fn new(guard: AddressGuard, timeout: Duration, user_agent: &str) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { guard }))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(user_agent)
            .build()
            .expect("a client with rustls and no system configuration builds");
        Self { client, guard }
    }

    pub fn guard(&self) -> AddressGuard {
        self.guard
    }

    /// A request to `url`, refused at once when its host is an address (or a `localhost`
    /// name) the guard does not accept. Names are checked as they resolve.
    pub fn request(&self, method: reqwest::Method, url: &Url) -> Result<reqwest::RequestBuilder, UrlError> {
        self.guard.check_parsed(url)?;
        Ok(self.client.request(method, url.clone()))
    }
}

/// Whether a failed request was refused by the guard (as opposed to failing on the network).
pub fn is_refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<RefusedName>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A short, log-safe description of a failed request: what went wrong, never the URL (it may
/// carry credentials).
pub fn describe(error: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedName>() {
            return refused.to_string();
        }
        source = e.source();
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        let cause = std::error::Error::source(error).and_then(|e| e.source()).map(|e| e.to_string());
        format!("connection failed{}", cause.map(|c| format!(": {c}")).unwrap_or_default())
    } else if error.is_body() || error.is_decode() {
        "the answer could not be read".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

#[cfg(test)]
mod tests;
