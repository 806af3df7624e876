//! Replies and pushed messages, rendered for the version of the connection
//! they are written to.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::{Errno, MsgId, Version};

/// Online state of a user as shown to friends and group members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

/// Role of a member in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Creator,
    Normal,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "creator" => Some(Role::Creator),
            "normal" => Some(Role::Normal),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FriendEntry {
    pub id: i64,
    pub name: String,
    pub state: Presence,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberEntry {
    pub id: i64,
    pub name: String,
    pub state: Presence,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    pub id: i64,
    pub name: String,
    pub desc: String,
    pub users: Vec<MemberEntry>,
}

/// What a successful LOGIN_ACK carries.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginSuccess {
    pub id: i64,
    pub name: String,
    pub friends: Vec<FriendEntry>,
    pub groups: Vec<GroupEntry>,
    /// Stored pushed messages, oldest first, each the JSON text of a
    /// [`ChatPush`] exactly as it would have been pushed.
    pub offline: Vec<String>,
}

/// One reply to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    LoginOk(Box<LoginSuccess>),
    RegisterOk {
        id: i64,
    },
    /// Success of any other request. v1 has no reply for these; v2 gets an
    /// ACK with the fields that apply.
    Done {
        mid: Option<i64>,
        groupid: Option<i64>,
    },
    Pong {
        server: String,
        load: u64,
    },
    /// A refused request. Rendered as LOGIN_ACK for LOGIN, REGISTER_ACK for
    /// REGISTER and ACK for everything else (including unreadable frames).
    Error {
        request: Option<MsgId>,
        errno: Errno,
        message: Cow<'static, str>,
    },
}

impl Reply {
    pub const DONE: Reply = Reply::Done {
        mid: None,
        groupid: None,
    };

    /// An error reply with the errno's standard message.
    pub fn error(request: Option<MsgId>, errno: Errno) -> Self {
        Reply::Error {
            request,
            errno,
            message: Cow::Borrowed(errno.default_message()),
        }
    }

    /// The frame to write, with its `\n` terminator, or `None` when the
    /// connection's version sends nothing for this reply.
    pub fn render(&self, version: Version, rid: Option<&Value>) -> Option<Vec<u8>> {
        let mut object = match self {
            Reply::LoginOk(login) => login_ack(login, version),
            Reply::RegisterOk { id } => {
                object(json!({"msgid": MsgId::RegisterAck.number(), "errno": 0, "id": id}))
            }
            Reply::Done { .. } if version == Version::V1 => return None,
            Reply::Done { mid, groupid } => {
                let mut ack = object(json!({"msgid": MsgId::Ack.number(), "errno": 0}));
                if let Some(mid) = mid {
                    ack.insert("mid".into(), (*mid).into());
                }
                if let Some(groupid) = groupid {
                    ack.insert("groupid".into(), (*groupid).into());
                }
                ack
            }
            Reply::Pong { server, load } => {
                object(json!({"msgid": MsgId::Pong.number(), "server": server, "load": load}))
            }
            Reply::Error {
                request,
                errno,
                message,
            } => {
                let msgid = match request {
                    Some(MsgId::Login) => MsgId::LoginAck,
                    Some(MsgId::Register) => MsgId::RegisterAck,
                    _ => MsgId::Ack,
                };
                object(json!({
                    "msgid": msgid.number(),
                    "errno": errno.number(),
                    "errmsg": message,
                }))
            }
        };
        if let Some(rid) = rid {
            object.insert("rid".into(), rid.clone());
        }
        let mut bytes = serde_json::to_vec(&object).expect("a JSON map always serializes");
        bytes.push(b'\n');
        Some(bytes)
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal"),
    }
}

/// v1 lists are arrays of strings, each a serialized object; v2 lists are
/// arrays of objects.
fn list<T: Serialize>(items: &[T], version: Version) -> Value {
    let values = items.iter().map(|item| {
        let value = serde_json::to_value(item).expect("plain data always serializes");
        match version {
            Version::V1 => Value::String(value.to_string()),
            Version::V2 => value,
        }
    });
    Value::Array(values.collect())
}

#[derive(Serialize)]
struct GroupView<'a> {
    id: i64,
    groupname: &'a str,
    groupdesc: &'a str,
    users: Value,
}

fn login_ack(login: &LoginSuccess, version: Version) -> Map<String, Value> {
    let mut ack = object(json!({
        "msgid": MsgId::LoginAck.number(),
        "errno": 0,
        "id": login.id,
        "name": login.name,
    }));
    let groups: Vec<GroupView> = login
        .groups
        .iter()
        .map(|group| GroupView {
            id: group.id,
            groupname: &group.name,
            groupdesc: &group.desc,
            users: list(&group.users, version),
        })
        .collect();
    let offline = match version {
        Version::V1 => Value::Array(
            login
                .offline
                .iter()
                .map(|text| Value::String(text.clone()))
                .collect(),
        ),
        Version::V2 => Value::Array(
            login
                .offline
                .iter()
                .map(|text| match serde_json::from_str::<Value>(text) {
                    Ok(value) => value,
                    // Stored text is always our own JSON; keep it visible if not.
                    Err(_) => Value::String(text.clone()),
                })
                .collect(),
        ),
    };
    let lists = [
        ("friends", list(&login.friends, version)),
        ("groups", list(&groups, version)),
        ("offlinemsg", offline),
    ];
    for (key, value) in lists {
        let empty = value.as_array().is_some_and(Vec::is_empty);
        if version == Version::V2 || !empty {
            ack.insert(key.into(), value);
        }
    }
    ack
}

