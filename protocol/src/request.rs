//! Requests, the client-to-server direction: one enum over the message
//! modules, parsing a frame into it (server side) and encoding it (client
//! side).

use serde_json::Value;

use crate::json::{Fields, ObjectWriter, RawFields};
use crate::message::{
    add_friend::AddFriend, add_group::AddGroup, chat::SendChat, create_group::CreateGroup,
    delivered::Delivered, history::History, login::Login, logout::Logout, register::Register,
};
use crate::{Errno, MsgId, Version};

/// A request as a client sends it. `id` fields are optional claims that the
/// server checks against the session; identity never comes from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Login(Login),
    Logout(Logout),
    Register(Register),
    /// ONE_CHAT or GROUP_CHAT, told apart by the target.
    Chat(SendChat),
    AddFriend(AddFriend),
    CreateGroup(CreateGroup),
    AddGroup(AddGroup),
    Ping,
    Delivered(Delivered),
    History(History),
}

impl Request {
    pub fn msgid(&self) -> MsgId {
        match self {
            Request::Login(_) => MsgId::Login,
            Request::Logout(_) => MsgId::Logout,
            Request::Register(_) => MsgId::Register,
            Request::Chat(chat) => chat.target.msgid(),
            Request::AddFriend(_) => MsgId::AddFriend,
            Request::CreateGroup(_) => MsgId::CreateGroup,
            Request::AddGroup(_) => MsgId::AddGroup,
            Request::Ping => MsgId::Ping,
            Request::Delivered(_) => MsgId::Delivered,
            Request::History(_) => MsgId::History,
        }
    }

    /// The `id` the client claimed to be, when the request carries one.
    pub fn claimed_id(&self) -> Option<i64> {
        match self {
            Request::Logout(Logout { id })
            | Request::Chat(SendChat { id, .. })
            | Request::AddFriend(AddFriend { id, .. })
            | Request::CreateGroup(CreateGroup { id, .. })
            | Request::AddGroup(AddGroup { id, .. }) => *id,
            Request::Login(_)
            | Request::Register(_)
            | Request::Ping
            | Request::Delivered(_)
            | Request::History(_) => None,
        }
    }

    /// The frame a client writes, terminator included: v1 as the original
    /// client writes it (ended by NUL), v2 with `"v":2`, the `rid` if any,
    /// ended by `\n`.
    pub fn encode(&self, version: Version, rid: Option<&Value>) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.encode_into(&mut out, version, rid);
        out
    }

    /// [`Request::encode`] into a buffer the caller reuses (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>, version: Version, rid: Option<&Value>) {
        out.clear();
        let mut object = ObjectWriter::new(out);
        object.field("msgid", &self.msgid().number());
        if version == Version::V2 {
            object.field("v", &2).optional("rid", rid);
        }
        match self {
            Request::Login(login) => login.write(&mut object),
            Request::Logout(logout) => logout.write(&mut object),
            Request::Register(register) => register.write(&mut object),
            Request::Chat(chat) => chat.write(&mut object),
            Request::AddFriend(add) => add.write(&mut object),
            Request::CreateGroup(create) => create.write(&mut object),
            Request::AddGroup(add) => add.write(&mut object),
            Request::Ping => {}
            Request::Delivered(delivered) => delivered.write(&mut object),
            Request::History(history) => history.write(&mut object),
        }
        object.finish();
        out.push(match version {
            Version::V1 => 0,
            Version::V2 => b'\n',
        });
    }
}

/// A frame that is not a well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// The request kind when it could be read, which decides the reply type
    /// (LOGIN_ACK, REGISTER_ACK or ACK).
    pub msgid: Option<MsgId>,
    pub reason: String,
}

impl BadRequest {
    /// Always errno 6; a method so callers do not hard-code it.
    pub fn errno(&self) -> Errno {
        Errno::BadRequest
    }
}

/// Everything read from one frame. `rid` and `version` are kept even when the
/// request itself is bad, so that the error reply can carry them.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The request id, echoed verbatim in the reply (a JSON string or number).
    pub rid: Option<Value>,
    /// `Some(V2)` when the frame asked for v2 with a valid `"v": 2`.
    pub version: Option<Version>,
    pub request: Result<Request, BadRequest>,
}

impl Parsed {
    fn bad(reason: &str) -> Parsed {
        Parsed {
            rid: None,
            version: None,
            request: Err(BadRequest {
                msgid: None,
                reason: reason.to_owned(),
            }),
        }
    }
}

