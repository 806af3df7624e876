//! LOGIN (1) and its LOGIN_ACK (2): the user's profile, friends, groups and
//! offline messages. v1 nests each list item as JSON text and must stay
//! under the original client's 1024-byte read; v2 lists are objects.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::json::{as_object, Fields, Obj, ObjectWriter};
use crate::message::chat::Chat;
use crate::{MsgId, Version};

/// Longest session token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub id: i64,
    pub credential: Credential,
    /// v2 resume: the client holds every inbox message up to this `seq`.
    pub since: Option<i64>,
}

/// What proves the user is who they claim.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password(String),
    /// A token from an earlier v2 LOGIN_ACK: no password hashing.
    Token(String),
}

/// Never prints the password or the token.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credential = match self.credential {
            Credential::Password(_) => "password",
            Credential::Token(_) => "token",
        };
        f.debug_struct("Login")
            .field("id", &self.id)
            .field("credential", &credential)
            .field("since", &self.since)
            .finish()
    }
}

impl Login {
    /// A v1-shaped login with a password (what the original client sends).
    pub fn with_password(id: i64, password: impl Into<String>) -> Self {
        Login {
            id,
            credential: Credential::Password(password.into()),
            since: None,
        }
    }

    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        // A token, when present, is the credential; a password sent with
        // it is ignored.
        let credential = match fields.opt_string("token")? {
            Some(token) if token.is_empty() || token.len() > MAX_TOKEN_BYTES => {
                return Err(format!("token must be 1 to {MAX_TOKEN_BYTES} bytes"))
            }
            Some(token) => Credential::Token(token),
            None => Credential::Password(fields.string("password")?),
        };
        let since = match fields.opt_int("since")? {
            Some(since) if since < 0 => return Err("since must be 0 or more".to_owned()),
            since => since,
        };
        Ok(Login {
            id: fields.int("id")?,
            credential,
            since,
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object.field("id", &self.id);
        match &self.credential {
            Credential::Password(password) => object.field("password", password),
            Credential::Token(token) => object.field("token", token),
        };
        object.optional("since", self.since);
    }
}

/// Online state of a user as shown to friends and group members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

impl Presence {
    /// Anything but `online` reads as offline.
    pub(crate) fn read(text: Option<String>) -> Self {
        match text.as_deref() {
            Some("online") => Presence::Online,
            _ => Presence::Offline,
        }
    }
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

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Normal => "normal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Friend {
    pub id: i64,
    pub name: String,
    pub state: Presence,
}

impl Friend {
    pub(crate) fn read(map: &Map<String, Value>) -> Option<Self> {
        let object = Obj(map);
        Some(Friend {
            id: object.int("id")?,
            name: object.string("name").unwrap_or_default(),
            state: Presence::read(object.string("state")),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: i64,
    pub name: String,
    pub state: Presence,
    pub role: Role,
}

impl Member {
    pub(crate) fn read(map: &Map<String, Value>) -> Option<Self> {
        let object = Obj(map);
        Some(Member {
            id: object.int("id")?,
            name: object.string("name").unwrap_or_default(),
            state: Presence::read(object.string("state")),
            role: object
                .string("role")
                .and_then(|role| Role::parse(&role))
                .unwrap_or(Role::Normal),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub desc: String,
    pub users: Vec<Member>,
}

/// A group as the wire shows it: its members nested in the version's shape.
#[derive(Serialize)]
pub(crate) struct GroupView<'a> {
    id: i64,
    groupname: &'a str,
    groupdesc: &'a str,
    users: Value,
}

impl Group {
    pub(crate) fn view(&self, version: Version) -> GroupView<'_> {
        let users = match version {
            Version::V2 => serde_json::to_value(&self.users),
            Version::V1 => serde_json::to_value(
                self.users
                    .iter()
                    .map(crate::json::to_text)
                    .collect::<Vec<_>>(),
            ),
        };
        GroupView {
            id: self.id,
            groupname: &self.name,
            groupdesc: &self.desc,
            users: users.expect("plain data always serializes"),
        }
    }

    pub(crate) fn read(map: &Map<String, Value>) -> Option<Self> {
        let object = Obj(map);
        Some(Group {
            id: object.int("id")?,
            name: object.string("groupname").unwrap_or_default(),
            desc: object.string("groupdesc").unwrap_or_default(),
            users: object
                .objects("users")
                .iter()
                .filter_map(Member::read)
                .collect(),
        })
    }
}

/// A successful LOGIN_ACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginAck {
    pub id: i64,
    pub name: String,
    pub friends: Vec<Friend>,
    pub groups: Vec<Group>,
    /// Offline messages, oldest first (v1 only: v2 gets its inbox as pushes
    /// after the ACK, and an empty list here).
    pub offline: Vec<Chat>,
    /// v2: the highest inbox `seq` at login.
    pub seq: Option<i64>,
    /// v2: the token for logging in again without the password.
    pub token: Option<String>,
    /// List entries a reader could not make sense of (reading only).
    pub skipped: usize,
}

impl LoginAck {
    pub(crate) fn write(&self, object: &mut ObjectWriter, version: Version) {
        object
            .field("msgid", &MsgId::LoginAck.number())
            .field("errno", &0)
            .field("id", &self.id)
            .field("name", &self.name);
        let groups: Vec<GroupView> = self.groups.iter().map(|g| g.view(version)).collect();
        let offline: Vec<String> = match version {
            // v2 nests objects: written below without re-parsing.
            Version::V2 => Vec::new(),
            Version::V1 => self.offline.iter().map(|c| c.to_json(version)).collect(),
        };
        // v1 lists are present only when non-empty; v2 lists always.
        let all = version == Version::V2;
        if all || !self.friends.is_empty() {
            object.list("friends", &self.friends, version);
        }
        if all || !groups.is_empty() {
            // Group views already nest their users in the version's shape.
            object.list("groups", &groups, version);
        }
        match version {
            Version::V1 if !offline.is_empty() => {
                object.field("offlinemsg", &offline);
            }
            Version::V1 => {}
            Version::V2 => {
                object
                    .field("offlinemsg", &self.offline)
                    .optional("seq", self.seq)
                    .optional("token", self.token.as_deref());
            }
        }
    }

    pub(crate) fn read(object: &Obj) -> Self {
        let friends: Vec<Friend> = object
            .objects("friends")
            .iter()
            .filter_map(Friend::read)
            .collect();
        let groups: Vec<Group> = object
            .objects("groups")
            .iter()
            .filter_map(Group::read)
            .collect();
        let mut skipped = (object.count("friends") + object.count("groups"))
            .saturating_sub(friends.len() + groups.len());
        let mut offline = Vec::new();
        if let Some(Value::Array(items)) = object.0.get("offlinemsg") {
            for item in items {
                match as_object(item).as_ref().map(Chat::read) {
                    Some(Ok(chat)) => offline.push(chat),
                    _ => skipped += 1,
                }
            }
        }
        LoginAck {
            id: object.int("id").unwrap_or(0),
            name: object.string("name").unwrap_or_default(),
            friends,
            groups,
            offline,
            seq: object.int("seq"),
            token: object.string("token"),
            skipped,
        }
    }

    /// Keeps the v1 rendering of this LOGIN_ACK (terminator included) under
    /// `limit` bytes by moving offline messages out, newest first, and
    /// returns them oldest first: the server pushes them after the ACK. If
    /// friends and groups alone pass the limit every message moves out and
    /// the ACK is sent as it is (the original server did no better).
    pub fn fit_v1(&mut self, limit: usize) -> Vec<Chat> {
        let mut offline = std::mem::take(&mut self.offline);
        // `,"offlinemsg":[` + `]`, then each message as a JSON string plus a comma.
        let mut used = self.v1_len() + 16;
        let mut fits = 0;
        for chat in &offline {
            let entry = crate::json::to_text(&chat.to_json(Version::V1)).len() + 1;
            if used + entry >= limit {
                break;
            }
            used += entry;
            fits += 1;
        }
        let mut rest = offline.split_off(fits);
        self.offline = offline;
        // The estimate is exact for serde's output; this guards it anyway.
        while self.v1_len() >= limit {
            let Some(last) = self.offline.pop() else {
                break;
            };
            rest.insert(0, last);
        }
        rest
    }

    /// The length of the v1 frame, terminator included, as the server
    /// renders it (without a rid: v1 requests carry none).
    fn v1_len(&self) -> usize {
        let mut out = Vec::new();
        let mut object = ObjectWriter::new(&mut out);
        self.write(&mut object, Version::V1);
        object.finish();
        out.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::message::chat::ChatTarget;
    use crate::{parse_frame, parse_server_frame, Reply, Request, ServerFrame};

    fn sample() -> LoginAck {
        LoginAck {
            id: 13,
            name: "zhang san".into(),
            friends: vec![Friend {
                id: 15,
                name: "li si".into(),
                state: Presence::Offline,
            }],
            groups: vec![Group {
                id: 1,
                name: "g".into(),
                desc: "d".into(),
                users: vec![Member {
                    id: 13,
                    name: "zhang san".into(),
                    state: Presence::Online,
                    role: Role::Creator,
                }],
            }],
            offline: vec![],
            seq: None,
            token: None,
            skipped: 0,
        }
    }

    fn chat(n: usize) -> Chat {
        Chat {
            target: ChatTarget::User(13),
            from: 15,
            name: "li si".into(),
            msg: format!("message {n} {}", "x".repeat(40)),
            time: "2024-01-01 10:00:00".into(),
            mid: Some(n as i64),
            ts: Some(1),
            seq: None,
        }
    }

    fn render(ack: &LoginAck, version: Version) -> Vec<u8> {
        Reply::LoginOk(Box::new(ack.clone()))
            .render(version, None)
            .unwrap()
    }

    #[test]
    fn v1_login_ack_nests_json_in_strings_and_omits_empty_lists() {
        let bytes = render(&sample(), Version::V1);
        let ack: Value = serde_json::from_slice(&bytes).unwrap();
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
        let back = parse_server_frame(&bytes).unwrap();
        assert_eq!(
            back.frame,
            ServerFrame::Reply(Reply::LoginOk(Box::new(sample())))
        );
    }

    #[test]
    fn v2_login_ack_has_objects_and_every_list() {
        let mut login = sample();
        login.offline.push(chat(1));
        let bytes = Reply::LoginOk(Box::new(login.clone()))
            .render(Version::V2, Some(&json!("r1")))
            .unwrap();
        let ack: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ack["rid"], "r1");
        assert_eq!(ack["friends"][0]["state"], "offline");
        assert_eq!(ack["groups"][0]["users"][0]["name"], "zhang san");
        assert_eq!(ack["offlinemsg"][0]["id"], 15);
        assert_eq!(ack["offlinemsg"][0]["mid"], 1);
        let back = parse_server_frame(&bytes).unwrap();
        assert_eq!(
            back.frame,
            ServerFrame::Reply(Reply::LoginOk(Box::new(login)))
        );
    }

    #[test]
    fn v1_offline_messages_carry_no_mid_or_ts() {
        let mut login = sample();
        login.offline.push(chat(1));
        let ack: Value = serde_json::from_slice(&render(&login, Version::V1)).unwrap();
        let message: Value = serde_json::from_str(ack["offlinemsg"][0].as_str().unwrap()).unwrap();
        assert!(message.get("mid").is_none() && message.get("ts").is_none());
        assert_eq!(message["msg"], chat(1).msg);
    }

    #[test]
    fn fit_v1_keeps_the_ack_under_the_limit_and_the_order() {
        let mut login = sample();
        login.offline = (0..20).map(chat).collect();
        let rest = login.fit_v1(1024);
        let kept = login.offline.len();
        assert!(kept > 0 && kept < 20, "kept {kept}");
        assert!(render(&login, Version::V1).len() < 1024);
        // One more would not have fitted.
        let mut one_more = login.clone();
        one_more.offline.push(rest[0].clone());
        assert!(render(&one_more, Version::V1).len() >= 1024);
        let order: Vec<i64> = login
            .offline
            .iter()
            .chain(&rest)
            .map(|c| c.mid.unwrap())
            .collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn fit_v1_moves_everything_when_lists_alone_are_too_big() {
        let mut login = sample();
        login.friends = (0..40)
            .map(|id| Friend {
                id,
                name: "a long friend name".into(),
                state: Presence::Online,
            })
            .collect();
        login.offline = vec![chat(1)];
        assert_eq!(login.fit_v1(1024).len(), 1);
        assert!(login.offline.is_empty());
    }

    #[test]
    fn login_requests_round_trip_and_hide_the_password() {
        let login = Login::with_password(13, "p\"w");
        let bytes = Request::Login(login.clone()).encode(Version::V1, None);
        assert_eq!(bytes, b"{\"msgid\":1,\"id\":13,\"password\":\"p\\\"w\"}\0");
        let parsed = parse_frame(&bytes[..bytes.len() - 1]);
        assert_eq!(parsed.request, Ok(Request::Login(login.clone())));
        assert!(!format!("{login:?}").contains("p\\\"w"));
    }

    #[test]
    fn token_logins_resume_and_keep_the_token_secret() {
        let login = Login {
            id: 13,
            credential: Credential::Token("t0k".into()),
            since: Some(42),
        };
        let bytes = Request::Login(login.clone()).encode(Version::V2, None);
        let parsed = parse_frame(&bytes[..bytes.len() - 1]);
        assert_eq!(parsed.request, Ok(Request::Login(login.clone())));
        assert!(!format!("{login:?}").contains("t0k"));
        for bad in [
            r#"{"msgid":1,"v":2,"id":1,"token":""}"#,
            r#"{"msgid":1,"v":2,"id":1,"password":"p","since":-1}"#,
            r#"{"msgid":1,"v":2,"id":1}"#,
        ] {
            assert!(parse_frame(bad.as_bytes()).request.is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"msgid":1,"v":2,"id":1,"token":"{}"}}"#,
            "x".repeat(129)
        );
        assert!(parse_frame(long.as_bytes()).request.is_err());
    }

    #[test]
    fn v2_login_ack_carries_seq_and_token_and_v1_never_does() {
        let mut ack = sample();
        ack.seq = Some(7);
        ack.token = Some("tok".into());
        let v2 = render(&ack, Version::V2);
        let value: Value = serde_json::from_slice(&v2).unwrap();
        assert_eq!(value["seq"], 7);
        assert_eq!(value["token"], "tok");
        assert_eq!(value["offlinemsg"], json!([]));
        let ServerFrame::Reply(Reply::LoginOk(back)) = parse_server_frame(&v2).unwrap().frame
        else {
            panic!("not a login ack")
        };
        assert_eq!(*back, ack);
        let v1: Value = serde_json::from_slice(&render(&ack, Version::V1)).unwrap();
        assert!(v1.get("seq").is_none() && v1.get("token").is_none());
    }

    #[test]
    fn lenient_reading_of_odd_lists() {
        let frame = br#"{"msgid":2,"errno":0,"id":13,"name":"z",
            "friends":["{\"id\":15,\"name\":\"li si\",\"state\":\"online\"}", 42],
            "groups":7,
            "offlinemsg":["{\"msgid\":10,\"id\":15,\"name\":\"li si\",\"groupid\":1,\"msg\":\"yo\",\"time\":\"t\"}", "garbage"]}"#;
        let ServerFrame::Reply(Reply::LoginOk(ack)) = parse_server_frame(frame).unwrap().frame
        else {
            panic!("not a login ack")
        };
        assert_eq!(ack.friends.len(), 1);
        assert_eq!(ack.friends[0].state, Presence::Online);
        assert!(ack.groups.is_empty());
        assert_eq!(ack.offline[0].target, ChatTarget::Group(1));
        assert_eq!(ack.skipped, 2);
    }
}
