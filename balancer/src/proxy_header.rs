//! PROXY protocol v2 headers written to backends that asked for them
//! (`proxy_protocol = true`): PROXY with the client's address on a proxied
//! connection, LOCAL (no address) on a health check. Encoding is the `ppp`
//! crate's; this module only chooses what goes in.

use std::net::SocketAddr;

use ppp::v2::{Addresses, Builder, Command, Protocol, Version};

/// The header for a client connection from `client` that arrived on the
/// balancer's address `local`. Mixed families (an IPv4 client on a dual-stack
/// listener) are written as IPv6 with the IPv4 address mapped in.
pub fn proxy(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let pair = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, local)
        }
        _ => (to_v6(client), to_v6(local)),
    };
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        Addresses::from(pair),
    )
    .build()
    // Writing into a Vec cannot fail, and the addresses always fit.
    .unwrap_or_else(|_| self::local())
}

/// The header of a connection the balancer makes for itself.
pub fn local() -> Vec<u8> {
    let mut header = ppp::v2::PROTOCOL_PREFIX.to_vec();
    // Version 2, command LOCAL; family and protocol unspecified; no addresses.
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    header
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::Header;

    #[test]
    fn proxy_header_carries_both_addresses() {
        let client: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let bytes = proxy(client, local);
        let h = Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.addresses, Addresses::from((client, local)));
        assert_eq!(h.len(), bytes.len());
    }

    #[test]
    fn mixed_families_are_mapped_to_v6() {
        let client: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let local: SocketAddr = "[::1]:2".parse().unwrap();
        let h_bytes = proxy(client, local);
        let h = Header::try_from(h_bytes.as_slice()).unwrap();
        assert!(matches!(h.addresses, Addresses::IPv6(_)));
    }

    #[test]
    fn local_header_parses_as_local() {
        let bytes = local();
        let h = Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(h.command, Command::Local);
        assert_eq!(h.addresses, Addresses::Unspecified);
        assert_eq!(bytes.len(), 16);
    }
}
