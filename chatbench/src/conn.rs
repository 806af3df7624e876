//! One client connection: connect (optionally from a given source address),
//! write requests as v1 (NUL-terminated) or v2 (`\n`, with a `rid`) through
//! the protocol crate, read frames with its codec, and the small
//! request/reply exchanges the scenarios need.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use protocol::{
    Errno, Failure, FrameCodec, FrameError, Login, LoginAck, Logout, MsgId, Register, Reply,
    Request, SendChat, ServerFrame, Version,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::Decoder;

pub use protocol::ChatTarget;

/// Why an exchange failed; `kind()` is the name errors are counted under.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("frame is not a server frame: {0}")]
    BadFrame(String),
    #[error("server answered errno {} in msgid {}", .errno.number(), .msgid.number())]
    Errno { msgid: MsgId, errno: Errno },
    #[error("unexpected msgid {0}")]
    Unexpected(i64),
    #[error("message out of sequence")]
    Sequence,
}

impl BenchError {
    pub fn kind(&self) -> String {
        match self {
            BenchError::Connect(e) => format!("connect_{:?}", e.kind()).to_lowercase(),
            BenchError::Io(e) => format!("io_{:?}", e.kind()).to_lowercase(),
            BenchError::Closed => "closed".into(),
            BenchError::Timeout => "timeout".into(),
            BenchError::BadFrame(_) => "bad_frame".into(),
            BenchError::Errno { msgid, errno } => {
                format!("msgid{}_errno{}", msgid.number(), errno.number())
            }
            BenchError::Unexpected(m) => format!("unexpected_msgid{m}"),
            BenchError::Sequence => "out_of_sequence".into(),
        }
    }

    /// True when the connection cannot be used any more.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            BenchError::Connect(_) | BenchError::Io(_) | BenchError::Closed
        )
    }

    /// An error reply, named by its reply type and errno.
    pub fn refused(failure: &Failure) -> Self {
        BenchError::Errno {
            msgid: Failure::reply_type(failure.request),
            errno: failure.errno,
        }
    }
}

/// Reads one server frame.
pub fn parse(frame: &[u8]) -> Result<ServerFrame, BenchError> {
    protocol::parse_server_frame(frame)
        .map(|incoming| incoming.frame)
        .map_err(|e| BenchError::BadFrame(e.to_string()))
}

/// Reads a frame met while benchmark chats flow: a pushed chat gives its
/// sequence number, an ACK without error (of a v2 chat sent) gives `None`;
/// error replies and anything else are errors.
pub fn chat_seq(frame: &[u8]) -> Result<Option<u64>, BenchError> {
    match parse(frame)? {
        ServerFrame::Chat(chat) => parse_seq(&chat.msg).map(Some).ok_or(BenchError::Sequence),
        ServerFrame::Reply(Reply::Done(_) | Reply::Joined(_)) => Ok(None),
        ServerFrame::Reply(Reply::Error(failure)) => Err(BenchError::refused(&failure)),
        // Presence and list updates come between chats; not measured.
        ServerFrame::Notice(_) => Ok(None),
        other => Err(BenchError::Unexpected(msgid_of(&other))),
    }
}

/// The msgid a server frame came with.
pub fn msgid_of(frame: &ServerFrame) -> i64 {
    let msgid = match frame {
        ServerFrame::Reply(Reply::LoginOk(_)) => MsgId::LoginAck,
        ServerFrame::Reply(Reply::RegisterOk { .. }) => MsgId::RegisterAck,
        ServerFrame::Reply(Reply::Done(_) | Reply::Joined(_)) => MsgId::Ack,
        ServerFrame::Reply(Reply::Pong(_)) => MsgId::Pong,
        ServerFrame::Notice(_) => MsgId::Notice,
        ServerFrame::Reply(Reply::History(_) | Reply::Silent) => MsgId::History,
        ServerFrame::GoAway(_) => MsgId::GoAway,
        ServerFrame::Reply(Reply::Error(failure)) => Failure::reply_type(failure.request),
        ServerFrame::Chat(chat) => chat.target.msgid(),
        ServerFrame::Other { msgid } => return *msgid,
    };
    i64::from(msgid.number())
}

