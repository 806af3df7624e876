//! The test client: requests typed on the `protocol` crate go out (v1 as the
//! original client writes them, or v2 with a `rid`), server frames come back
//! typed, every wait bounded. Raw access stays for tests whose point is the
//! bytes: [`Client::send_raw`], [`Client::recv_raw`], [`Client::recv_json`]
//! and [`Client::read_once`] (exactly what one `read` returns).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{
    parse_server_frame, AddFriend, AddGroup, Chat, CreateGroup, Credential, Delivered, Errno,
    FrameCodec, Incoming, Login, LoginAck, Logout, Notice, Pong, Register, Reply, Request,
    SendChat, ServerFrame, Version,
};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Decoder;

use crate::WAIT;

/// Requests as tests write them; `id` claims are left out (the server takes
/// identity from the session) unless [`claim`] adds one.
pub mod req {
    use super::*;
    use protocol::ChatTarget;

    pub fn login(id: i64, password: &str) -> Request {
        Request::Login(Login::with_password(id, password))
    }

    pub fn register(name: &str, password: &str) -> Request {
        Request::Register(Register {
            name: name.into(),
            password: password.into(),
        })
    }

    pub fn logout() -> Request {
        Request::Logout(Logout { id: None })
    }

    /// ONE_CHAT to `to`, the server filling in the time.
    pub fn chat(to: i64, msg: &str) -> Request {
        send(ChatTarget::User(to), msg, None)
    }

    /// ONE_CHAT with a client message id: re-sent, it is stored once.
    pub fn chat_with_cid(to: i64, msg: &str, cid: &str) -> Request {
        Request::Chat(SendChat {
            cid: Some(cid.into()),
            ..chat_request(ChatTarget::User(to), msg, None)
        })
    }

    /// ONE_CHAT with the sender's `time` text.
    pub fn chat_at(to: i64, msg: &str, time: &str) -> Request {
        send(ChatTarget::User(to), msg, Some(time))
    }

    pub fn group_chat(group: i64, msg: &str) -> Request {
        send(ChatTarget::Group(group), msg, None)
    }

    fn send(target: ChatTarget, msg: &str, time: Option<&str>) -> Request {
        Request::Chat(chat_request(target, msg, time))
    }

    fn chat_request(target: ChatTarget, msg: &str, time: Option<&str>) -> SendChat {
        SendChat {
            id: None,
            target,
            msg: msg.into(),
            time: time.map(Into::into),
            cid: None,
        }
    }

    pub fn add_friend(friend: i64) -> Request {
        Request::AddFriend(AddFriend { id: None, friend })
    }

    pub fn create_group(name: &str, desc: &str) -> Request {
        Request::CreateGroup(CreateGroup {
            id: None,
            name: name.into(),
            desc: desc.into(),
        })
    }

    pub fn join_group(group: i64) -> Request {
        Request::AddGroup(AddGroup { id: None, group })
    }

    pub fn ping() -> Request {
        Request::Ping
    }

    /// `request` claiming to come from user `id`, as the original client
    /// writes it (LOGIN, REGISTER and PING carry no claim).
    pub fn claim(mut request: Request, id: i64) -> Request {
        match &mut request {
            Request::Logout(Logout { id: claim })
            | Request::Chat(SendChat { id: claim, .. })
            | Request::AddFriend(AddFriend { id: claim, .. })
            | Request::CreateGroup(CreateGroup { id: claim, .. })
            | Request::AddGroup(AddGroup { id: claim, .. }) => *claim = Some(id),
            Request::Login(_)
            | Request::Register(_)
            | Request::Ping
            | Request::Delivered(_)
            | Request::History(_) => {}
        }
        request
    }
}

/// What tests ask of a reply.
pub trait ReplyExt {
    /// `Errno::Ok` for every success.
    fn errno(&self) -> Errno;
    /// The message id an ACK gave an accepted chat.
    fn mid(&self) -> Option<i64>;
    /// The group id an ACK gave a new group.
    fn groupid(&self) -> Option<i64>;
    /// The LOGIN_ACK of a successful login; panics on anything else.
    fn into_login(self) -> LoginAck;
    /// The PONG; panics on anything else.
    fn pong(&self) -> &Pong;
    /// The `errmsg` of an error reply; panics on a success.
    fn errmsg(&self) -> &str;
}

