//! ACK (11), the v2 reply to requests that have no reply of their own, and
//! error replies of every request (LOGIN_ACK / REGISTER_ACK / ACK with an
//! errno and errmsg).

use std::borrow::Cow;

use crate::json::{Obj, ObjectWriter};
use crate::{Errno, MsgId};

/// The fields of a successful ACK that apply to the request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    /// The message id of an accepted ONE_CHAT or GROUP_CHAT.
    pub mid: Option<i64>,
    /// When the server stored that message (ms since the Unix epoch).
    pub ts: Option<i64>,
    /// The id of a group just created.
    pub groupid: Option<i64>,
}

impl Ack {
    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .field("msgid", &MsgId::Ack.number())
            .field("errno", &0)
            .optional("mid", self.mid)
            .optional("ts", self.ts)
            .optional("groupid", self.groupid);
    }

    pub(crate) fn read(object: &Obj) -> Self {
        Ack {
            mid: object.int("mid"),
            ts: object.int("ts"),
            groupid: object.int("groupid"),
        }
    }
}

/// A refused request, whatever the request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The request refused, when it could be read; it decides the reply
    /// type: LOGIN_ACK for LOGIN, REGISTER_ACK for REGISTER, ACK otherwise.
    pub request: Option<MsgId>,
    pub errno: Errno,
    pub message: Cow<'static, str>,
}

impl Failure {
    /// The reply type that carries an error for `request`.
    pub fn reply_type(request: Option<MsgId>) -> MsgId {
        match request {
            Some(MsgId::Login) => MsgId::LoginAck,
            Some(MsgId::Register) => MsgId::RegisterAck,
            _ => MsgId::Ack,
        }
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .field("msgid", &Self::reply_type(self.request).number())
            .field("errno", &self.errno.number())
            .field("errmsg", &*self.message);
    }

    /// Reads the error of a reply of type `reply`. An errno this client
    /// does not know (a newer server) reads as a server error, keeping the
    /// server's message.
    pub(crate) fn read(reply: MsgId, errno: i64, object: &Obj) -> Self {
        let errno = Errno::from_number(errno).unwrap_or(Errno::ServerError);
        let request = match reply {
            MsgId::LoginAck => Some(MsgId::Login),
            MsgId::RegisterAck => Some(MsgId::Register),
            _ => None,
        };
        let message = object
            .string("errmsg")
            .filter(|text| !text.trim().is_empty())
            .map_or(Cow::Borrowed(errno.default_message()), Cow::Owned);
        Failure {
            request,
            errno,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::{parse_server_frame, Reply, ServerFrame, Version};

    fn value(bytes: &[u8]) -> Value {
        assert_eq!(bytes.last(), Some(&b'\n'));
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn done_is_silent_in_v1_and_an_ack_in_v2() {
        assert_eq!(Reply::DONE.render(Version::V1, None), None);
        let done = Reply::Done(Ack {
            mid: Some(5),
            ..Ack::default()
        });
        let bytes = done.render(Version::V2, Some(&json!(3))).unwrap();
        assert_eq!(
            value(&bytes),
            json!({"msgid": 11, "errno": 0, "mid": 5, "rid": 3})
        );
        let back = parse_server_frame(&bytes).unwrap();
        assert_eq!(back.rid, Some(json!(3)));
        assert_eq!(back.frame, ServerFrame::Reply(done));
    }

    #[test]
    fn errors_use_the_reply_type_of_their_request() {
        let login = Reply::error(Some(MsgId::Login), Errno::BadCredentials);
        let bytes = login.render(Version::V1, None).unwrap();
        assert_eq!(
            value(&bytes),
            json!({"msgid": 2, "errno": 1, "errmsg": "incorrect id or password!"})
        );
        assert_eq!(
            parse_server_frame(&bytes).unwrap().frame,
            ServerFrame::Reply(login)
        );
        let other = Reply::error(None, Errno::BadRequest);
        let bytes = other.render(Version::V1, None).unwrap();
        assert_eq!(value(&bytes)["msgid"], 11);
        assert_eq!(value(&bytes)["errno"], 6);
        let register = Reply::error(Some(MsgId::Register), Errno::BadCredentials);
        let bytes = register.render(Version::V2, None).unwrap();
        assert_eq!(value(&bytes)["msgid"], 5);
        assert_eq!(
            parse_server_frame(&bytes).unwrap().frame,
            ServerFrame::Reply(register)
        );
    }

    #[test]
    fn unknown_errno_reads_as_server_error_with_its_message() {
        let frame = parse_server_frame(br#"{"msgid":11,"errno":77,"errmsg":"new kind"}"#).unwrap();
        let ServerFrame::Reply(Reply::Error(failure)) = frame.frame else {
            panic!("{frame:?}")
        };
        assert_eq!(failure.errno, Errno::ServerError);
        assert_eq!(failure.message, "new kind");
    }
}
