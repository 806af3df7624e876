//! The server-to-client direction: replies to requests and pushed chats,
//! rendered for the version of the connection they are written to, and
//! read back by clients.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::json::{Obj, ObjectWriter};
use crate::message::{
    ack::Ack, ack::Failure, chat::Chat, chat::ChatTarget, goaway::GoAway, history::HistoryPage,
    login::Group, login::LoginAck, notice::Notice, ping::Pong,
};
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
    /// ADD_GROUP's success, v2: an ACK with the `group` joined, shaped as
    /// in LOGIN_ACK's `groups`.
    Joined(Box<Group>),
    /// A page of HISTORY, an ACK with `messages` and `more`.
    History(HistoryPage),
    Pong(Pong),
    /// A refused request. Rendered as LOGIN_ACK for LOGIN, REGISTER_ACK for
    /// REGISTER and ACK for everything else (including unreadable frames).
    Error(Failure),
    /// Success that is answered by nothing at all (DELIVERED).
    Silent,
}

impl Reply {
    pub const DONE: Reply = Reply::Done(Ack {
        mid: None,
        ts: None,
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
        match (self, version) {
            (Reply::Silent, _)
            | (Reply::Done(_), Version::V1)
            | (Reply::Joined(_), Version::V1) => return None,
            _ => {}
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
            Reply::Joined(group) => {
                object
                    .field("msgid", &MsgId::Ack.number())
                    .field("errno", &0)
                    .field("group", &group.view(Version::V2));
            }
            Reply::History(page) => page.write(&mut object),
            Reply::Pong(pong) => pong.write(&mut object),
            Reply::Error(failure) => failure.write(&mut object),
            Reply::Silent => unreachable!("returned above"),
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
    /// The server is closing the session; reconnect and resume.
    GoAway(GoAway),
    /// A live update of the friend or group lists.
    Notice(Notice),
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
    if let Some(incoming) = read_common(text) {
        return Ok(incoming);
    }
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
                _ if map.contains_key("messages") => Reply::History(HistoryPage::read(&object)),
                _ if map.contains_key("group") => match map.get("group").and_then(Value::as_object)
                {
                    Some(group) => Reply::Joined(Box::new(
                        Group::read(group).ok_or(WireError::BadField("group"))?,
                    )),
                    None => return Err(WireError::BadField("group")),
                },
                _ => Reply::Done(Ack::read(&object)),
            })
        }
        Some(MsgId::Pong) => ServerFrame::Reply(Reply::Pong(Pong::read(&object))),
        Some(MsgId::OneChat | MsgId::GroupChat) => ServerFrame::Chat(Chat::read(&map)?),
        Some(MsgId::GoAway) => ServerFrame::GoAway(GoAway::read(&object)),
        Some(MsgId::Notice) => match Notice::read(&map) {
            Some(notice) => ServerFrame::Notice(notice),
            None => ServerFrame::Other { msgid },
        },
        _ => ServerFrame::Other { msgid },
    };
    Ok(Incoming { rid, frame })
}

/// The fields of the frames clients read most: pushed chats and successful
/// ACKs and REGISTER_ACKs.
#[derive(Deserialize)]
struct CommonFields<'a> {
    msgid: i64,
    errno: Option<i64>,
    #[serde(borrow)]
    rid: Option<&'a RawValue>,
    id: Option<i64>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    toid: Option<i64>,
    groupid: Option<i64>,
    #[serde(borrow)]
    msg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    mid: Option<i64>,
    ts: Option<i64>,
    seq: Option<i64>,
    /// Present in a HISTORY page, which the general reader handles.
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    /// Present in ADD_GROUP's ACK, which the general reader handles.
    #[serde(borrow)]
    group: Option<&'a RawValue>,
}

/// Reads a common frame in one pass, without building a map of it (a load
/// generator reads one per delivery). `None` sends everything else, and
/// anything odd (a mistyped or repeated field), to the general reader,
/// which gives the same result or the precise error.
fn read_common(text: &str) -> Option<Incoming> {
    let fields: CommonFields = serde_json::from_str(text).ok()?;
    let frame = match (MsgId::from_number(fields.msgid)?, fields.errno) {
        (msgid @ (MsgId::OneChat | MsgId::GroupChat), _) => ServerFrame::Chat(Chat {
            target: match msgid {
                MsgId::OneChat => ChatTarget::User(fields.toid?),
                _ => ChatTarget::Group(fields.groupid?),
            },
            from: fields.id?,
            name: fields.name.map(Cow::into_owned).unwrap_or_default(),
            msg: fields.msg?.into_owned(),
            time: fields.time.map(Cow::into_owned).unwrap_or_default(),
            mid: fields.mid,
            ts: fields.ts,
            seq: fields.seq,
        }),
        (MsgId::Ack, Some(0)) if fields.messages.is_none() && fields.group.is_none() => {
            ServerFrame::Reply(Reply::Done(Ack {
                mid: fields.mid,
                ts: fields.ts,
                groupid: fields.groupid,
            }))
        }
        (MsgId::RegisterAck, Some(0)) => ServerFrame::Reply(Reply::RegisterOk { id: fields.id? }),
        _ => return None,
    };
    let rid = match fields
        .rid
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        Some(Ok(rid @ (Value::String(_) | Value::Number(_)))) => Some(rid),
        _ => None,
    };
    Some(Incoming { rid, frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass reader and the general one agree on every frame the
    /// first accepts.
    #[test]
    fn common_frames_read_the_same_both_ways() {
        let frames: [&[u8]; 8] = [
            br#"{"msgid":6,"id":1,"name":"n","toid":2,"msg":"a\"b \u4e2d","time":"t","mid":3,"ts":4}"#,
            br#"{"msgid":10,"id":1,"groupid":5,"msg":"m","rid":7}"#,
            br#"{"msgid":10,"id":1,"groupid":5,"msg":"m","name":null,"extra":[1,{"a":2}]}"#,
            br#"{"msgid":11,"errno":0,"mid":9,"rid":"r"}"#,
            br#"{"msgid":11,"errno":0,"groupid":9,"rid":[1]}"#,
            br#"{"msgid":5,"errno":0,"id":22}"#,
            br#"{"msgid":6,"id":1,"toid":2,"toid":3,"msg":"m"}"#,
            br#"{"msgid":6,"id":1.5,"toid":2,"msg":"m"}"#,
        ];
        for (i, frame) in frames.iter().enumerate() {
            let text = std::str::from_utf8(frame).unwrap();
            match read_common(text) {
                Some(fast) => assert_eq!(Ok(fast), parse_server_frame(frame), "{text}"),
                None => assert!(i >= 6, "{text} should take the one-pass reader"),
            }
        }
        // Mistyped or repeated fields fall back to the general reader.
        assert!(read_common(r#"{"msgid":6,"id":1.5,"toid":2,"msg":"m"}"#).is_none());
        assert!(read_common(r#"{"msgid":6,"id":1,"toid":2,"toid":3,"msg":"m"}"#).is_none());
        assert_eq!(
            parse_server_frame(br#"{"msgid":6,"id":1,"toid":2,"toid":3,"msg":"m"}"#)
                .unwrap()
                .frame,
            ServerFrame::Chat(Chat {
                target: ChatTarget::User(3),
                from: 1,
                name: String::new(),
                msg: "m".into(),
                time: String::new(),
                mid: None,
                ts: None,
                seq: None,
            })
        );
    }

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
                groupid: Some(9),
                ..Ack::default()
            }))
        );
    }
}
