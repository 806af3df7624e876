//! The TLS choices shared by every ChatChat binary, so the balancer, the
//! chat server, the client and the benchmark cannot drift apart: rustls
//! with the `ring` provider, TLS 1.2 and 1.3 only (rustls offers only AEAD
//! suites with forward secrecy), PEM files read with a size bound, and the
//! client's trust roots (the system's, or one CA file).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::server::ServerSessionMemoryCache;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use rustls;
pub use rustls_pki_types::ServerName;

/// A certificate chain or key larger than this is not one (and a path
/// pointing at /dev/zero must not fill the memory).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// TLS sessions a server remembers for resumption (about 100 bytes each):
/// reconnecting clients skip the full handshake, like Nginx's
/// `ssl_session_cache`.
pub const SESSION_CACHE_ENTRIES: usize = 16 * 1024;
/// The protocol versions we speak; nothing older than TLS 1.2.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why a certificate, key or CA file could not be used. Messages name the
/// file and the problem, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: larger than {MAX_PEM_BYTES} bytes")]
    TooLarge { path: String },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error("{path}: {what}")]
    Pem { path: String, what: String },
    #[error("certificate and key do not make a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted root certificates: {0}")]
    NoRoots(String),
}

/// Reads a PEM file: a regular file once symlinks are followed, at most
/// [`MAX_PEM_BYTES`]. Blocking: call it off the async runtime's threads.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let name = || path.display().to_string();
    let read_error = |source| TlsError::Read {
        path: name(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(TlsError::NotAFile { path: name() });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { path: name() });
    }
    Ok(bytes)
}

/// The crypto provider every config here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates in a PEM file's bytes; `path` names it in errors.
pub fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            what: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(chain)
}

/// A server config from a PEM certificate chain and its key; `names` are
/// the two files' paths, for errors.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    names: (&Path, &Path),
) -> Result<ServerConfig, TlsError> {
    let chain = certificates(cert_pem, names.0)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: names.1.display().to_string(),
        // The error names the PEM problem, never key material.
        what: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // The cache goes with the pair: a rotation starts a new one.
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(config)
}

/// A server config from the two files (blocking reads, see [`read_pem_file`]).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_pem = read_pem_file(cert)?;
    let key_pem = read_pem_file(key)?;
    server_config(&cert_pem, &key_pem, (cert, key))
}

/// Trust roots for a client: the certificates in `ca` (a PEM file) when
/// given, else the system's store (what OpenSSL on this host trusts).
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates(&read_pem_file(path)?, path)? {
                store.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // Unparsable system certificates are skipped, as browsers do.
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or("the system store is empty".to_owned(), |e| e.to_string());
                return Err(TlsError::NoRoots(why));
            }
        }
    }
    Ok(store)
}

/// A client config trusting `roots`.
pub fn client_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tlsconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_generated_pair_loads_and_a_mismatched_one_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = temp("a.crt", a.cert.pem().as_bytes());
        let key = temp("a.key", a.key_pair.serialize_pem().as_bytes());
        let other_key = temp("b.key", b.key_pair.serialize_pem().as_bytes());
        load_server_config(&cert, &key).unwrap();
        let error = load_server_config(&cert, &other_key).unwrap_err();
        assert!(matches!(error, TlsError::Rustls(_)), "{error}");
        let roots = roots(Some(&cert)).unwrap();
        assert_eq!(roots.len(), 1);
    }

    #[test]
    fn files_that_are_not_pem_files_are_named_and_refused() {
        let empty = temp("empty.crt", b"");
        let error = roots(Some(&empty)).unwrap_err().to_string();
        assert!(
            error.contains("empty.crt") && error.contains("no PEM"),
            "{error}"
        );
        let error = read_pem_file(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(error, TlsError::NotAFile { .. }), "{error}");
        let error = read_pem_file(Path::new("/nonexistent/x.pem")).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
    }
}
