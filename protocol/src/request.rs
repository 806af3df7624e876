//! Parsing one frame into a typed request, or into the error reply it earns.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::{Errno, MsgId, Version};

/// A request as a client sends it. `id` fields are optional claims that the
/// server checks against the session; identity never comes from them.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Login {
        id: i64,
        password: String,
    },
    Logout {
        id: Option<i64>,
    },
    Register {
        name: String,
        password: String,
    },
    OneChat {
        id: Option<i64>,
        to: i64,
        msg: String,
        time: Option<String>,
    },
    AddFriend {
        id: Option<i64>,
        friend: i64,
    },
    CreateGroup {
        id: Option<i64>,
        name: String,
        desc: String,
    },
    AddGroup {
        id: Option<i64>,
        group: i64,
    },
    GroupChat {
        id: Option<i64>,
        group: i64,
        msg: String,
        time: Option<String>,
    },
    Ping,
}

impl Request {
    pub fn msgid(&self) -> MsgId {
        match self {
            Request::Login { .. } => MsgId::Login,
            Request::Logout { .. } => MsgId::Logout,
            Request::Register { .. } => MsgId::Register,
            Request::OneChat { .. } => MsgId::OneChat,
            Request::AddFriend { .. } => MsgId::AddFriend,
            Request::CreateGroup { .. } => MsgId::CreateGroup,
            Request::AddGroup { .. } => MsgId::AddGroup,
            Request::GroupChat { .. } => MsgId::GroupChat,
            Request::Ping => MsgId::Ping,
        }
    }

    /// The `id` the client claimed to be, when the request carries one.
    pub fn claimed_id(&self) -> Option<i64> {
        match self {
            Request::Logout { id }
            | Request::OneChat { id, .. }
            | Request::AddFriend { id, .. }
            | Request::CreateGroup { id, .. }
            | Request::AddGroup { id, .. }
            | Request::GroupChat { id, .. } => *id,
            Request::Login { .. } | Request::Register { .. } | Request::Ping => None,
        }
    }
}

/// A frame that is not a well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The request kind when it could be read, which decides the reply type
    /// (LOGIN_ACK, REGISTER_ACK or ACK).
    pub msgid: Option<MsgId>,
    pub reason: String,
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

/// Every field any request may carry, borrowed from the frame undecoded:
/// a request is decoded without building a map of the whole object, and a
/// field is only decoded (and type-checked) when the request needs it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawFields<'a> {
    #[serde(borrow, deserialize_with = "present")]
    msgid: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    v: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    rid: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    password: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    toid: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    msg: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    time: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    friendid: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    groupname: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    groupdesc: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    groupid: Option<&'a RawValue>,
}

/// A field that is present is `Some`, even when it is `null` (which is
/// then refused as mistyped rather than taken for a missing field).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
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
            Ok(n) => match MsgId::from_number(n) {
                Some(msgid) => Ok(msgid),
                None => Err(format!("unknown msgid {n}")),
            },
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
        (Ok(msgid), Ok(_)) => fields.request(msgid).map_err(|reason| BadRequest {
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

/// Typed access to the fields of a request.
struct Fields<'a>(RawFields<'a>);

impl Fields<'_> {
    fn raw(&self, key: &str) -> Option<&RawValue> {
        let fields = &self.0;
        match key {
            "id" => fields.id,
            "password" => fields.password,
            "name" => fields.name,
            "toid" => fields.toid,
            "msg" => fields.msg,
            "time" => fields.time,
            "friendid" => fields.friendid,
            "groupname" => fields.groupname,
            "groupdesc" => fields.groupdesc,
            "groupid" => fields.groupid,
            _ => None,
        }
    }

    fn version(&self) -> Result<Option<Version>, String> {
        match self.0.v.map(|raw| serde_json::from_str::<i64>(raw.get())) {
            None => Ok(None),
            Some(Ok(1)) => Ok(Some(Version::V1)),
            Some(Ok(2)) => Ok(Some(Version::V2)),
            Some(_) => Err("v must be the integer 1 or 2".to_owned()),
        }
    }

    fn int(&self, key: &str) -> Result<i64, String> {
        self.opt_int(key)?
            .ok_or_else(|| format!("missing field {key}"))
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<i64>(raw.get())
                .map(Some)
                .map_err(|_| format!("{key} must be an integer")),
        }
    }

    fn string(&self, key: &str) -> Result<String, String> {
        self.opt_string(key)?
            .ok_or_else(|| format!("missing field {key}"))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| format!("{key} must be a string")),
        }
    }

    fn request(&self, msgid: MsgId) -> Result<Request, String> {
        Ok(match msgid {
            MsgId::Login => Request::Login {
                id: self.int("id")?,
                password: self.string("password")?,
            },
            MsgId::Logout => Request::Logout {
                id: self.opt_int("id")?,
            },
            MsgId::Register => Request::Register {
                name: self.string("name")?,
                password: self.string("password")?,
            },
            MsgId::OneChat => Request::OneChat {
                id: self.opt_int("id")?,
                to: self.int("toid")?,
                msg: self.string("msg")?,
                time: self.opt_string("time")?,
            },
            MsgId::AddFriend => Request::AddFriend {
                id: self.opt_int("id")?,
                friend: self.int("friendid")?,
            },
            MsgId::CreateGroup => Request::CreateGroup {
                id: self.opt_int("id")?,
                name: self.string("groupname")?,
                desc: self.opt_string("groupdesc")?.unwrap_or_default(),
            },
            MsgId::AddGroup => Request::AddGroup {
                id: self.opt_int("id")?,
                group: self.int("groupid")?,
            },
            MsgId::GroupChat => Request::GroupChat {
                id: self.opt_int("id")?,
                group: self.int("groupid")?,
                msg: self.string("msg")?,
                time: self.opt_string("time")?,
            },
            MsgId::Ping => Request::Ping,
            MsgId::LoginAck | MsgId::RegisterAck | MsgId::Ack | MsgId::Pong => {
                return Err(format!(
                    "msgid {} is sent by servers, not clients",
                    msgid.number()
                ))
            }
        })
    }
}

/// The errno for a bad request is always 6; kept as a function so callers
/// do not hard-code it.
impl BadRequest {
    pub fn errno(&self) -> Errno {
        Errno::BadRequest
    }
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
            Request::Login {
                id: 13,
                password: "123456".into()
            }
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
        assert!(matches!(parsed.request, Ok(Request::OneChat { to: 2, .. })));
    }

    #[test]
    fn escapes_unicode_and_unknown_fields() {
        let parsed = parse_frame(
            br#"{"extra":{"deep":[1,{"x":null}]},"msgid":6,"toid":2,"msg":"a\"b\\c\u0000\u4e2d\ud83d\ude00"}"#,
        );
        match parsed.request.unwrap() {
            Request::OneChat { msg, .. } => assert_eq!(msg, "a\"b\\c\u{0}中😀"),
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
        }
    }

    #[test]
    fn groupdesc_defaults_to_empty() {
        let parsed = parse_frame(br#"{"msgid":8,"groupname":"g"}"#);
        assert_eq!(
            parsed.request.unwrap(),
            Request::CreateGroup {
                id: None,
                name: "g".into(),
                desc: String::new()
            }
        );
    }
}
