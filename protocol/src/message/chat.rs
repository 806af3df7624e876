//! ONE_CHAT (6) and GROUP_CHAT (10): the same message to a user or to a
//! group. A client sends a [`SendChat`]; receivers get it pushed as a
//! [`Chat`] (v1: exactly the original fields; v2: plus `mid`, `ts` and the
//! receiver's inbox `seq`); v2 senders get an ACK with the `mid` and `ts`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::json::{Fields, Obj, ObjectWriter};
use crate::{MsgId, Version, WireError};

/// Where a chat message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTarget {
    User(i64),
    Group(i64),
}

impl ChatTarget {
    pub fn msgid(self) -> MsgId {
        match self {
            ChatTarget::User(_) => MsgId::OneChat,
            ChatTarget::Group(_) => MsgId::GroupChat,
        }
    }

    fn write(self, object: &mut ObjectWriter) {
        match self {
            ChatTarget::User(to) => object.field("toid", &to),
            ChatTarget::Group(group) => object.field("groupid", &group),
        };
    }
}

/// A chat message as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendChat {
    pub id: Option<i64>,
    pub target: ChatTarget,
    pub msg: String,
    /// The sender's local time as text; the server fills in its own when absent.
    pub time: Option<String>,
    /// Client message id: a re-sent `cid` is not stored twice.
    pub cid: Option<String>,
}

/// Longest client message id, in bytes.
pub const MAX_CID_BYTES: usize = 64;

impl SendChat {
    pub(crate) fn parse(msgid: MsgId, fields: &Fields) -> Result<Self, String> {
        let target = match msgid {
            MsgId::GroupChat => ChatTarget::Group(fields.int("groupid")?),
            _ => ChatTarget::User(fields.int("toid")?),
        };
        Ok(SendChat {
            id: fields.opt_int("id")?,
            target,
            msg: fields.string("msg")?,
            time: fields.opt_string("time")?,
            cid: match fields.opt_string("cid")? {
                Some(cid) if cid.is_empty() || cid.len() > MAX_CID_BYTES => {
                    return Err(format!("cid must be 1 to {MAX_CID_BYTES} bytes"))
                }
                cid => cid,
            },
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object.optional("id", self.id);
        self.target.write(object);
        object
            .field("msg", &self.msg)
            .optional("time", self.time.as_deref())
            .optional("cid", self.cid.as_deref());
    }
}

/// A chat message as pushed to its receivers (live, in `offlinemsg`, or
/// from storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub target: ChatTarget,
    /// The sender.
    pub from: i64,
    /// The sender's registered name.
    pub name: String,
    pub msg: String,
    /// The sender's local time as sent, or the server's when it sent none.
    pub time: String,
    /// Server message id; v2 only (v1 receivers never see it).
    pub mid: Option<i64>,
    /// Server receive time in ms since the Unix epoch; v2 only.
    pub ts: Option<i64>,
    /// The receiver's inbox sequence number; v2 pushes only (history
    /// entries and stored bodies have none).
    pub seq: Option<i64>,
}

impl Chat {
    /// The JSON text of the push for a receiver speaking `version`, without
    /// a terminator. v1 gets exactly the original client's fields: every byte
    /// counts against its 1024-byte reads.
    pub fn to_json(&self, version: Version) -> String {
        crate::json::to_text(&self.wire(version))
    }

    fn wire(&self, version: Version) -> ChatWire<'_> {
        let (toid, groupid) = match self.target {
            ChatTarget::User(to) => (Some(to), None),
            ChatTarget::Group(group) => (None, Some(group)),
        };
        let v2 = version == Version::V2;
        ChatWire {
            msgid: self.target.msgid().number(),
            id: self.from,
            name: &self.name,
            toid,
            groupid,
            msg: &self.msg,
            time: &self.time,
            mid: self.mid.filter(|_| v2),
            ts: self.ts.filter(|_| v2),
            seq: self.seq.filter(|_| v2),
        }
    }

    /// Reads a pushed chat from its JSON text (as stored for offline delivery).
    pub fn from_json(text: &str) -> Result<Self, WireError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Self::read(&map),
            Ok(_) => Err(WireError::NotObject),
            Err(_) => Err(WireError::NotJson),
        }
    }

    pub(crate) fn read(map: &Map<String, Value>) -> Result<Self, WireError> {
        let object = Obj(map);
        let target = match object.int("msgid") {
            Some(6) => ChatTarget::User(object.int("toid").ok_or(WireError::BadField("toid"))?),
            Some(10) => ChatTarget::Group(
                object
                    .int("groupid")
                    .ok_or(WireError::BadField("groupid"))?,
            ),
            _ => return Err(WireError::NoMsgid),
        };
        Ok(Chat {
            target,
            from: object.int("id").ok_or(WireError::BadField("id"))?,
            name: object.string("name").unwrap_or_default(),
            msg: object.string("msg").ok_or(WireError::BadField("msg"))?,
            time: object.string("time").unwrap_or_default(),
            mid: object.int("mid"),
            ts: object.int("ts"),
            seq: object.int("seq"),
        })
    }
}

