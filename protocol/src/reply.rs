//! The server-to-client direction: replies to requests and pushed chats,
//! rendered for the version of the connection they are written to, and
//! read back by clients.

use std::borrow::Cow;

use serde_json::Value;

use crate::json::{Obj, ObjectWriter};
use crate::message::{ack::Ack, ack::Failure, chat::Chat, login::LoginAck, ping::Pong};
use crate::{Errno, MsgId, Version};

/// One reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    LoginOk(Box<LoginAck>),
    RegisterOk {
        id: i64,
    },
    /// Success of any other request. v1 has no reply for these; v2 gets an
    /// ACK with the fields that apply.
    Done(Ack),
    Pong(Pong),
    /// A refused request. Rendered as LOGIN_ACK for LOGIN, REGISTER_ACK for
    /// REGISTER and ACK for everything else (including unreadable frames).
    Error(Failure),
}

impl Reply {
    pub const DONE: Reply = Reply::Done(Ack {
        mid: None,
        groupid: None,
    });

    /// An error reply with the errno's standard message.
    pub fn error(request: Option<MsgId>, errno: Errno) -> Self {
        Self::refuse(request, errno, errno.default_message())
    }

    /// An error reply with a message of its own.
    pub fn refuse(
        request: Option<MsgId>,
        errno: Errno,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reply::Error(Failure {
            request,
            errno,
            message: message.into(),
        })
    }

    /// The frame to write, with its `\n` terminator, or `None` when the
    /// connection's version sends nothing for this reply.
    pub fn render(&self, version: Version, rid: Option<&Value>) -> Option<Vec<u8>> {
        if version == Version::V1 && matches!(self, Reply::Done(_)) {
            return None;
        }
        let mut out = Vec::with_capacity(128);
        let mut object = ObjectWriter::new(&mut out);
        match self {
            Reply::LoginOk(login) => login.write(&mut object, version),
            Reply::RegisterOk { id } => {
                object
                    .field("msgid", &MsgId::RegisterAck.number())
                    .field("errno", &0)
                    .field("id", id);
            }
            Reply::Done(ack) => ack.write(&mut object),
            Reply::Pong(pong) => pong.write(&mut object),
            Reply::Error(failure) => failure.write(&mut object),
        }
        object.optional("rid", rid).finish();
        out.push(b'\n');
        Some(out)
    }
}

/// Why a frame from a server could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    #[error("frame is not valid JSON")]
    NotJson,
    #[error("frame is not a JSON object")]
    NotObject,
    #[error("frame has no integer msgid")]
    NoMsgid,
    #[error("field {0} is missing or has the wrong type")]
    BadField(&'static str),
}

/// One frame a server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    Reply(Reply),
    Chat(Chat),
    /// A msgid a client does not expect from a server (a newer server).
    Other {
        msgid: i64,
    },
}

/// A server frame with the `rid` of the request it answers, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub rid: Option<Value>,
    pub frame: ServerFrame,
}

impl Incoming {
    /// The rid as a number (clients that number their requests); a string
    /// holding a number counts too.
    pub fn rid_number(&self) -> Option<u64> {
        match self.rid.as_ref()? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Reads one frame from a server (without its terminator; a trailing `\n`
/// is tolerated). Lenient: unknown fields are ignored and v1 lists of JSON
/// strings read like v2 lists of objects. Never panics, whatever the bytes.
pub fn parse_server_frame(frame: &[u8]) -> Result<Incoming, WireError> {
    let text = std::str::from_utf8(frame).map_err(|_| WireError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|_| WireError::NotJson)?;
    let Value::Object(map) = value else {
        return Err(WireError::NotObject);
    };
    let object = Obj(&map);
    let msgid = object.int("msgid").ok_or(WireError::NoMsgid)?;
    let rid = map
        .get("rid")
        .filter(|rid| rid.is_string() || rid.is_number())
        .cloned();
    let errno = || object.int("errno").ok_or(WireError::BadField("errno"));
    let frame = match MsgId::from_number(msgid) {
        Some(reply @ (MsgId::LoginAck | MsgId::RegisterAck | MsgId::Ack)) => {
            let errno = errno()?;
            ServerFrame::Reply(match (reply, errno) {
                (_, errno) if errno != 0 => Reply::Error(Failure::read(reply, errno, &object)),
                (MsgId::LoginAck, _) => Reply::LoginOk(Box::new(LoginAck::read(&object))),
                (MsgId::RegisterAck, _) => Reply::RegisterOk {
                    id: object.int("id").ok_or(WireError::BadField("id"))?,
                },
                _ => Reply::Done(Ack::read(&object)),
            })
        }
        Some(MsgId::Pong) => ServerFrame::Reply(Reply::Pong(Pong::read(&object))),
        Some(MsgId::OneChat | MsgId::GroupChat) => ServerFrame::Chat(Chat::read(&map)?),
        _ => ServerFrame::Other { msgid },
    };
    Ok(Incoming { rid, frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for (frame, error) in [
            (&b"\xff\xfe"[..], WireError::NotUtf8),
            (b"not json", WireError::NotJson),
            (b"{\"msgid\":", WireError::NotJson),
            (b"[1,2]", WireError::NotObject),
            (b"{\"errno\":0}", WireError::NoMsgid),
            (b"{\"msgid\":\"2\"}", WireError::NoMsgid),
            (b"{\"msgid\":2}", WireError::BadField("errno")),
            (b"{\"msgid\":5,\"errno\":0}", WireError::BadField("id")),
            (
                b"{\"msgid\":6,\"id\":1,\"toid\":2}",
                WireError::BadField("msg"),
            ),
        ] {
            assert_eq!(parse_server_frame(frame), Err(error));
        }
        assert_eq!(
            parse_server_frame(b"{\"msgid\":99}\n").unwrap().frame,
            ServerFrame::Other { msgid: 99 }
        );
    }

    #[test]
    fn rid_is_kept_and_read_as_a_number() {
        let incoming =
            parse_server_frame(br#"{"msgid":11,"errno":0,"rid":"4","groupid":9}"#).unwrap();
        assert_eq!(incoming.rid_number(), Some(4));
        assert_eq!(
            incoming.frame,
            ServerFrame::Reply(Reply::Done(Ack {
                mid: None,
                groupid: Some(9)
            }))
        );
    }
}
