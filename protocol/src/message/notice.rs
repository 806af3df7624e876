//! NOTICE (17), v2 only: what keeps a client's friend and group lists live
//! without logging in again. Best effort, not in the inbox, no `seq`; the
//! LOGIN_ACK stays the source of truth.

use serde_json::{Map, Value};

use super::login::{Friend, Member, Presence};
use crate::json::{Obj, ObjectWriter};
use crate::MsgId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `id` logged in or out (anywhere in the cluster): to friends and
    /// fellow group members.
    Presence { id: i64, state: Presence },
    /// A new friendship: to both sides, each told about the other.
    Friend(Friend),
    /// `member` joined group `groupid`: to the group's other members.
    /// `state` is sent too (the joiner is online), beyond PROTOCOL.md's
    /// `id`, `name`, `role`.
    Member { groupid: i64, member: Member },
}

impl Notice {
    /// The v2 JSON text, without terminator.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(96);
        let mut object = ObjectWriter::new(&mut out);
        object.field("msgid", &MsgId::Notice.number());
        match self {
            Notice::Presence { id, state } => {
                object
                    .field("kind", "presence")
                    .field("id", id)
                    .field("state", state);
            }
            Notice::Friend(friend) => {
                object
                    .field("kind", "friend")
                    .field("id", &friend.id)
                    .field("name", &friend.name)
                    .field("state", &friend.state);
            }
            Notice::Member { groupid, member } => {
                object
                    .field("kind", "member")
                    .field("groupid", groupid)
                    .field("id", &member.id)
                    .field("name", &member.name)
                    .field("role", &member.role)
                    .field("state", &member.state);
            }
        }
        object.finish();
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// A notice a client reads; `None` for a kind it does not know (a
    /// newer server) or a malformed one.
    pub(crate) fn read(map: &Map<String, Value>) -> Option<Self> {
        let object = Obj(map);
        match object.string("kind")?.as_str() {
            "presence" => Some(Notice::Presence {
                id: object.int("id")?,
                state: Presence::read(object.string("state")),
            }),
            "friend" => Friend::read(map).map(Notice::Friend),
            "member" => Some(Notice::Member {
                groupid: object.int("groupid")?,
                member: Member::read(map)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{parse_server_frame, Role, ServerFrame};

    #[test]
    fn notices_render_as_the_protocol_says_and_read_back() {
        let cases = [
            (
                Notice::Presence {
                    id: 3,
                    state: Presence::Online,
                },
                json!({"msgid": 17, "kind": "presence", "id": 3, "state": "online"}),
            ),
            (
                Notice::Friend(Friend {
                    id: 4,
                    name: "li si".into(),
                    state: Presence::Offline,
                }),
                json!({"msgid": 17, "kind": "friend", "id": 4, "name": "li si", "state": "offline"}),
            ),
            (
                Notice::Member {
                    groupid: 9,
                    member: Member {
                        id: 5,
                        name: "w".into(),
                        state: Presence::Online,
                        role: Role::Normal,
                    },
                },
                json!({"msgid": 17, "kind": "member", "groupid": 9, "id": 5, "name": "w",
                       "role": "normal", "state": "online"}),
            ),
        ];
        for (notice, expected) in cases {
            let text = notice.to_json();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
            assert_eq!(
                parse_server_frame(text.as_bytes()).unwrap().frame,
                ServerFrame::Notice(notice)
            );
        }
        assert_eq!(
            parse_server_frame(br#"{"msgid":17,"kind":"weather"}"#)
                .unwrap()
                .frame,
            ServerFrame::Other { msgid: 17 }
        );
    }
}
