//! Who may call a service: its admin tokens, and the proxies whose forwarded client address
//! is believed.

use super::*;

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr =
            addr.parse().map_err(|_| format!("{s:?} is not an address or a CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?
        };
        Ok(Self { addr, prefix })
    }
}

/// The admin token, and those still accepted while callers switch (see [`CommonConfig`]).
#[derive(Clone, Debug)]
pub struct AdminToken {
    pub current: SecretString,
    pub previous: Vec<SecretString>,
}

impl AdminToken {
    /// Whether `given` is the current or a previous token (each compared in constant time).
    pub fn accepts(&self, given: &str) -> bool {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        std::iter::once(&self.current).chain(&self.previous).fold(false, |ok, t| {
            ok | bool::from(given.as_bytes().ct_eq(t.expose_secret().as_bytes()))
        })
    }
}

impl From<&str> for AdminToken {
    fn from(token: &str) -> Self {
        Self { current: SecretString::from(token), previous: Vec::new() }
    }
}

/// Reads the service's own `ADMIN_TOKEN_<SERVICE>`, else `ADMIN_TOKEN`: a comma-separated list,
/// each at least [`MIN_SECRET_LEN`] characters.
pub(crate) fn admin_tokens(service: &str) -> Result<AdminToken, ConfigError> {
    let own = format!("ADMIN_TOKEN_{}", service.to_uppercase().replace('-', "_"));
    let (name, raw) = match var(&own) {
        Some(raw) => (own, raw),
        None => ("ADMIN_TOKEN".to_owned(), required_var("ADMIN_TOKEN")?),
    };
    let mut tokens = raw.split(',').map(str::trim).map(|t| {
        if t.len() < MIN_SECRET_LEN {
            return Err(ConfigError::Invalid {
                name: name.clone(),
                reason: format!("each token must be at least {MIN_SECRET_LEN} characters"),
            });
        }
        Ok(SecretString::from(t))
    });
    let current = tokens.next().ok_or_else(|| ConfigError::Missing(name.clone()))??;
    Ok(AdminToken { current, previous: tokens.collect::<Result<_, _>>()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges_match_their_addresses_only() {
        let net: Cidr = "10.42.0.0/16".parse().unwrap();
        assert!(net.contains("10.42.7.9".parse().unwrap()));
        assert!(!net.contains("10.43.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.42.0.1".parse().unwrap()), "IPv4-mapped IPv6");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "proxy".parse::<Cidr>().is_err());
    }
}
