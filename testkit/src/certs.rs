//! Test certificates, made at test time (rcgen, ECDSA P-256, self-signed
//! for `localhost` and 127.0.0.1): no private key is committed. Files are
//! installed by rename, as a certificate manager would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use protocol::{parse_server_frame, FrameCodec, Reply, Request, ServerFrame, Version};
use tlsconf::rustls::pki_types::{CertificateDer, ServerName};
use tlsconf::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use crate::WAIT;

/// A chat connection over TLS, split into frames.
pub type TlsFramed = Framed<TlsStream<TcpStream>, FrameCodec>;

/// A self-signed certificate and its key.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("rcgen makes a certificate");
        TestCert {
            cert_pem: made.cert.pem(),
            key_pem: made.key_pair.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }

    /// Writes `dir`/cert.pem and `dir`/key.pem (key first, each by rename);
    /// returns their paths.
    pub fn install(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        for (path, text) in [(&key, &self.key_pem), (&cert, &self.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (cert, key)
    }

    /// Writes only the certificate (what a client trusts) to `path`.
    pub fn write_cert(&self, path: &Path) {
        std::fs::write(path, &self.cert_pem).unwrap();
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS client trusting exactly `trusted`, with the shared TLS choices.
pub fn connector(trusted: &[&TestCert]) -> TlsConnector {
    TlsConnector::from(Arc::new(tlsconf::client_config(roots_of(trusted))))
}

/// A TLS client trusting exactly `trusted` that offers only `versions`
/// (to prove a server speaks TLS 1.2 and 1.3 each).
pub fn connector_with_versions(
    trusted: &[&TestCert],
    versions: &[&'static SupportedProtocolVersion],
) -> TlsConnector {
    let config = ClientConfig::builder_with_provider(tlsconf::provider())
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots_of(trusted))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn roots_of(trusted: &[&TestCert]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    roots
}

/// A TLS connection to `addr`, expecting the name `localhost` (what
/// [`TestCert`] carries), within [`WAIT`].
pub async fn connect(addr: SocketAddr, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let go = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a server name");
        tls.connect(name, tcp).await.expect("TLS handshake")
    };
    tokio::time::timeout(WAIT, go)
        .await
        .unwrap_or_else(|_| panic!("TLS connect to {addr} timed out"))
}

/// [`connect`], split into chat frames.
pub async fn framed(addr: SocketAddr, tls: &TlsConnector) -> TlsFramed {
    Framed::new(connect(addr, tls).await, FrameCodec::default())
}

/// PING (v1) over `conn`; the PONG's server name, within [`WAIT`].
pub async fn ping(conn: &mut TlsFramed) -> String {
    let go = async {
        let mut frame = Request::Ping.encode(Version::V1, None);
        frame.pop(); // the codec adds the terminator
        conn.send(&frame[..]).await.expect("send PING");
        while let Some(frame) = conn.next().await {
            if let Ok(incoming) = parse_server_frame(&frame.expect("a frame")) {
                if let ServerFrame::Reply(Reply::Pong(pong)) = incoming.frame {
                    return pong.server;
                }
            }
        }
        panic!("closed before PONG");
    };
    tokio::time::timeout(WAIT, go)
        .await
        .expect("no PONG in time")
}

/// The certificate the server presented on `conn`.
pub fn presented(conn: &TlsFramed) -> CertificateDer<'static> {
    conn.get_ref()
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
        .into_owned()
}