/// The sequence number at the start of a benchmark message text.
pub fn parse_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("seq ")?;
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
}

/// The `time` a v1 chat carries, as the original client sends one.
const V1_TIME: &str = "2024-01-01 00:00:00";

/// The chat a benchmark task sends again and again, only its text `seq N`
/// rewritten: one request reused, so a message costs no allocation. In
/// v1 it carries the sender's `id` and a `time` as the original client's
/// do; v2 leaves both to the server.
#[derive(Debug, Clone)]
pub struct BenchChat(Request);

impl BenchChat {
    pub fn new(from: &User, target: ChatTarget, version: Version) -> Self {
        let v1 = version == Version::V1;
        BenchChat(Request::Chat(SendChat {
            id: v1.then_some(from.id),
            target,
            msg: String::with_capacity(24),
            time: v1.then(|| V1_TIME.to_owned()),
            cid: None,
        }))
    }

    /// The request with the text `seq N`.
    pub fn seq(&mut self, seq: u64) -> &Request {
        // Always a chat: `new` builds nothing else.
        if let Request::Chat(chat) = &mut self.0 {
            chat.msg.clear();
            let _ = write!(chat.msg, "seq {seq}");
        }
        &self.0
    }
}

/// What a connection runs over: frames on TCP, or one frame per text
/// message on a WebSocket (the chat server's `--ws-listen`).
pub enum Link {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

pub struct Conn {
    stream: Link,
    buf: BytesMut,
    codec: FrameCodec,
    /// The version this connection writes: v1 frames as the original client
    /// (NUL-terminated), or v2 (`"v":2`, a `rid`, `\n`).
    pub version: Version,
    /// The frame being written, reused from one request to the next.
    out: Vec<u8>,
    next_rid: u64,
}

impl Conn {
    pub async fn connect(
        server: SocketAddr,
        source: Option<IpAddr>,
        version: Version,
    ) -> Result<Conn, BenchError> {
        let stream = match source {
            None => TcpStream::connect(server).await,
            Some(ip) => {
                async {
                    let socket = if ip.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(server).await
                }
                .await
            }
        }
        .map_err(BenchError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream: Link::Tcp(stream),
            buf: BytesMut::with_capacity(4096),
            codec: FrameCodec::new(1 << 24),
            version,
            out: Vec::with_capacity(256),
            next_rid: 1,
        })
    }