/// Parses one frame (without its terminator). Never panics, whatever the bytes.
pub fn parse_frame(frame: &[u8]) -> Parsed {
    let Ok(text) = std::str::from_utf8(frame) else {
        return Parsed::bad("frame is not valid UTF-8");
    };
    // Serde would also read a struct from an array: only objects take the fast path.
    if text.trim_start().starts_with('{') {
        if let Ok(fields) = serde_json::from_str::<RawFields>(text) {
            return parse_fields(&Fields(fields));
        }
    }
    // The slow path, for frames the fast one refuses: tell apart what is
    // not an object, and accept objects that repeat a key (the last wins).
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => {
            let canonical = object.to_string();
            match serde_json::from_str::<RawFields>(&canonical) {
                Ok(fields) => parse_fields(&Fields(fields)),
                Err(_) => Parsed::bad("frame is not valid JSON"),
            }
        }
        Ok(_) => Parsed::bad("frame is not a JSON object"),
        Err(_) => Parsed::bad("frame is not valid JSON"),
    }
}

fn parse_fields(fields: &Fields) -> Parsed {
    let rid = match fields.0.rid {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(rid @ (Value::String(_) | Value::Number(_))) => Some(rid),
            _ => return Parsed::bad("rid must be a string or a number"),
        },
    };
    let msgid = match fields.0.msgid {
        None => Err("missing msgid".to_owned()),
        Some(raw) => match serde_json::from_str::<i64>(raw.get()) {
            Err(_) => Err("msgid must be an integer".to_owned()),
            Ok(n) => MsgId::from_number(n).ok_or_else(|| format!("unknown msgid {n}")),
        },
    };
    let version = fields.version();
    let request = match (msgid, &version) {
        (Err(reason), _) => Err(BadRequest {
            msgid: None,
            reason,
        }),
        (Ok(msgid), Err(reason)) => Err(BadRequest {
            msgid: Some(msgid),
            reason: reason.clone(),
        }),
        (Ok(msgid), Ok(_)) => request(msgid, fields).map_err(|reason| BadRequest {
            msgid: Some(msgid),
            reason,
        }),
    };
    Parsed {
        rid,
        version: version.ok().flatten(),
        request,
    }
}