/// Where a chat message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTarget {
    User(i64),
    Group(i64),
}

/// A chat message as pushed to its receivers. v1 and v2 receivers get the
/// same shape (v1 clients ignore `mid` and `ts`), so it is serialized once
/// and the bytes shared by every receiver and by offline storage.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPush<'a> {
    pub target: ChatTarget,
    pub from: i64,
    pub name: &'a str,
    pub msg: &'a str,
    pub time: &'a str,
    pub mid: i64,
    pub ts: i64,
}

#[derive(Serialize)]
struct PushWire<'a> {
    msgid: u8,
    id: i64,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    toid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groupid: Option<i64>,
    msg: &'a str,
    time: &'a str,
    mid: i64,
    ts: i64,
}

impl ChatPush<'_> {
    /// The JSON text of the pushed message, without a terminator.
    pub fn to_json(&self) -> String {
        let (msgid, toid, groupid) = match self.target {
            ChatTarget::User(to) => (MsgId::OneChat, Some(to), None),
            ChatTarget::Group(group) => (MsgId::GroupChat, None, Some(group)),
        };
        let wire = PushWire {
            msgid: msgid.number(),
            id: self.from,
            name: self.name,
            toid,
            groupid,
            msg: self.msg,
            time: self.time,
            mid: self.mid,
            ts: self.ts,
        };
        serde_json::to_string(&wire).expect("plain data always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: Vec<u8>) -> Value {
        assert_eq!(bytes.last(), Some(&b'\n'));
        serde_json::from_slice(&bytes).unwrap()
    }

    fn sample_login() -> LoginSuccess {
        LoginSuccess {
            id: 13,
            name: "zhang san".into(),
            friends: vec![FriendEntry {
                id: 15,
                name: "li si".into(),
                state: Presence::Offline,
            }],
            groups: vec![GroupEntry {
                id: 1,
                name: "g".into(),
                desc: "d".into(),
                users: vec![MemberEntry {
                    id: 13,
                    name: "zhang san".into(),
                    state: Presence::Online,
                    role: Role::Creator,
                }],
            }],
            offline: vec![],
        }
    }

    #[test]
    fn v1_login_ack_nests_json_in_strings_and_omits_empty_lists() {
        let ack = parse(
            Reply::LoginOk(Box::new(sample_login()))
                .render(Version::V1, None)
                .unwrap(),
        );
        assert_eq!(ack["msgid"], 2);
        assert_eq!(ack["errno"], 0);
        let friend: Value = serde_json::from_str(ack["friends"][0].as_str().unwrap()).unwrap();
        assert_eq!(
            friend,
            json!({"id": 15, "name": "li si", "state": "offline"})
        );
        let group: Value = serde_json::from_str(ack["groups"][0].as_str().unwrap()).unwrap();
        assert_eq!(group["groupname"], "g");
        let user: Value = serde_json::from_str(group["users"][0].as_str().unwrap()).unwrap();
        assert_eq!(user["role"], "creator");
        assert!(ack.get("offlinemsg").is_none());
    }

    #[test]
    fn v2_login_ack_has_objects_and_every_list() {
        let mut login = sample_login();
        login.offline.push(r#"{"msgid":6,"id":15}"#.into());
        let ack = parse(
            Reply::LoginOk(Box::new(login))
                .render(Version::V2, Some(&json!("r1")))
                .unwrap(),
        );
        assert_eq!(ack["rid"], "r1");
        assert_eq!(ack["friends"][0]["state"], "offline");
        assert_eq!(ack["groups"][0]["users"][0]["name"], "zhang san");
        assert_eq!(ack["offlinemsg"][0]["id"], 15);
    }

    #[test]
    fn done_is_silent_in_v1_and_an_ack_in_v2() {
        assert_eq!(Reply::DONE.render(Version::V1, None), None);
        let ack = parse(
            Reply::Done {
                mid: Some(5),
                groupid: None,
            }
            .render(Version::V2, Some(&json!(3)))
            .unwrap(),
        );
        assert_eq!(ack, json!({"msgid": 11, "errno": 0, "mid": 5, "rid": 3}));
    }

    #[test]
    fn errors_use_the_reply_type_of_their_request() {
        let login = parse(
            Reply::error(Some(MsgId::Login), Errno::BadCredentials)
                .render(Version::V1, None)
                .unwrap(),
        );
        assert_eq!(
            login,
            json!({"msgid": 2, "errno": 1, "errmsg": "incorrect id or password!"})
        );
        let other = parse(
            Reply::error(None, Errno::BadRequest)
                .render(Version::V1, None)
                .unwrap(),
        );
        assert_eq!(other["msgid"], 11);
        assert_eq!(other["errno"], 6);
    }

    #[test]
    fn pushed_chat_round_trips_any_text() {
        let text = "引号\" \\ \u{0} 😀 '); DROP TABLE user;--";
        let push = ChatPush {
            target: ChatTarget::Group(4),
            from: 1,
            name: "n",
            msg: text,
            time: "t",
            mid: 9,
            ts: 10,
        };
        let value: Value = serde_json::from_str(&push.to_json()).unwrap();
        assert_eq!(value["msg"], text);
        assert_eq!(value["groupid"], 4);
        assert!(value.get("toid").is_none());
    }
}
