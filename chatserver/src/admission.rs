//! What happens to an accepted connection before its session starts: a
//! slot under `--max-connections`, the PROXY header from a trusted proxy
//! (and the refusal of one from anybody else), and a slot under
//! `--max-connections-per-ip` for the client's real address. A refused
//! connection gets one error line (errno 9 for the limits, 6 for PROXY
//! trouble; an HTTP error on the web listener) and is closed; each refusal
//! is counted and log-throttled. Then, with `--tls-cert`, the TLS
//! handshake (after the PROXY header, which a proxy passing TLS through
//! sends in clear), on either listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use protocol::{Errno, Reply, Version};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection_limits::IpSlot;
use crate::context::Context;
use crate::proxy_header::{read_header, starts_with_header, HEADER_TIMEOUT};
use crate::refusals::Refusal;
use crate::session;
use crate::tls::Tls;
use crate::transport::lines::Lines;
use crate::transport::ByteStream;
use crate::web::{self, Site};

/// What an admitted connection is served as, and whether TLS wraps it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub serves: Serves,
    /// `Some` with `--tls-cert`: the connection is TLS from its first byte
    /// (after a trusted proxy's PROXY header).
    pub tls: Option<Arc<Tls>>,
}

/// The protocol a listener speaks above TCP or TLS.
#[derive(Debug, Clone)]
pub enum Serves {
    /// Chat frames, as lines (the main listener).
    Chat,
    /// HTTP and WebSocket (`--ws-listen`).
    Web(Arc<Site>),
}

/// How long the error line of a refused connection may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// Time a client gets, from its connect, to complete the TLS handshake
/// (at most the login idle timeout, which counts from the connect too).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Admits the connection, then serves it as a session; the slots are held
/// until the session ends.
///
/// Not an `async fn`: one would copy its arguments into its state a second
/// time; a block uses what it captured in place (every idle connection
/// holds this future).
#[allow(clippy::manual_async_fn)]
pub fn serve(
    ctx: Arc<Context>,
    mut stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    shutdown: session::Shutdown,
    listener: Listener,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let connected = Instant::now();
        let guard = &ctx.guard;
        let Some(_slot) = guard.connections.open() else {
            ctx.refusals.note(Refusal::MaxConnections, peer.ip());
            refuse(
                stream,
                &listener,
                Errno::RateLimited,
                "server full, try again later",
            )
            .await;
            return;
        };
        let (client, _ip_slot) = if guard.proxy.trusts(peer.ip()) {
            let header = tokio::select! {
                _ = shutdown.drain.cancelled() => return,
                header = tokio::time::timeout(HEADER_TIMEOUT, Box::pin(read_header(&mut stream, peer))) => header,
            };
            let client = match header {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "connection from a trusted proxy refused");
                    ctx.refusals.note(Refusal::ProxyHeader, peer.ip());
                    refuse(
                        stream,
                        &listener,
                        Errno::BadRequest,
                        "expected a PROXY header",
                    )
                    .await;
                    return;
                }
                Err(_) => {
                    ctx.refusals.note(Refusal::ProxyHeader, peer.ip());
                    refuse(
                        stream,
                        &listener,
                        Errno::BadRequest,
                        "no PROXY header in time",
                    )
                    .await;
                    return;
                }
            };
            let Some(ip_slot) = open_ip_slot(&ctx, client.ip()) else {
                return refuse(stream, &listener, Errno::RateLimited, TOO_MANY_FROM_ADDRESS).await;
            };
            (client, ip_slot)
        } else {
            let Some(ip_slot) = open_ip_slot(&ctx, peer.ip()) else {
                return refuse(stream, &listener, Errno::RateLimited, TOO_MANY_FROM_ADDRESS).await;
            };
            // Clients speak first: wait for their first bytes, within the login
            // idle timeout, to turn away a PROXY header nobody may send here.
            let first = tokio::select! {
                _ = shutdown.drain.cancelled() => return,
                first = tokio::time::timeout_at(connected + ctx.limits.login_idle_timeout, starts_with_header(&stream)) => first,
            };
            match first {
                Ok(Ok(false)) | Ok(Err(_)) => {}
                Ok(Ok(true)) => {
                    ctx.refusals.note(Refusal::ProxyHeader, peer.ip());
                    refuse(
                        stream,
                        &listener,
                        Errno::BadRequest,
                        "PROXY header from an address that is not a trusted proxy",
                    )
                    .await;
                    return;
                }
                Err(_) => {
                    ctx.refusals.note(Refusal::LoginIdle, peer.ip());
                    return;
                }
            }
            (peer, ip_slot)
        };
        let Listener { serves, tls } = listener;
        match (tls, serves) {
            // The one path served inline: this task's size is what every idle
            // chat connection costs, so the others (TLS state, hyper, larger
            // by kilobytes) are boxed and cost only the connections using them.
            (None, Serves::Chat) => {
                serve_chat(ctx, stream, client, conn_id, connected, shutdown).await
            }
            (None, Serves::Web(site)) => {
                Box::pin(web::serve(
                    ctx, site, stream, client, conn_id, connected, shutdown,
                ))
                .await
            }
            (Some(tls), serves) => {
                Box::pin(serve_tls(
                    tls, serves, ctx, stream, client, conn_id, connected, shutdown,
                ))
                .await
            }
        }
    }
}