/// The dispatch: each message module reads its own fields.
fn request(msgid: MsgId, fields: &Fields) -> Result<Request, String> {
    Ok(match msgid {
        MsgId::Login => Request::Login(Login::parse(fields)?),
        MsgId::Logout => Request::Logout(Logout::parse(fields)?),
        MsgId::Register => Request::Register(Register::parse(fields)?),
        MsgId::OneChat | MsgId::GroupChat => Request::Chat(SendChat::parse(msgid, fields)?),
        MsgId::AddFriend => Request::AddFriend(AddFriend::parse(fields)?),
        MsgId::CreateGroup => Request::CreateGroup(CreateGroup::parse(fields)?),
        MsgId::AddGroup => Request::AddGroup(AddGroup::parse(fields)?),
        MsgId::Ping => Request::Ping,
        MsgId::Delivered => Request::Delivered(Delivered::parse(fields)?),
        MsgId::History => Request::History(History::parse(fields)?),
        MsgId::LoginAck
        | MsgId::RegisterAck
        | MsgId::Ack
        | MsgId::Pong
        | MsgId::GoAway
        | MsgId::Notice => {
            return Err(format!(
                "msgid {} is sent by servers, not clients",
                msgid.number()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(frame: &[u8]) -> BadRequest {
        parse_frame(frame).request.unwrap_err()
    }

    #[test]
    fn parses_the_original_clients_login() {
        let parsed = parse_frame(br#"{"msgid":1,"id":13,"password":"123456"}"#);
        assert_eq!(parsed.version, None);
        assert_eq!(
            parsed.request.unwrap(),
            Request::Login(Login::with_password(13, "123456"))
        );
    }

    #[test]
    fn v2_fields_and_rid_are_kept() {
        let parsed = parse_frame(br#"{"msgid":12,"v":2,"rid":"abc"}"#);
        assert_eq!(parsed.version, Some(Version::V2));
        assert_eq!(parsed.rid, Some(Value::String("abc".into())));
        assert_eq!(parsed.request.unwrap(), Request::Ping);
    }

    #[test]
    fn bad_frames_are_classified() {
        assert_eq!(err(b"\xff\xfe").msgid, None);
        assert_eq!(err(b"not json").msgid, None);
        assert_eq!(err(b"[1,2]").msgid, None);
        assert_eq!(err(br#"{"id":1}"#).reason, "missing msgid");
        assert_eq!(err(br#"{"msgid":"1"}"#).reason, "msgid must be an integer");
        assert_eq!(err(br#"{"msgid":99}"#).reason, "unknown msgid 99");
        let login = err(br#"{"msgid":1,"id":"13","password":"x"}"#);
        assert_eq!(login.msgid, Some(MsgId::Login));
        assert_eq!(err(br#"{"msgid":2}"#).msgid, Some(MsgId::LoginAck));
        assert_eq!(err(br#"{"msgid":12,"v":3}"#).msgid, Some(MsgId::Ping));
    }

    #[test]
    fn rid_survives_a_bad_request() {
        let parsed = parse_frame(br#"{"msgid":6,"rid":7,"toid":"x","msg":"m"}"#);
        assert_eq!(parsed.rid, Some(Value::from(7)));
        assert!(parsed.request.is_err());
    }

    #[test]
    fn null_is_mistyped_not_missing_and_repeated_keys_keep_the_last() {
        assert_eq!(
            err(br#"{"msgid":6,"toid":2,"msg":"m","time":null}"#).reason,
            "time must be a string"
        );
        assert_eq!(err(br#"{"msgid":null}"#).reason, "msgid must be an integer");
        let parsed = parse_frame(br#"{"msgid":6,"toid":1,"toid":2,"msg":"m"}"#);
        assert!(matches!(
            parsed.request,
            Ok(Request::Chat(SendChat {
                target: crate::ChatTarget::User(2),
                ..
            }))
        ));
    }

    #[test]
    fn escapes_unicode_and_unknown_fields() {
        let parsed = parse_frame(
            br#"{"extra":{"deep":[1,{"x":null}]},"msgid":6,"toid":2,"msg":"a\"b\\c\u0000\u4e2d\ud83d\ude00"}"#,
        );
        match parsed.request.unwrap() {
            Request::Chat(chat) => assert_eq!(chat.msg, "a\"b\\c\u{0}中😀"),
            other => panic!("{other:?}"),
        }
    }

    /// Mutations of valid frames (bytes flipped, cut, repeated) never panic.
    #[test]
    fn never_panics_on_mangled_frames() {
        let seeds: [&[u8]; 3] = [
            br#"{"msgid":6,"v":2,"rid":"r","id":1,"toid":2,"msg":"m\u0000","time":"t"}"#,
            br#"{"msgid":1,"id":13,"password":"p"}"#,
            br#"[{"msgid":8,"groupname":"g"},null,1.5e400]"#,
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut frame = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % frame.len().max(1);
                match next() % 3 {
                    0 => frame[at] = next() as u8,
                    1 => frame.truncate(at),
                    _ => {
                        let alphabet = b"{}[]\",:\\0 ";
                        frame.insert(at, alphabet[(next() as usize) % alphabet.len()]);
                    }
                }
                if frame.is_empty() {
                    break;
                }
            }
            let _ = parse_frame(&frame);
            let _ = crate::parse_server_frame(&frame);
        }
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Login(Login::with_password(1, "p")),
            Request::Logout(Logout { id: Some(1) }),
            Request::Register(Register {
                name: "n".into(),
                password: "p".into(),
            }),
            Request::AddFriend(AddFriend {
                id: Some(1),
                friend: 2,
            }),
            Request::CreateGroup(CreateGroup {
                id: None,
                name: "g".into(),
                desc: "d:e".into(),
            }),
            Request::AddGroup(AddGroup { id: None, group: 3 }),
            Request::Ping,
        ];
        for request in requests {
            for version in [Version::V1, Version::V2] {
                let bytes = request.encode(version, Some(&Value::from(5)));
                let parsed = parse_frame(&bytes[..bytes.len() - 1]);
                assert_eq!(parsed.request.as_ref(), Ok(&request));
                let v2 = version == Version::V2;
                assert_eq!(parsed.version, v2.then_some(Version::V2));
                assert_eq!(parsed.rid, v2.then(|| Value::from(5)));
            }
        }
    }

    #[test]
    fn groupdesc_defaults_to_empty() {
        let parsed = parse_frame(br#"{"msgid":8,"groupname":"g"}"#);
        assert_eq!(
            parsed.request.unwrap(),
            Request::CreateGroup(CreateGroup {
                id: None,
                name: "g".into(),
                desc: String::new()
            })
        );
    }
}
