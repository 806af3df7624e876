//! What a session reads from and writes to: a plain TCP socket, or a TLS
//! stream over one (`--tls-cert`). Another transport (a WebSocket, say)
//! implements [`Transport`] and the session serves it unchanged.

use std::future::Future;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Bytes read per system call at most.
pub const READ_CHUNK: usize = 4096;

/// A byte stream a session can serve.
pub trait Transport: AsyncWrite + Unpin + Send + 'static {
    /// Appends what the peer sent to `buf`; `Ok(0)` at end of stream.
    ///
    /// The buffer grows only once bytes are waiting, so that an idle
    /// connection holds no read buffer. Cancel safe: when the future is
    /// dropped before it completes, nothing was consumed.
    fn read_some<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl Transport for TcpStream {
    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.readable().await?;
            buf.reserve(READ_CHUNK);
            match self.try_read_buf(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }
}

impl Transport for TlsStream<TcpStream> {
    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let (tcp, tls) = self.get_ref();
        // Unless rustls already holds decrypted bytes, wait for the socket
        // first: the buffer is reserved only once a record is coming.
        if tls.wants_read() {
            tcp.readable().await?;
        }
        buf.reserve(READ_CHUNK);
        self.read_buf(buf).await
    }
}
