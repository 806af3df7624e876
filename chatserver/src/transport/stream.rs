//! The byte streams a connection runs over once admitted: a TCP socket,
//! or TLS over one (`--tls-cert`). Framing is not known here.

use std::future::Future;
use std::io;
use std::task::{ready, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Bytes read per system call at most.
const READ_CHUNK: usize = 4096;

/// A byte stream a [`Lines`](super::lines::Lines) transport or the web
/// listener's HTTP runs over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
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

impl ByteStream for TcpStream {
    /// Polled by hand rather than an `async fn` awaiting `readable()`: the
    /// readiness future would take 200 bytes in the state of every idle
    /// session, this one the two references.
    fn read_some<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        std::future::poll_fn(move |cx| loop {
            if let Err(error) = ready!(self.poll_read_ready(cx)) {
                return Poll::Ready(Err(error));
            }
            buf.reserve(READ_CHUNK);
            match self.try_read_buf(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // Readiness is reported until a read finds nothing: after
                    // each frame the first poll says ready and this read
                    // comes back empty. Give the reservation back before
                    // waiting, or every idle connection keeps 4 KiB.
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                result => return Poll::Ready(result),
            }
        })
    }
}

impl ByteStream for TlsStream<TcpStream> {
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
