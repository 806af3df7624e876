//! Client-side wire types: the v2 requests this client sends and the server
//! frames it reads (LOGIN_ACK, REGISTER_ACK, pushed chats, ACK, PONG).
//!
//! The protocol crate owns the framing and the server-side types; the client
//! needs the other direction, so it is written here. Parsing is lenient
//! (unknown fields ignored, v1 lists of JSON strings accepted as well as v2
//! lists of objects) and never panics, whatever the bytes.

use protocol::MsgId;
use serde_json::{json, Map, Value};

/// The protocol level this client speaks.
pub const PROTOCOL_VERSION: u8 = 2;

/// A request as this client sends it. Every request carries `"v":2` and a
/// numeric `rid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Login {
        id: i64,
        password: String,
    },
    Register {
        name: String,
        password: String,
    },
    Logout {
        id: i64,
    },
    OneChat {
        id: i64,
        name: String,
        to: i64,
        msg: String,
    },
    AddFriend {
        id: i64,
        friend: i64,
    },
    CreateGroup {
        id: i64,
        name: String,
        desc: String,
    },
    AddGroup {
        id: i64,
        group: i64,
    },
    GroupChat {
        id: i64,
        name: String,
        group: i64,
        msg: String,
    },
    Ping,
}

impl Outgoing {
    pub fn msgid(&self) -> MsgId {
        match self {
            Outgoing::Login { .. } => MsgId::Login,
            Outgoing::Register { .. } => MsgId::Register,
            Outgoing::Logout { .. } => MsgId::Logout,
            Outgoing::OneChat { .. } => MsgId::OneChat,
            Outgoing::AddFriend { .. } => MsgId::AddFriend,
            Outgoing::CreateGroup { .. } => MsgId::CreateGroup,
            Outgoing::AddGroup { .. } => MsgId::AddGroup,
            Outgoing::GroupChat { .. } => MsgId::GroupChat,
            Outgoing::Ping => MsgId::Ping,
        }
    }

    /// The JSON text of the request, without a frame terminator.
    pub fn to_json(&self, rid: u64) -> String {
        let body = match self {
            Outgoing::Login { id, password } => json!({"id": id, "password": password}),
            Outgoing::Register { name, password } => json!({"name": name, "password": password}),
            Outgoing::Logout { id } => json!({ "id": id }),
            Outgoing::OneChat { id, name, to, msg } => {
                json!({"id": id, "name": name, "toid": to, "msg": msg})
            }
            Outgoing::AddFriend { id, friend } => json!({"id": id, "friendid": friend}),
            Outgoing::CreateGroup { id, name, desc } => {
                json!({"id": id, "groupname": name, "groupdesc": desc})
            }
            Outgoing::AddGroup { id, group } => json!({"id": id, "groupid": group}),
            Outgoing::GroupChat {
                id,
                name,
                group,
                msg,
            } => json!({"id": id, "name": name, "groupid": group, "msg": msg}),
            Outgoing::Ping => json!({}),
        };
        let mut object = match body {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        object.insert("msgid".into(), self.msgid().number().into());
        object.insert("v".into(), PROTOCOL_VERSION.into());
        object.insert("rid".into(), rid.into());
        Value::Object(object).to_string()
    }
}

/// Why a server frame could not be read.
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

/// Where a pushed chat message was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTo {
    User(i64),
    Group(i64),
}