impl ReplyExt for Reply {
    fn errno(&self) -> Errno {
        match self {
            Reply::Error(failure) => failure.errno,
            _ => Errno::Ok,
        }
    }

    fn mid(&self) -> Option<i64> {
        match self {
            Reply::Done(ack) => ack.mid,
            _ => None,
        }
    }

    fn groupid(&self) -> Option<i64> {
        match self {
            Reply::Done(ack) => ack.groupid,
            _ => None,
        }
    }

    fn into_login(self) -> LoginAck {
        match self {
            Reply::LoginOk(ack) => *ack,
            other => panic!("expected a successful LOGIN_ACK, got {other:?}"),
        }
    }

    fn pong(&self) -> &Pong {
        match self {
            Reply::Pong(pong) => pong,
            other => panic!("expected a PONG, got {other:?}"),
        }
    }

    fn errmsg(&self) -> &str {
        match self {
            Reply::Error(failure) => &failure.message,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
}

/// A byte stream a [`Client`] talks over: a TCP connection, or the local
/// end of a WebSocket bridge ([`crate::ws`]).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection to a chat server (or to anything in front of one).
pub struct Client {
    stream: Box<dyn Io>,
    buf: BytesMut,
    codec: FrameCodec,
    /// Frames read while waiting for a particular reply, oldest first.
    pending: VecDeque<Bytes>,
    /// NOTICEs, set aside as they arrive: they come between any frames,
    /// and only the tests about them read them ([`Client::recv_notice`]).
    notices: VecDeque<Notice>,
    next_rid: u64,
}

/// Largest frame the client accepts: far above any server's limit.
const MAX_FRAME: usize = 16 * 1024 * 1024;

impl Client {
    /// Connects within [`WAIT`]; panics on failure.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects from `source` (another loopback address such as 127.0.0.2,
    /// for tests of per-address limits).
    pub async fn connect_from(addr: SocketAddr, source: IpAddr) -> Client {
        let connect = async {
            let socket = match source {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(addr).await
        };
        let stream = tokio::time::timeout(WAIT, connect)
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} from {source} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
        Self::over(stream)
    }

    /// Connects within [`WAIT`], for callers that count failures.
    pub async fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(Self::over(stream))
    }

    fn over(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        Self::over_io(Box::new(stream))
    }

    /// A client over any byte stream of `\n`-terminated frames.
    pub fn over_io(stream: Box<dyn Io>) -> Client {
        Client {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(MAX_FRAME),
            pending: VecDeque::new(),
            notices: VecDeque::new(),
            next_rid: 0,
        }
    }

    // ------------------------------------------------------------ sending

    /// Sends `request` as the original client does: JSON ended by NUL.
    pub async fn send_v1(&mut self, request: &Request) {
        self.send_raw(&request.encode(Version::V1, None)).await;
    }

    /// Sends `request` as v2 without a `rid`.
    pub async fn send_v2(&mut self, request: &Request) {
        self.send_raw(&request.encode(Version::V2, None)).await;
    }

    /// Sends `request` as v2 with `rid`.
    pub async fn send_with_rid(&mut self, request: &Request, rid: impl Into<Value>) {
        let rid = rid.into();
        self.send_raw(&request.encode(Version::V2, Some(&rid)))
            .await;
    }

    /// Writes `bytes` as they are; panics on failure.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
    }

    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
    }

    // ------------------------------------------------------------ receiving

    /// The next frame's bytes (terminator removed), waiting at most
    /// `within`: `TimedOut` when nothing came, `UnexpectedEof` when the
    /// connection closed first (a reset counts as a close).
    pub async fn recv_raw_within(&mut self, within: Duration) -> io::Result<Bytes> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        match tokio::time::timeout(within, self.next_frame()).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no frame within {within:?}"),
            )),
        }
    }

    /// The next frame's bytes; panics after [`WAIT`] or on close.
    pub async fn recv_raw(&mut self) -> Bytes {
        self.recv_raw_within(WAIT)
            .await
            .unwrap_or_else(|e| panic!("expected a frame: {e}"))
    }

    /// The next frame as JSON, for tests of the wire shape.
    pub async fn recv_json(&mut self) -> Value {
        let frame = self.recv_raw().await;
        serde_json::from_slice(&frame)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&frame)))
    }

    /// The next frame, typed, waiting at most `within` (errors as in
    /// [`recv_raw_within`](Client::recv_raw_within)); panics on a frame the
    /// protocol cannot read.
    pub async fn recv_within(&mut self, within: Duration) -> io::Result<Incoming> {
        self.recv_raw_within(within)
            .await
            .map(|frame| typed(&frame))
    }

    /// The next frame, typed; panics after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Incoming {
        typed(&self.recv_raw().await)
    }

    /// The next frame, which must be a pushed chat.
    pub async fn recv_chat(&mut self) -> Chat {
        match self.recv().await.frame {
            ServerFrame::Chat(chat) => chat,
            other => panic!("expected a chat, got {other:?}"),
        }
    }

    /// The next frame, which must be a reply (of a v1 request, say).
    pub async fn recv_reply(&mut self) -> Reply {
        match self.recv().await.frame {
            ServerFrame::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Exactly what one `read` of at most `max` bytes returns, waiting at
    /// most `within` (empty: the connection closed). Frames already
    /// buffered by the other receive methods must have been consumed.
    pub async fn read_once(&mut self, max: usize, within: Duration) -> io::Result<Vec<u8>> {
        assert!(
            self.pending.is_empty() && self.buf.is_empty(),
            "read_once after buffered frames: {:?} / {:?}",
            self.pending,
            self.buf
        );
        let mut out = vec![0; max];
        let n = tokio::time::timeout(within, self.stream.read(&mut out))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data within {within:?}"),
                )
            })??;
        out.truncate(n);
        Ok(out)
    }

    /// Asserts that nothing arrives for `wait` (v1 answers nothing, say).
    pub async fn expect_silence(&mut self, wait: Duration) {
        assert!(self.pending.is_empty(), "unread frames: {:?}", self.pending);
        if let Ok(frame) = tokio::time::timeout(wait, self.next_frame()).await {
            panic!("expected no frame, got {:?}", frame.map(|f| typed(&f)));
        }
    }

    /// Asserts the peer closes within `wait`; returns the frames that came
    /// before the close.
    pub async fn expect_closed(&mut self, wait: Duration) -> Vec<Incoming> {
        let mut frames: Vec<Incoming> = self.pending.drain(..).map(|f| typed(&f)).collect();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(Some(frame)) => frames.push(typed(&frame)),
                Ok(None) => return frames,
                Err(_) => panic!("connection still open after {wait:?}; got {frames:?}"),
            }
        }
    }

    /// True once the peer closed within `within` (frames before the close
    /// are dropped); false if it stayed open.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        self.pending.clear();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The next NOTICE, waiting at most [`WAIT`]; frames read meanwhile
    /// stay for the other receive methods.
    pub async fn recv_notice(&mut self) -> Notice {
        self.recv_notice_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no NOTICE within {WAIT:?}"))
    }

    /// The next NOTICE within `within`, if one comes.
    pub async fn recv_notice_within(&mut self, within: Duration) -> Option<Notice> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(notice) = self.notices.pop_front() {
                return Some(notice);
            }
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(Some(frame)) => match as_notice(&frame) {
                    Some(notice) => return Some(notice),
                    None => self.pending.push_back(frame),
                },
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Asserts no NOTICE arrives for `wait` (other frames stay).
    pub async fn expect_no_notice(&mut self, wait: Duration) {
        if let Some(notice) = self.recv_notice_within(wait).await {
            panic!("expected no NOTICE, got {notice:?}");
        }
    }

    /// The next frame from the socket, or `None` at end of stream. NOTICEs
    /// are set aside.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            let frame = self.read_frame().await?;
            match as_notice(&frame) {
                Some(notice) => self.notices.push_back(notice),
                None => return Some(frame),
            }
        }
    }

    /// The next frame from the socket, NOTICEs included.
    async fn read_frame(&mut self) -> Option<Bytes> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("unreadable frame from the server: {e}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    // ------------------------------------------------------------ requests

    /// Sends `request` as v2 with a fresh `rid` and returns its reply; pushes
    /// that arrive first are kept for the next receive. Panics after
    /// [`WAIT`], on close, or on a reply carrying another `rid`.
    pub async fn call(&mut self, request: &Request) -> Reply {
        self.try_call(request)
            .await
            .unwrap_or_else(|e| panic!("{e} while waiting for the reply to {request:?}"))
    }

    /// [`call`](Client::call) for callers that expect the connection to
    /// fail (a server killed under them): close and timeout are errors.
    pub async fn try_call(&mut self, request: &Request) -> io::Result<Reply> {
        self.next_rid += 1;
        let rid = Value::from(format!("tk-{}", self.next_rid));
        self.try_send_raw(&request.encode(Version::V2, Some(&rid)))
            .await?;
        let mut early = VecDeque::new();
        loop {
            let frame = match tokio::time::timeout(WAIT, self.next_frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "connection closed",
                    ))
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply within {WAIT:?}"),
                    ))
                }
            };
            let incoming = typed(&frame);
            if incoming.rid.as_ref() == Some(&rid) {
                self.pending.extend(early);
                return match incoming.frame {
                    ServerFrame::Reply(reply) => Ok(reply),
                    other => panic!("reply to {request:?} is not a reply: {other:?}"),
                };
            }
            assert!(
                incoming.rid.is_none(),
                "reply with a foreign rid while waiting for {rid}: {incoming:?}"
            );
            early.push_back(frame);
        }
    }

    /// [`call`](Client::call), asserting success.
    pub async fn call_ok(&mut self, request: &Request) -> Reply {
        let reply = self.call(request).await;
        assert_eq!(reply.errno(), Errno::Ok, "{request:?} refused: {reply:?}");
        reply
    }

    /// REGISTER through v2; returns the new id.
    pub async fn register(&mut self, name: &str, password: &str) -> i64 {
        match self.call(&req::register(name, password)).await {
            Reply::RegisterOk { id } => id,
            other => panic!("register {name:?}: {other:?}"),
        }
    }

    /// LOGIN through v2; returns the LOGIN_ACK.
    /// LOGIN through v2, asserting success. v2 sends the inbox backlog as
    /// pushes right after the LOGIN_ACK (its `offlinemsg` is empty); the
    /// server writes all of it before it answers the next request, so a
    /// PING after the LOGIN collects it. The backlog (pushes with `seq` up
    /// to the ACK's) is put in the returned ACK's `offline` and confirmed
    /// with DELIVERED, as a client does once it has shown them.
    pub async fn login(&mut self, id: i64, password: &str) -> LoginAck {
        let ack = match self.call(&req::login(id, password)).await {
            Reply::LoginOk(ack) => *ack,
            other => panic!("login {id}: {other:?}"),
        };
        self.collect_backlog(ack).await
    }

    /// LOGIN resuming after `since`, as [`login`](Client::login): the client
    /// holds every inbox message up to it.
    pub async fn login_since(&mut self, id: i64, password: &str, since: i64) -> LoginAck {
        let request = Request::Login(Login {
            since: Some(since),
            ..Login::with_password(id, password)
        });
        let ack = match self.call(&request).await {
            Reply::LoginOk(ack) => *ack,
            other => panic!("login {id}: {other:?}"),
        };
        self.collect_backlog(ack).await
    }

    /// LOGIN with a token (and `since`), as [`login`](Client::login).
    pub async fn login_with_token(&mut self, id: i64, token: &str, since: Option<i64>) -> LoginAck {
        let request = Request::Login(Login {
            id,
            credential: Credential::Token(token.into()),
            since,
        });
        let ack = match self.call(&request).await {
            Reply::LoginOk(ack) => *ack,
            other => panic!("token login {id}: {other:?}"),
        };
        self.collect_backlog(ack).await
    }

    async fn collect_backlog(&mut self, mut ack: LoginAck) -> LoginAck {
        let upto = ack.seq.unwrap_or(0);
        self.call(&req::ping()).await;
        let mut rest = VecDeque::new();
        for frame in std::mem::take(&mut self.pending) {
            match typed(&frame).frame {
                ServerFrame::Chat(chat) if chat.seq.is_some_and(|seq| seq <= upto) => {
                    ack.offline.push(chat)
                }
                _ => rest.push_back(frame),
            }
        }
        self.pending = rest;
        if let Some(last) = ack.offline.last().and_then(|chat| chat.seq) {
            self.delivered(last).await;
        }
        ack
    }

    /// DELIVERED up to `seq` (no reply unless refused).
    pub async fn delivered(&mut self, seq: i64) {
        self.send_v2(&Request::Delivered(Delivered { seq })).await;
    }

    /// ONE_CHAT through v2, asserting success; returns its `mid`.
    pub async fn chat(&mut self, to: i64, msg: &str) -> Option<i64> {
        self.call_ok(&req::chat(to, msg)).await.mid()
    }

    /// GROUP_CHAT through v2, asserting success; returns its `mid`.
    pub async fn group_chat(&mut self, group: i64, msg: &str) -> Option<i64> {
        self.call_ok(&req::group_chat(group, msg)).await.mid()
    }

    /// CREATE_GROUP through v2, asserting success; returns the group id.
    pub async fn create_group(&mut self, name: &str, desc: &str) -> i64 {
        let reply = self.call_ok(&req::create_group(name, desc)).await;
        reply
            .groupid()
            .expect("ACK of CREATE_GROUP names the group")
    }

    /// ADD_GROUP through v2, asserting success.
    pub async fn join_group(&mut self, group: i64) {
        self.call_ok(&req::join_group(group)).await;
    }

    /// ADD_FRIEND through v2, asserting success.
    pub async fn add_friend(&mut self, friend: i64) {
        self.call_ok(&req::add_friend(friend)).await;
    }

    /// LOGOUT through v2, asserting success.
    pub async fn logout(&mut self) {
        self.call_ok(&req::logout()).await;
    }

    /// PING through v2; returns the PONG.
    pub async fn ping(&mut self) -> Pong {
        self.call(&req::ping()).await.pong().clone()
    }

    /// PING as the balancer's health check and the original client write it
    /// (v1, no `rid`); returns the PONG. Fallible, for callers that count.
    pub async fn try_ping_v1(&mut self) -> io::Result<Pong> {
        self.try_send_raw(&Request::Ping.encode(Version::V1, None))
            .await?;
        let frame = self.recv_raw_within(WAIT).await?;
        match parse_server_frame(&frame).map(|incoming| incoming.frame) {
            Ok(ServerFrame::Reply(Reply::Pong(pong))) => Ok(pong),
            _ => Err(io::Error::other(format!(
                "not a PONG: {}",
                String::from_utf8_lossy(&frame)
            ))),
        }
    }

    /// The `server` of the PONG to a v1 PING: which backend a balancer
    /// picked for this connection.
    pub async fn served_by(&mut self) -> String {
        self.try_ping_v1()
            .await
            .unwrap_or_else(|e| panic!("PING: {e}"))
            .server
    }

    /// A new connection to `addr`, registered as `name` (password `pw`) and
    /// logged in through v2.
    pub async fn user(addr: SocketAddr, name: &str) -> (Client, i64) {
        let mut client = Client::connect(addr).await;
        let id = client.register(name, "pw").await;
        client.login(id, "pw").await;
        (client, id)
    }
}