/// The TLS handshake, then what the listener serves over it.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    tls: Arc<Tls>,
    serves: Serves,
    ctx: Arc<Context>,
    stream: TcpStream,
    client: SocketAddr,
    conn_id: u64,
    connected: Instant,
    shutdown: session::Shutdown,
) {
    let deadline = connected + TLS_HANDSHAKE_TIMEOUT.min(ctx.limits.login_idle_timeout);
    let handshake = tokio::select! {
        _ = shutdown.drain.cancelled() => return,
        handshake = tls.accept(stream, deadline) => handshake,
    };
    let stream = match handshake {
        Ok(stream) => stream,
        // Counted by `tls`; at debug only, since scanners fail handshakes
        // all day.
        Err(error) => return tracing::debug!(%client, %error, "connection closed"),
    };
    match serves {
        Serves::Chat => serve_chat(ctx, stream, client, conn_id, connected, shutdown).await,
        Serves::Web(site) => {
            web::serve(ctx, site, stream, client, conn_id, connected, shutdown).await
        }
    }
}

/// A chat session over `stream` (TCP or TLS).
fn serve_chat<S: ByteStream>(
    ctx: Arc<Context>,
    stream: S,
    client: SocketAddr,
    conn_id: u64,
    connected: Instant,
    shutdown: session::Shutdown,
) -> impl std::future::Future<Output = ()> + Send {
    let transport = Lines::new(stream, ctx.limits.max_frame);
    session::serve(
        ctx,
        transport,
        client,
        conn_id,
        connected,
        shutdown,
        Version::V1,
    )
}

const TOO_MANY_FROM_ADDRESS: &str = "too many connections from your address";

/// A slot under `--max-connections-per-ip` for `ip`; `None` (counted) when
/// that address holds all it may.
fn open_ip_slot(ctx: &Context, ip: IpAddr) -> Option<IpSlot> {
    let slot = ctx.guard.connections.open_ip(ip);
    if slot.is_none() {
        ctx.refusals.note(Refusal::MaxConnectionsPerIp, ip);
    }
    slot
}

/// Writes one error line (an HTTP response on the web listener) and closes.
/// Boxed, as every path but the main one: see [`serve`].
fn refuse<'a>(
    stream: TcpStream,
    listener: &'a Listener,
    errno: Errno,
    message: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(write_refusal(stream, listener, errno, message))
}

async fn write_refusal(
    mut stream: TcpStream,
    listener: &Listener,
    errno: Errno,
    message: &'static str,
) {
    let bytes = match &listener.serves {
        // A TLS client could not read a refusal in clear: it is just closed.
        _ if listener.tls.is_some() => None,
        Serves::Chat => Reply::refuse(None, errno, message).render(Version::V1, None),
        Serves::Web(_) => Some(web::refusal(errno, message)),
    };
    let Some(bytes) = bytes else { return };
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        // Read what the client still sends until it closes, so that our
        // close does not reset the connection under the unread response.
        if matches!(listener.serves, Serves::Web(_)) {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `serve` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<Context>, TcpStream, SocketAddr, u64, session::Shutdown, Listener) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every idle chat connection holds this future (docs/BENCHMARKS.md,
    /// idle memory): 13.4 KB while the TLS and web paths were inline, 1.4
    /// KB since; with the web path alone inline again it is 2.6 KB.
    #[test]
    fn a_plain_chat_connections_future_stays_small() {
        let size = future_size(serve);
        assert!(size <= 2048, "{size} bytes");
    }
}
