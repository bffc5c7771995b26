//! The SSRF guard: a resolver that refuses private addresses before any connection is made.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an address is in a range a sink may not reach without `allow_private`: loopback,
/// 10/8, 172.16/12, 192.168/16, 169.254/16, 100.64/10, 0/8, fc00::/7, fe80::/10, and
/// unspecified / IPv4-mapped forms of those.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Wraps a resolver: an answer holding any private address is refused (unless allowed), so
/// reqwest never connects to it.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) inner: Arc<dyn Resolve>,
    pub(crate) allow_private: bool,
}

/// The error a refused resolution carries (its text reaches `last_error`).
#[derive(Debug, thiserror::Error)]
#[error("refused: the host resolves to an address in a private range (allow_private is off)")]
pub struct PrivateAddress;

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let inner = self.inner.clone();
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = inner.resolve(name).await?.collect();
            if !allow && addrs.iter().any(|a| is_private(a.ip())) {
                return Err(Box::new(PrivateAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