/// A frame of arbitrary JSON ended by `terminator` (NUL as the original
/// client, `\n` as ours), for requests the typed ones cannot express: extra
/// or mistyped fields, or the original client's exact bytes.
pub fn json_frame(value: &Value, terminator: u8) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialize");
    bytes.push(terminator);
    bytes
}

/// The frame as a NOTICE, if it is one (the server writes msgid first).
fn as_notice(frame: &[u8]) -> Option<Notice> {
    if !frame.starts_with(b"{\"msgid\":17,") {
        return None;
    }
    match typed(frame).frame {
        ServerFrame::Notice(notice) => Some(notice),
        other => panic!("unreadable NOTICE: {other:?}"),
    }
}

/// Reads a frame the server sent; panics, showing it, when the protocol
/// cannot.
fn typed(frame: &[u8]) -> Incoming {
    parse_server_frame(frame).unwrap_or_else(|e| {
        panic!(
            "server sent an unreadable frame ({e}): {}",
            String::from_utf8_lossy(frame)
        )
    })
}

/// The PONG's `server` through one short connection to `addr`: which
/// backend a balancer picked.
pub async fn who_serves(addr: SocketAddr) -> io::Result<String> {
    Ok(Client::try_connect(addr).await?.try_ping_v1().await?.server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_go_where_the_original_client_puts_them() {
        let bytes = req::claim(req::chat_at(2, "hi", "t"), 1).encode(Version::V1, None);
        assert_eq!(
            bytes,
            b"{\"msgid\":6,\"id\":1,\"toid\":2,\"msg\":\"hi\",\"time\":\"t\"}\0"
        );
        assert_eq!(req::claim(req::ping(), 1), req::ping());
    }
}
