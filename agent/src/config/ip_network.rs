//! Networks in CIDR notation, as a credential of the `snmp` section lists the
//! addresses it may be sent to; the poller checks every target's address
//! against them before it sends the credential.

use serde::de::{self, Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network in CIDR notation, `10.0.0.0/8` or `2001:db8::/32`; a bare
/// address is the network of that one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork(ipnet::IpNet);

impl IpNetwork {
    /// Whether `address` is in this network; an IPv4-mapped IPv6 address counts as
    /// the IPv4 address it maps.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    /// Parses a network, refusing one with bits set past its prefix length
    /// (`10.1.0.0/8`), which is more likely a typo than meant as `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix_len) = match text.split_once('/') {
            Some((address, prefix_len)) => (address, Some(prefix_len)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not a network such as `10.0.0.0/8`"))?;
        let network = match prefix_len {
            None => ipnet::IpNet::from(address),
            Some(prefix_len) => prefix_len
                .parse::<u8>()
                .ok()
                .and_then(|prefix_len| ipnet::IpNet::new(address, prefix_len).ok())
                .ok_or_else(|| {
                    let bits = if address.is_ipv4() { 32 } else { 128 };
                    format!("`{text}`: the prefix length must be a number from 0 to {bits}")
                })?,
        };
        if network.trunc() != network {
            return Err(format!(
                "`{text}` has bits set past its prefix length; the network is `{}`",
                network.trunc()
            ));
        }
        Ok(Self(network))
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}
