//! Test certificates, made at test time (rcgen, ECDSA P-256, self-signed
//! for `localhost` and 127.0.0.1): no private key is committed. Files are
//! installed by rename, as a certificate manager would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tlsconf::rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::WAIT;

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
    let mut roots = tlsconf::rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    TlsConnector::from(Arc::new(tlsconf::client_config(roots)))
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