/// A pushed ONE_CHAT (6) or GROUP_CHAT (10), live or from `offlinemsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub to: ChatTo,
    pub from: i64,
    pub name: String,
    pub msg: String,
    /// The sender's local time string, as sent (or filled in by the server).
    pub time: Option<String>,
    pub mid: Option<i64>,
    /// Server receive time, milliseconds since the Unix epoch.
    pub ts: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Friend {
    pub id: i64,
    pub name: String,
    /// `online`, `offline`, or empty when unknown.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub desc: String,
    pub users: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAck {
    pub rid: Option<u64>,
    pub errno: i64,
    pub errmsg: Option<String>,
    pub id: Option<i64>,
    pub name: Option<String>,
    pub friends: Vec<Friend>,
    pub groups: Vec<Group>,
    /// Offline messages, oldest first; an entry that could not be read is
    /// kept as its JSON text so it can still be shown.
    pub offline: Vec<Result<Chat, String>>,
    /// List entries that were not objects with an integer `id`.
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub rid: Option<u64>,
    pub errno: i64,
    pub errmsg: Option<String>,
    pub mid: Option<i64>,
    pub groupid: Option<i64>,
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    LoginAck(Box<LoginAck>),
    RegisterAck {
        rid: Option<u64>,
        errno: i64,
        errmsg: Option<String>,
        id: Option<i64>,
    },
    Chat(Chat),
    Ack(Ack),
    Pong {
        rid: Option<u64>,
        server: Option<String>,
        load: Option<u64>,
    },
    /// A msgid this client does not expect from a server.
    Other {
        msgid: i64,
    },
}

/// Reads one frame (without its terminator).
pub fn parse_server_frame(frame: &[u8]) -> Result<ServerFrame, WireError> {
    let text = std::str::from_utf8(frame).map_err(|_| WireError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|_| WireError::NotJson)?;
    let Value::Object(object) = value else {
        return Err(WireError::NotObject);
    };
    let o = Obj(&object);
    let msgid = o.int("msgid").ok_or(WireError::NoMsgid)?;
    let rid = o.rid();
    Ok(match MsgId::from_number(msgid) {
        Some(MsgId::LoginAck) => ServerFrame::LoginAck(Box::new(login_ack(&o, rid))),
        Some(MsgId::RegisterAck) => ServerFrame::RegisterAck {
            rid,
            errno: o.errno(),
            errmsg: o.string("errmsg"),
            id: o.int("id"),
        },
        Some(MsgId::OneChat | MsgId::GroupChat) => ServerFrame::Chat(chat(&object)?),
        Some(MsgId::Ack) => ServerFrame::Ack(Ack {
            rid,
            errno: o.errno(),
            errmsg: o.string("errmsg"),
            mid: o.int("mid"),
            groupid: o.int("groupid"),
        }),
        Some(MsgId::Pong) => ServerFrame::Pong {
            rid,
            server: o.string("server"),
            load: o.0.get("load").and_then(Value::as_u64),
        },
        _ => ServerFrame::Other { msgid },
    })
}

/// Reads a pushed chat message from its JSON object.
pub fn chat(object: &Map<String, Value>) -> Result<Chat, WireError> {
    let o = Obj(object);
    let to = match o.int("msgid") {
        Some(6) => ChatTo::User(o.int("toid").unwrap_or(0)),
        Some(10) => ChatTo::Group(o.int("groupid").ok_or(WireError::BadField("groupid"))?),
        _ => return Err(WireError::NoMsgid),
    };
    Ok(Chat {
        to,
        from: o.int("id").ok_or(WireError::BadField("id"))?,
        name: o.string("name").unwrap_or_default(),
        msg: o.string("msg").ok_or(WireError::BadField("msg"))?,
        time: o.string("time"),
        mid: o.int("mid"),
        ts: o.int("ts"),
    })
}

fn login_ack(o: &Obj<'_>, rid: Option<u64>) -> LoginAck {
    let friends = objects(o.0.get("friends"))
        .into_iter()
        .filter_map(|f| {
            let f = Obj(&f);
            Some(Friend {
                id: f.int("id")?,
                name: f.string("name").unwrap_or_default(),
                state: f.string("state").unwrap_or_default(),
            })
        })
        .collect::<Vec<_>>();
    let groups = objects(o.0.get("groups"))
        .into_iter()
        .filter_map(|g| {
            let g = Obj(&g);
            let users = objects(g.0.get("users"))
                .into_iter()
                .filter_map(|u| {
                    let u = Obj(&u);
                    Some(Member {
                        id: u.int("id")?,
                        name: u.string("name").unwrap_or_default(),
                        state: u.string("state").unwrap_or_default(),
                        role: u.string("role").unwrap_or_default(),
                    })
                })
                .collect();
            Some(Group {
                id: g.int("id")?,
                name: g.string("groupname").unwrap_or_default(),
                desc: g.string("groupdesc").unwrap_or_default(),
                users,
            })
        })
        .collect::<Vec<_>>();
    let listed = count(o.0.get("friends")) + count(o.0.get("groups"));
    let skipped = listed.saturating_sub(friends.len() + groups.len());
    let offline = match o.0.get("offlinemsg") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match as_object(item).as_ref().map(chat) {
                Some(Ok(chat)) => Ok(chat),
                _ => Err(match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                }),
            })
            .collect(),
        _ => Vec::new(),
    };
    LoginAck {
        rid,
        errno: o.errno(),
        errmsg: o.string("errmsg"),
        id: o.int("id"),
        name: o.string("name"),
        friends,
        groups,
        offline,
        skipped,
    }
}