    /// [`connect`](Self::connect), then a WebSocket handshake for `/ws`
    /// (v2 only: WebSocket sessions are v2).
    pub async fn connect_ws(
        server: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<Conn, BenchError> {
        let mut conn = Self::connect(server, source, Version::V2).await?;
        let Link::Tcp(stream) = conn.stream else {
            unreachable!("connect opens TCP")
        };
        let request = format!("ws://{server}/ws")
            .into_client_request()
            .map_err(|e| BenchError::BadFrame(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| BenchError::Connect(std::io::Error::other(e)))?;
        conn.stream = Link::Ws(Box::new(ws));
        Ok(conn)
    }

    /// Writes a request in this connection's version (v2: with the next
    /// `rid`), in one write call.
    pub async fn send(&mut self, request: &Request) -> Result<(), BenchError> {
        let rid = (self.version == Version::V2).then(|| {
            self.next_rid += 1;
            Value::from(self.next_rid - 1)
        });
        request.encode_into(&mut self.out, self.version, rid.as_ref());
        match &mut self.stream {
            Link::Tcp(stream) => stream.write_all(&self.out).await.map_err(BenchError::Io),
            Link::Ws(ws) => {
                let frame = self.out.strip_suffix(b"\n").unwrap_or(&self.out);
                let text = String::from_utf8(frame.to_vec())
                    .map_err(|e| BenchError::BadFrame(e.to_string()))?;
                ws.send(Message::text(text))
                    .await
                    .map_err(|e| BenchError::Io(std::io::Error::other(e)))
            }
        }
    }

    /// Reads the next frame.
    pub async fn recv(&mut self) -> Result<Bytes, BenchError> {
        let stream = match &mut self.stream {
            Link::Tcp(stream) => stream,
            Link::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(Bytes::from(text)),
                    Some(Ok(Message::Close(_))) | None => return Err(BenchError::Closed),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(BenchError::Io(std::io::Error::other(e))),
                }
            },
        };
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(FrameError::Io(e)) => return Err(BenchError::Io(e)),
                Err(e) => return Err(BenchError::BadFrame(e.to_string())),
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            match stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(BenchError::Closed),
                Ok(_) => {}
                Err(e) => return Err(BenchError::Io(e)),
            }
        }
    }

    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Bytes, BenchError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .unwrap_or(Err(BenchError::Timeout))
    }

    /// Reads frames until a reply that `pick` takes. Pushed chats and ACKs
    /// without error met on the way are skipped; an error reply is an error.
    async fn expect<T>(
        &mut self,
        limit: Duration,
        pick: impl Fn(Reply) -> Result<T, Reply>,
    ) -> Result<T, BenchError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.recv())
                .await
                .unwrap_or(Err(BenchError::Timeout))?;
            match parse(&frame)? {
                ServerFrame::Reply(Reply::Error(failure)) => {
                    return Err(BenchError::refused(&failure))
                }
                ServerFrame::Reply(reply) => match pick(reply) {
                    Ok(picked) => return Ok(picked),
                    Err(Reply::Done(_) | Reply::Joined(_)) => {}
                    Err(other) => {
                        return Err(BenchError::Unexpected(msgid_of(&ServerFrame::Reply(other))))
                    }
                },
                ServerFrame::Chat(_) | ServerFrame::Notice(_) => {}
                ServerFrame::GoAway(_) => return Err(BenchError::Unexpected(MsgId::GoAway as i64)),
                ServerFrame::Other { msgid } => return Err(BenchError::Unexpected(msgid)),
            }
        }
    }

    /// Waits for the next ACK without error (v2).
    pub async fn expect_ack(&mut self, limit: Duration) -> Result<protocol::Ack, BenchError> {
        self.expect(limit, |reply| match reply {
            Reply::Done(ack) => Ok(ack),
            other => Err(other),
        })
        .await
    }

    pub async fn register(
        &mut self,
        name: &str,
        password: &str,
        limit: Duration,
    ) -> Result<i64, BenchError> {
        let register = Register {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        self.send(&Request::Register(register)).await?;
        self.expect(limit, |reply| match reply {
            Reply::RegisterOk { id } => Ok(id),
            other => Err(other),
        })
        .await
    }

    /// Logs in and returns the LOGIN_ACK.
    pub async fn login(
        &mut self,
        id: i64,
        password: &str,
        limit: Duration,
    ) -> Result<Box<LoginAck>, BenchError> {
        let login = Login::with_password(id, password);
        self.send(&Request::Login(login)).await?;
        self.expect(limit, |reply| match reply {
            Reply::LoginOk(ack) => Ok(ack),
            other => Err(other),
        })
        .await
    }

    /// Logs in with a token (v2) and returns the LOGIN_ACK.
    pub async fn login_with_token(
        &mut self,
        id: i64,
        token: &str,
        limit: Duration,
    ) -> Result<Box<LoginAck>, BenchError> {
        let login = Login {
            id,
            credential: protocol::Credential::Token(token.to_owned()),
            since: None,
        };
        self.send(&Request::Login(login)).await?;
        self.expect(limit, |reply| match reply {
            Reply::LoginOk(ack) => Ok(ack),
            other => Err(other),
        })
        .await
    }

    /// Sends PING and returns the PONG: everything sent before has been
    /// handled, and any error reply to it has been seen (and returned).
    pub async fn ping(&mut self, limit: Duration) -> Result<protocol::Pong, BenchError> {
        self.send(&Request::Ping).await?;
        self.expect(limit, |reply| match reply {
            Reply::Pong(pong) => Ok(pong),
            other => Err(other),
        })
        .await
    }

    /// [`Conn::ping`] for its ordering only.
    pub async fn barrier(&mut self, limit: Duration) -> Result<(), BenchError> {
        self.ping(limit).await.map(drop)
    }

    /// LOGOUT, then a barrier so the server has released the user.
    pub async fn logout(&mut self, id: i64, limit: Duration) -> Result<(), BenchError> {
        self.send(&Request::Logout(Logout { id: Some(id) })).await?;
        self.barrier(limit).await
    }

    /// Drops the read buffer and codec state, keeping only the socket (for
    /// connections held idle in large numbers).
    pub fn into_stream(self) -> Link {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_read_from_the_text() {
        assert_eq!(parse_seq("seq 42"), Some(42));
        assert_eq!(parse_seq("seq 7 padding"), Some(7));
        assert_eq!(parse_seq("hello"), None);
        assert_eq!(parse_seq("seq x"), None);
    }

    fn sent(chat: &mut BenchChat, version: Version, seq: u64) -> Value {
        let frame = chat.seq(seq).encode(version, None);
        let end = if version == Version::V1 { 0 } else { b'\n' };
        assert_eq!(frame.last(), Some(&end));
        serde_json::from_slice(&frame[..frame.len() - 1]).unwrap()
    }

    #[test]
    fn bench_chats_in_the_shape_of_each_version() {
        let user = User {
            id: 3,
            name: "a\"b".into(),
        };
        let mut v1 = BenchChat::new(&user, ChatTarget::User(9), Version::V1);
        let v = sent(&mut v1, Version::V1, 5);
        assert_eq!(
            (v["msgid"].as_i64(), v["id"].as_i64(), v["toid"].as_i64()),
            (Some(6), Some(3), Some(9))
        );
        assert_eq!(
            (v["msg"].as_str(), v["time"].as_str()),
            (Some("seq 5"), Some(V1_TIME))
        );
        assert!(v.get("v").is_none());
        // The text is rewritten, not appended to.
        assert_eq!(sent(&mut v1, Version::V1, 6)["msg"], "seq 6");
        let mut v2 = BenchChat::new(&user, ChatTarget::Group(2), Version::V2);
        let v = sent(&mut v2, Version::V2, 7);
        assert_eq!(
            (v["msgid"].as_i64(), v["v"].as_i64(), v["groupid"].as_i64()),
            (Some(10), Some(2), Some(2))
        );
        assert!(v.get("id").is_none() && v.get("time").is_none());
    }

    #[test]
    fn frames_met_while_chats_flow() {
        let push = br#"{"msgid":10,"id":3,"name":"x","groupid":2,"msg":"seq 6","mid":1,"ts":2}"#;
        assert_eq!(chat_seq(push).unwrap(), Some(6));
        assert_eq!(
            chat_seq(br#"{"msgid":11,"errno":0,"mid":1}"#).unwrap(),
            None
        );
        let err = chat_seq(br#"{"msgid":11,"errno":4}"#).unwrap_err();
        assert_eq!(err.kind(), "msgid11_errno4");
        let err = chat_seq(br#"{"msgid":6,"id":3,"toid":2,"msg":"hello"}"#).unwrap_err();
        assert_eq!(err.kind(), "out_of_sequence");
        let err = chat_seq(br#"{"msgid":13,"server":"s","load":1}"#).unwrap_err();
        assert_eq!(err.kind(), "unexpected_msgid13");
        assert_eq!(chat_seq(b"nope").unwrap_err().kind(), "bad_frame");
    }
}
