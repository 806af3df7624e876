//! WebSocket clients for tests: a [`Client`] whose frames travel as
//! WebSocket text messages (one frame per message, through a local
//! bridge), and the raw socket for tests about the WebSocket itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

use crate::client::Client;

use crate::WAIT;
pub use tokio_tungstenite::tungstenite;

/// A WebSocket to a chat server's `/ws`.
pub type Socket = WebSocketStream<TcpStream>;

/// Opens `/ws` on `addr` (the server's web listener), sending `origin` as
/// a browser would; the handshake's error (a 403, say) as it is.
pub async fn try_connect_raw(addr: SocketAddr, origin: Option<&str>) -> Result<Socket, Error> {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .map_err(Error::Io)?;
    handshake(stream, addr, origin).await
}

/// The WebSocket handshake for `/ws` on `stream`, already connected to
/// `addr` (and, say, past a PROXY header the test wrote).
pub async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<Socket, Error> {
    handshake_at(stream, &format!("ws://{addr}/ws"), origin).await
}

/// The WebSocket handshake for `url` on `stream`, any byte stream already
/// connected there (a TLS stream for a `wss://` URL).
pub async fn handshake_at<S>(
    stream: S,
    url: &str,
    origin: Option<&str>,
) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request()?;
    if let Some(origin) = origin {
        request.headers_mut().insert(
            "origin",
            HeaderValue::from_str(origin).expect("an origin header value"),
        );
    }
    let (socket, _response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .unwrap_or_else(|_| panic!("websocket handshake with {url} timed out"))?;
    Ok(socket)
}

/// [`try_connect_raw`] from a page served by that server (Origin = its host).
pub async fn connect_raw(addr: SocketAddr) -> Socket {
    try_connect_raw(addr, Some(&format!("http://{addr}")))
        .await
        .unwrap_or_else(|e| panic!("websocket to {addr}: {e}"))
}

/// The close frame the server sent, once the bridge saw it.
#[derive(Clone, Default, Debug)]
pub struct Closed(Arc<Mutex<Option<CloseFrame>>>);

impl Closed {
    pub fn frame(&self) -> Option<CloseFrame> {
        self.0.lock().expect("close slot").clone()
    }
}

/// A typed [`Client`] over a WebSocket to `addr`'s `/ws`, and where its
/// close frame will be.
pub async fn connect(addr: SocketAddr) -> (Client, Closed) {
    client_over(connect_raw(addr).await)
}

/// A typed [`Client`] over an open WebSocket (on any stream: a `wss://`
/// one, say), and where its close frame will be.
pub fn client_over<S>(socket: WebSocketStream<S>) -> (Client, Closed)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closed = Closed::default();
    let (local, remote) = tokio::io::duplex(256 * 1024);
    tokio::spawn(bridge(socket, remote, closed.clone()));
    (Client::over_io(Box::new(local)), closed)
}

/// A typed [`Client`] over `wss://localhost:PORT/ws` on `addr`, from a
/// page of that origin (https), trusting what `tls` trusts.
pub async fn connect_tls(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> (Client, Closed) {
    let host = format!("localhost:{}", addr.port());
    let socket = handshake_at(
        crate::certs::connect(addr, tls).await,
        &format!("wss://{host}/ws"),
        Some(&format!("https://{host}")),
    )
    .await
    .unwrap_or_else(|e| panic!("wss to {addr}: {e}"));
    client_over(socket)
}

/// A new WebSocket user `name` (password `pw`), registered and logged in.
pub async fn user(addr: SocketAddr, name: &str) -> (Client, i64) {
    let (mut client, _) = connect(addr).await;
    let id = client.register(name, "pw").await;
    client.login(id, "pw").await;
    (client, id)
}

/// Frames written by the client (ended by `\n` or NUL) go out one per text
/// message; text messages come back as frames ended by `\n`. A close on
/// either side closes the other.
async fn bridge<S>(
    mut socket: WebSocketStream<S>,
    mut local: tokio::io::DuplexStream,
    closed: Closed,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let mut line = text.as_bytes().to_vec();
                    line.push(b'\n');
                    if local.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    *closed.0.lock().expect("close slot") = frame;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            read = local.read(&mut chunk) => match read {
                Ok(0) | Err(_) => {
                    let _ = socket.close(None).await;
                    break;
                }
                Ok(n) => {
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n' || *b == 0) {
                        let frame: Vec<u8> = pending.drain(..=end).collect();
                        let frame = &frame[..frame.len() - 1];
                        if frame.is_empty() {
                            continue;
                        }
                        let text = String::from_utf8_lossy(frame).into_owned();
                        if socket.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
            },
        }
    }
}
