//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary), parsed with
//! the `ppp` crate: a trusted proxy (our balancer, Nginx) starts each
//! connection with a header naming the client, so that limits and logs see
//! the client's address rather than the proxy's. Only the header's bytes
//! are consumed: the client's first frame may share its segment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::v2::{Addresses as V2Addresses, Command};
use ppp::{v1, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header accepted: a v1 line is at most 107 bytes; a v2
/// header is 16 bytes, 36 of addresses, and TLVs we ignore.
const MAX_HEADER: usize = 16 + 1024;
/// How long a trusted proxy may take to send the whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The v2 signature; a v1 header starts with `PROXY `.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// Which peers are proxies whose headers we believe.
#[derive(Debug, Clone, Default)]
pub struct ProxyPolicy {
    trusted: Vec<IpNet>,
}

impl ProxyPolicy {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error("no valid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header a trusted proxy sends first, and returns the
/// client's address: the header's source, or `peer` itself for a LOCAL
/// header (the proxy's own health check) or an unknown address family.
/// Callers bound it with [`HEADER_TIMEOUT`].
pub async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() {
            if n == MAX_HEADER {
                return Err(HeaderError::TooLong);
            }
            // Peeking again returns at once while no more bytes came:
            // wait a little (a proxy sends its header in one write, so this
            // is rare) rather than spin.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            continue;
        }
        let (length, client) = match parsed {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_source(&header.addresses)),
            HeaderResult::V2(Ok(header)) => {
                let client = match (header.command, header.addresses) {
                    (Command::Local, _) => None,
                    (Command::Proxy, V2Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (Command::Proxy, V2Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (Command::Proxy, _) => None,
                };
                (header.len(), client)
            }
            HeaderResult::V1(Err(error)) => return Err(HeaderError::Invalid(error.to_string())),
            HeaderResult::V2(Err(error)) => return Err(HeaderError::Invalid(error.to_string())),
        };
        // Consume exactly the header; what follows is the client's.
        stream.read_exact(&mut buf[..length]).await?;
        return Ok(client.unwrap_or(peer));
    }
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

/// Waits for the first bytes of a connection and tells whether they start
/// a PROXY header (to refuse one from a peer that is not trusted). Nothing
/// is consumed. A peer that closes first is `false`: the session sees it.
pub async fn starts_with_header(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 12];
    let n = stream.peek(&mut buf).await?;
    Ok(looks_like_header(&buf[..n]))
}

/// True when `first` starts a v1 header (`PROXY `) or a v2 one (its
/// first 5 bytes at least: `\r\n\r\n` then NUL is never a frame). A
/// header split before that is read as a bad frame instead.
fn looks_like_header(first: &[u8]) -> bool {
    first.starts_with(V1_PREFIX)
        || (first.len() >= 5 && V2_SIGNATURE.starts_with(&first[..first.len().min(12)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks_include_mapped_v4_addresses() {
        let policy = ProxyPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.trusts("127.0.0.2".parse().unwrap()));
        assert!(policy.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.trusts("10.0.0.1".parse().unwrap()));
        assert!(!ProxyPolicy::default().trusts("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn headers_are_told_from_frames() {
        assert!(looks_like_header(b"PROXY TCP4 "));
        assert!(looks_like_header(b"\r\n\r\n\0\r\nQU"));
        assert!(!looks_like_header(b"{\"msgid\":1}"));
        assert!(!looks_like_header(b"\r\n{}"));
        assert!(!looks_like_header(b"P"));
        assert!(!looks_like_header(b"\r\n"));
    }
}
