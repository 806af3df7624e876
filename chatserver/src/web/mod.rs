//! The web listener (`--ws-listen`): HTTP/1.1 serving the web client's
//! embedded files, and `/ws` upgraded to a WebSocket that runs an ordinary
//! session (v2 from the first frame). Admission (connection limits, PROXY
//! header) happened before; this owns HTTP only.

pub mod assets;
pub mod origin;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use protocol::Version;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::context::Context;
use crate::session;
use crate::transport::websocket::{self, WebSocket};

pub use assets::Assets;
pub use origin::AllowedOrigins;

/// The path upgraded to a WebSocket.
pub const WS_PATH: &str = "/ws";
/// A request head must arrive within this (slow-loris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (hyper's minimum buffer).
const MAX_HEAD: usize = 8192;
/// How long open HTTP exchanges may finish when the server drains.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// The page may load only its own scripts, styles and images, and connect
/// only to WebSockets (and this origin); no inline script, no plugins, no
/// framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

type Body = Full<Bytes>;
/// An HTTP status and the plain-text reason a handshake is refused with.
type Refused = (StatusCode, &'static str);

/// What the web listener serves, built once at start-up.
#[derive(Debug)]
pub struct Site {
    pub assets: Assets,
    pub origins: AllowedOrigins,
    /// Silence after which the server pings a WebSocket peer, and the time
    /// a ping may stay unanswered.
    pub ping_interval: Duration,
}

/// Serves HTTP on an admitted connection until it closes, or until it
/// upgrades to a WebSocket, which then runs a session on this task.
pub async fn serve(
    ctx: Arc<Context>,
    site: Arc<Site>,
    stream: TcpStream,
    client: SocketAddr,
    conn_id: u64,
    connected: Instant,
    shutdown: session::Shutdown,
) {
    let upgrade: Arc<Mutex<Option<OnUpgrade>>> = Arc::default();
    let ping_interval = site.ping_interval;
    let service = {
        let upgrade = upgrade.clone();
        hyper::service::service_fn(move |request| {
            let response = respond(&site, request, &upgrade);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    // A connection that never upgrades is not logged in either.
    let idle_deadline = connected + ctx.limits.login_idle_timeout;
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shutdown.drain.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HTTP_DRAIN, connection).await;
            return;
        }
        _ = tokio::time::sleep_until(idle_deadline) => return,
    };
    if let Err(error) = served {
        tracing::debug!(%client, %error, "http connection ended");
        return;
    }
    let pending = upgrade.lock().ok().and_then(|mut slot| slot.take());
    let Some(pending) = pending else { return };
    let upgraded = match pending.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%client, %error, "websocket upgrade failed");
            return;
        }
    };
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(websocket::config(ctx.limits.max_frame)),
    )
    .await;
    let transport = WebSocket::new(ws, ping_interval);
    session::serve(
        ctx,
        transport,
        client,
        conn_id,
        connected,
        shutdown,
        Version::V2,
    )
    .await;
}

/// Answers one request; a valid WebSocket handshake leaves its upgrade in
/// `upgrade` for [`serve`] to pick up once the 101 is written.
fn respond(
    site: &Site,
    mut request: Request<Incoming>,
    upgrade: &Mutex<Option<OnUpgrade>>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let mut response = if path == WS_PATH {
        match handshake(site, &request) {
            Ok(accept) => {
                if let Ok(mut slot) = upgrade.lock() {
                    *slot = Some(hyper::upgrade::on(&mut request));
                }
                let mut response = Response::new(Body::default());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                if let Ok(accept) = HeaderValue::from_str(&accept) {
                    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                }
                return response;
            }
            Err((status, message)) => {
                let mut refusal = text(status, message);
                if status == StatusCode::UPGRADE_REQUIRED {
                    refusal.headers_mut().insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                }
                refusal
            }
        }
    } else {
        static_file(site, request.method(), &path, request.headers())
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Checks a WebSocket upgrade (RFC 6455 §4.2.1) and its `Origin`; the
/// `Sec-WebSocket-Accept` to answer, or the refusal.
fn handshake(site: &Site, request: &Request<Incoming>) -> Result<String, Refused> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET to open a WebSocket",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| site.origins.allows(origin, host));
        if !allowed {
            tracing::debug!(
                ?origin,
                ?host,
                "websocket from a page of another origin refused"
            );
            return Err((
                StatusCode::FORBIDDEN,
                "this page's origin may not open a WebSocket here",
            ));
        }
    }
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err((StatusCode::BAD_REQUEST, "expected a WebSocket upgrade"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err((StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only"));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) => Ok(derive_accept_key(key.as_bytes())),
        None => Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")),
    }
}

/// An embedded file, revalidated by ETag on every use (`no-cache`): the
/// files keep their names across releases, so caching them blindly would
/// pair a new page with an old script.
fn static_file(site: &Site, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut refusal = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        refusal
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refusal;
    }
    let Some(asset) = site.assets.get(path) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == asset.etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(Bytes::from_static(asset.body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The raw HTTP response refusing a connection before HTTP is read
/// (connection limits, PROXY header trouble): 503 for the limits, 400 else.
pub fn refusal(errno: protocol::Errno, message: &str) -> Vec<u8> {
    let status = match errno {
        protocol::Errno::RateLimited => "503 Service Unavailable",
        _ => "400 Bad Request",
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{message}\n",
        message.len() + 1
    )
    .into_bytes()
}
