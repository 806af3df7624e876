//! One client connection: connect (optionally from a given source address),
//! write frames as v1 (NUL-terminated) or v2 (`\n`), read frames with the
//! protocol's codec, and the small request/reply exchanges the scenarios need.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{FrameCodec, FrameError, MsgId};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Decoder;

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
    #[error("frame is not a JSON reply: {0}")]
    BadFrame(String),
    #[error("server answered errno {errno} to msgid {msgid}")]
    Errno { msgid: i64, errno: i64 },
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
            BenchError::Errno { msgid, errno } => format!("msgid{msgid}_errno{errno}"),
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
}

/// The fields of a server frame the scenarios look at; the rest is skipped.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    pub msgid: i64,
    #[serde(default)]
    pub errno: Option<i64>,
    #[serde(default, borrow)]
    pub msg: Option<Cow<'a, str>>,
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub groupid: Option<i64>,
}

impl<'a> Incoming<'a> {
    pub fn parse(frame: &'a [u8]) -> Result<Self, BenchError> {
        serde_json::from_slice(frame).map_err(|e| BenchError::BadFrame(e.to_string()))
    }

    /// The sequence number in a benchmark chat text (`seq 42 ...`).
    pub fn seq(&self) -> Option<u64> {
        parse_seq(self.msg.as_deref()?)
    }

    /// An error reply (`errno` present and not 0) as an error.
    pub fn check(&self) -> Result<(), BenchError> {
        match self.errno {
            Some(errno) if errno != 0 => Err(BenchError::Errno {
                msgid: self.msgid,
                errno,
            }),
            _ => Ok(()),
        }
    }
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

pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// Write v2 frames (`"v":2`, `\n`) instead of v1 (NUL-terminated).
    pub v2: bool,
    out: Vec<u8>,
    next_rid: u64,
}

impl Conn {
    pub async fn connect(
        server: SocketAddr,
        source: Option<IpAddr>,
        v2: bool,
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
            stream,
            buf: BytesMut::with_capacity(4096),
            codec: FrameCodec::new(1 << 24),
            v2,
            out: Vec::with_capacity(256),
            next_rid: 1,
        })
    }

    /// Writes prepared bytes (terminator included) in one write call.
    pub async fn send_raw(&mut self, frame: &[u8]) -> Result<(), BenchError> {
        self.stream.write_all(frame).await.map_err(BenchError::Io)
    }

    /// Writes a request object, adding `v` and `rid` on v2 connections and
    /// the terminator of the connection's version.
    pub async fn send(&mut self, mut request: Value) -> Result<(), BenchError> {
        if self.v2 {
            request["v"] = json!(2);
            request["rid"] = json!(self.next_rid);
            self.next_rid += 1;
        }
        self.out.clear();
        serde_json::to_writer(&mut self.out, &request).expect("JSON values serialize");
        self.out.push(if self.v2 { b'\n' } else { 0 });
        let frame = std::mem::take(&mut self.out);
        let sent = self.send_raw(&frame).await;
        self.out = frame;
        sent
    }

    /// Reads the next frame.
    pub async fn recv(&mut self) -> Result<Bytes, BenchError> {
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
            match self.stream.read_buf(&mut self.buf).await {
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

    /// Reads frames until one with `msgid`, which must not carry an error.
    /// Pushed chats and ACKs without error met on the way are skipped.
    pub async fn expect(&mut self, msgid: MsgId, limit: Duration) -> Result<Value, BenchError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.recv())
                .await
                .unwrap_or(Err(BenchError::Timeout))?;
            let reply: Value =
                serde_json::from_slice(&frame).map_err(|e| BenchError::BadFrame(e.to_string()))?;
            let got = reply["msgid"].as_i64().unwrap_or(-1);
            let errno = reply["errno"].as_i64().unwrap_or(0);
            if errno != 0 && (got == msgid.number() as i64 || got == MsgId::Ack.number() as i64) {
                return Err(BenchError::Errno { msgid: got, errno });
            }
            if got == msgid.number() as i64 {
                return Ok(reply);
            }
            if got != MsgId::OneChat.number() as i64
                && got != MsgId::GroupChat.number() as i64
                && got != MsgId::Ack.number() as i64
            {
                return Err(BenchError::Unexpected(got));
            }
        }
    }

    pub async fn register(
        &mut self,
        name: &str,
        password: &str,
        limit: Duration,
    ) -> Result<i64, BenchError> {
        self.send(json!({"msgid": 4, "name": name, "password": password}))
            .await?;
        let ack = self.expect(MsgId::RegisterAck, limit).await?;
        ack["id"]
            .as_i64()
            .ok_or_else(|| BenchError::BadFrame("REGISTER_ACK without id".into()))
    }

    /// Logs in and returns the LOGIN_ACK.
    pub async fn login(
        &mut self,
        id: i64,
        password: &str,
        limit: Duration,
    ) -> Result<Value, BenchError> {
        self.send(json!({"msgid": 1, "id": id, "password": password}))
            .await?;
        self.expect(MsgId::LoginAck, limit).await
    }

    /// Sends PING and waits for PONG: everything sent before has been
    /// handled, and any error reply to it has been seen (and returned).
    pub async fn barrier(&mut self, limit: Duration) -> Result<(), BenchError> {
        self.send(json!({"msgid": 12})).await?;
        self.expect(MsgId::Pong, limit).await.map(drop)
    }

    /// LOGOUT, then a barrier so the server has released the user.
    pub async fn logout(&mut self, id: i64, limit: Duration) -> Result<(), BenchError> {
        self.send(json!({"msgid": 3, "id": id})).await?;
        self.barrier(limit).await
    }

    /// Drops the read buffer and codec state, keeping only the socket (for
    /// connections held idle in large numbers).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