fn count(list: Option<&Value>) -> usize {
    list.and_then(Value::as_array).map_or(0, Vec::len)
}

/// The objects of a list that may hold objects (v2) or JSON strings (v1).
fn objects(list: Option<&Value>) -> Vec<Map<String, Value>> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items.iter().filter_map(as_object).collect()
}

/// An object, or a string holding the JSON text of one (v1 nesting).
fn as_object(item: &Value) -> Option<Map<String, Value>> {
    match item {
        Value::Object(map) => Some(map.clone()),
        Value::String(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        },
        _ => None,
    }
}

struct Obj<'a>(&'a Map<String, Value>);

impl Obj<'_> {
    fn int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(Value::as_str).map(str::to_owned)
    }

    /// A missing or unreadable errno is taken as a failure of unknown kind
    /// (-1), never as success.
    fn errno(&self) -> i64 {
        self.int("errno").unwrap_or(-1)
    }

    /// Our rids are numbers; a string rid that holds a number is accepted too.
    fn rid(&self) -> Option<u64> {
        match self.0.get("rid")? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn requests_carry_version_and_rid() {
        let login = value(
            &Outgoing::Login {
                id: 13,
                password: "p\"w".into(),
            }
            .to_json(7),
        );
        assert_eq!(
            login,
            json!({"msgid": 1, "v": 2, "rid": 7, "id": 13, "password": "p\"w"})
        );
        let chat = value(
            &Outgoing::GroupChat {
                id: 1,
                name: "n".into(),
                group: 4,
                msg: "a:b 你好 😀".into(),
            }
            .to_json(8),
        );
        assert_eq!(chat["msgid"], 10);
        assert_eq!(chat["groupid"], 4);
        assert_eq!(chat["msg"], "a:b 你好 😀");
        assert_eq!(
            value(&Outgoing::Ping.to_json(1)),
            json!({"msgid": 12, "v": 2, "rid": 1})
        );
        let parsed = protocol::parse_frame(
            Outgoing::CreateGroup {
                id: 1,
                name: "g".into(),
                desc: "d:e".into(),
            }
            .to_json(3)
            .as_bytes(),
        );
        assert_eq!(parsed.version, Some(protocol::Version::V2));
        assert_eq!(
            parsed.request.unwrap(),
            protocol::Request::CreateGroup {
                id: Some(1),
                name: "g".into(),
                desc: "d:e".into()
            }
        );
    }

    #[test]
    fn v2_login_ack_with_objects() {
        let frame = br#"{"msgid":2,"errno":0,"rid":1,"id":13,"name":"zhang san",
            "friends":[{"id":15,"name":"li si","state":"offline"}],
            "groups":[{"id":1,"groupname":"g","groupdesc":"d","users":[{"id":13,"name":"zhang san","state":"online","role":"creator"}]}],
            "offlinemsg":[{"msgid":6,"id":15,"name":"li si","toid":13,"msg":"hi","time":"2024-01-01 10:00:00","mid":5,"ts":1}]}"#;
        let ServerFrame::LoginAck(ack) = parse_server_frame(frame).unwrap() else {
            panic!("not a login ack")
        };
        assert_eq!(ack.rid, Some(1));
        assert_eq!(ack.errno, 0);
        assert_eq!(ack.friends[0].name, "li si");
        assert_eq!(ack.groups[0].users[0].role, "creator");
        let chat = ack.offline[0].as_ref().unwrap();
        assert_eq!(chat.to, ChatTo::User(13));
        assert_eq!(chat.msg, "hi");
        assert_eq!(ack.skipped, 0);
    }

    #[test]
    fn v1_login_ack_with_json_strings() {
        let frame = br#"{"msgid":2,"errno":0,"id":13,"name":"z",
            "friends":["{\"id\":15,\"name\":\"li si\",\"state\":\"online\"}", 42],
            "groups":["{\"id\":1,\"groupname\":\"g\",\"groupdesc\":\"d\",\"users\":[\"{\\\"id\\\":13,\\\"name\\\":\\\"z\\\",\\\"state\\\":\\\"online\\\",\\\"role\\\":\\\"creator\\\"}\"]}"],
            "offlinemsg":["{\"msgid\":10,\"id\":15,\"name\":\"li si\",\"groupid\":1,\"msg\":\"yo\",\"time\":\"t\"}", "garbage"]}"#;
        let ServerFrame::LoginAck(ack) = parse_server_frame(frame).unwrap() else {
            panic!("not a login ack")
        };
        assert_eq!(ack.friends.len(), 1);
        assert_eq!(ack.friends[0].state, "online");
        assert_eq!(ack.groups[0].users[0].name, "z");
        assert_eq!(ack.offline[0].as_ref().unwrap().to, ChatTo::Group(1));
        assert_eq!(ack.offline[1], Err("garbage".to_owned()));
        assert_eq!(ack.skipped, 1);
    }

    #[test]
    fn acks_pushes_and_pong() {
        assert_eq!(
            parse_server_frame(br#"{"msgid":11,"errno":0,"rid":"4","groupid":9}"#).unwrap(),
            ServerFrame::Ack(Ack {
                rid: Some(4),
                errno: 0,
                errmsg: None,
                mid: None,
                groupid: Some(9)
            })
        );
        let ServerFrame::Chat(chat) = parse_server_frame(
            r#"{"msgid":10,"id":2,"name":"王","groupid":3,"msg":"引号\" 😀","time":"t","mid":1,"ts":2}"#
                .as_bytes(),
        )
        .unwrap() else {
            panic!("not a chat")
        };
        assert_eq!(chat.to, ChatTo::Group(3));
        assert_eq!(chat.msg, "引号\" 😀");
        assert!(matches!(
            parse_server_frame(br#"{"msgid":13,"server":"s1","load":3}"#).unwrap(),
            ServerFrame::Pong { load: Some(3), .. }
        ));
        assert_eq!(
            parse_server_frame(br#"{"msgid":99}"#).unwrap(),
            ServerFrame::Other { msgid: 99 }
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
            (b"{\"msgid\":6,\"id\":1}", WireError::BadField("msg")),
            (
                b"{\"msgid\":10,\"id\":1,\"msg\":\"x\"}",
                WireError::BadField("groupid"),
            ),
        ] {
            assert_eq!(parse_server_frame(frame), Err(error));
        }
        // A LOGIN_ACK with lists of the wrong type still reads, with nothing in them.
        let ServerFrame::LoginAck(ack) =
            parse_server_frame(br#"{"msgid":2,"friends":7,"groups":null}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(ack.errno, -1);
        assert!(ack.friends.is_empty() && ack.groups.is_empty());
    }
}