/// Serializes in the v2 shape (as in a v2 `offlinemsg` list).
impl Serialize for Chat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire(Version::V2).serialize(serializer)
    }
}

#[derive(Serialize)]
struct ChatWire<'a> {
    msgid: u8,
    id: i64,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    toid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groupid: Option<i64>,
    msg: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::{parse_frame, parse_server_frame, Request, ServerFrame};

    fn sample(text: &str) -> Chat {
        Chat {
            target: ChatTarget::Group(4),
            from: 1,
            name: "王".into(),
            msg: text.into(),
            time: "t".into(),
            mid: Some(9),
            ts: Some(10),
            seq: Some(11),
        }
    }

    #[test]
    fn v1_push_has_exactly_the_original_fields() {
        let value: Value = serde_json::from_str(&sample("hi").to_json(Version::V1)).unwrap();
        assert_eq!(
            value,
            json!({"msgid": 10, "id": 1, "name": "王", "groupid": 4, "msg": "hi", "time": "t"})
        );
        let mut one = sample("hi");
        one.target = ChatTarget::User(2);
        let value: Value = serde_json::from_str(&one.to_json(Version::V1)).unwrap();
        assert_eq!(
            value,
            json!({"msgid": 6, "id": 1, "name": "王", "toid": 2, "msg": "hi", "time": "t"})
        );
    }

    #[test]
    fn v2_push_round_trips_any_text() {
        let text = "引号\" \\ \u{0} 😀 '); DROP TABLE user;--";
        let chat = sample(text);
        let json = chat.to_json(Version::V2);
        assert_eq!(Chat::from_json(&json), Ok(chat.clone()));
        let frame = parse_server_frame(json.as_bytes()).unwrap();
        assert_eq!(frame.frame, ServerFrame::Chat(chat));
    }

    #[test]
    fn requests_round_trip_in_both_versions() {
        let send = SendChat {
            id: Some(3),
            target: ChatTarget::User(9),
            msg: "a:b 你好 😀 \"q\"".into(),
            time: Some("2024-01-01 00:00:00".into()),
            cid: Some("c-1".into()),
        };
        let v1 = Request::Chat(send.clone()).encode(Version::V1, None);
        assert_eq!(v1.last(), Some(&0));
        let parsed = parse_frame(&v1[..v1.len() - 1]);
        assert_eq!(parsed.version, None);
        assert_eq!(parsed.request, Ok(Request::Chat(send.clone())));
        let group = SendChat {
            target: ChatTarget::Group(2),
            time: None,
            ..send
        };
        let v2 = Request::Chat(group.clone()).encode(Version::V2, Some(&json!(8)));
        assert_eq!(v2.last(), Some(&b'\n'));
        let parsed = parse_frame(&v2[..v2.len() - 1]);
        assert_eq!(parsed.version, Some(Version::V2));
        assert_eq!(parsed.rid, Some(json!(8)));
        assert_eq!(parsed.request, Ok(Request::Chat(group)));
    }

    #[test]
    fn cid_must_be_1_to_64_bytes() {
        let frame = |cid: &str| {
            format!(r#"{{"msgid":6,"v":2,"toid":2,"msg":"m","cid":"{cid}"}}"#).into_bytes()
        };
        assert!(parse_frame(&frame("")).request.is_err());
        assert!(parse_frame(&frame(&"c".repeat(65))).request.is_err());
        let Ok(Request::Chat(chat)) = parse_frame(&frame(&"c".repeat(64))).request else {
            panic!("a 64-byte cid is valid")
        };
        assert_eq!(chat.cid.as_deref(), Some("c".repeat(64).as_str()));
    }

    #[test]
    fn unreadable_pushes_are_errors() {
        assert_eq!(Chat::from_json("[1]"), Err(WireError::NotObject));
        assert_eq!(Chat::from_json("{"), Err(WireError::NotJson));
        assert_eq!(
            Chat::from_json(r#"{"msgid":6,"id":1}"#),
            Err(WireError::BadField("toid"))
        );
        assert_eq!(
            Chat::from_json(r#"{"msgid":10,"id":1,"msg":"x"}"#),
            Err(WireError::BadField("groupid"))
        );
    }
}