/// Builds a chat frame into `out`: `msgid` 6 (to a user) or 10 (to a group),
/// text `seq N`, in the shape the original client sends (v1, NUL-terminated)
/// or as v2 (`"v":2`, a `rid`, `\n`).
pub fn chat_frame(out: &mut Vec<u8>, v2: bool, from: &User, target: ChatTarget, seq: u64) {
    out.clear();
    let (msgid, key, to) = match target {
        ChatTarget::User(to) => (6, "toid", to),
        ChatTarget::Group(g) => (10, "groupid", g),
    };
    if v2 {
        let _ = write!(
            out,
            r#"{{"msgid":{msgid},"v":2,"rid":{seq},"{key}":{to},"msg":"seq {seq}"}}"#
        );
        out.push(b'\n');
    } else {
        let _ = write!(
            out,
            r#"{{"msgid":{msgid},"id":{},"name":{},"{key}":{to},"msg":"seq {seq}","time":"2024-01-01 00:00:00"}}"#,
            from.id,
            Value::from(from.name.as_str())
        );
        out.push(0);
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ChatTarget {
    User(i64),
    Group(i64),
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

    #[test]
    fn chat_frames_match_the_wire_shapes() {
        let user = User {
            id: 3,
            name: "a\"b".into(),
        };
        let mut out = Vec::new();
        chat_frame(&mut out, false, &user, ChatTarget::User(9), 5);
        assert_eq!(out.last(), Some(&0));
        let v: Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(v["msgid"], 6);
        assert_eq!(v["id"], 3);
        assert_eq!(v["name"], "a\"b");
        assert_eq!(v["toid"], 9);
        assert_eq!(v["msg"], "seq 5");
        assert!(v.get("v").is_none());
        chat_frame(&mut out, true, &user, ChatTarget::Group(2), 6);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            (v["msgid"].as_i64(), v["v"].as_i64(), v["groupid"].as_i64()),
            (Some(10), Some(2), Some(2))
        );
        let incoming = Incoming::parse(
            br#"{"msgid":10,"id":3,"name":"x","groupid":2,"msg":"seq 6","mid":1,"ts":2}"#,
        )
        .unwrap();
        assert_eq!(incoming.seq(), Some(6));
        assert!(incoming.check().is_ok());
        let err = Incoming::parse(br#"{"msgid":11,"errno":4}"#)
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(err.kind(), "msgid11_errno4");
        assert!(Incoming::parse(b"nope").is_err());
    }
}
