//! HISTORY (15), v2: a page of a conversation's stored messages, newest
//! first, answered by an ACK carrying `messages` and `more`.

use crate::json::{as_object, Fields, Obj, ObjectWriter};
use crate::message::chat::{Chat, ChatTarget};
use crate::MsgId;

/// Most messages in one page, and the page size when none is asked.
pub const MAX_HISTORY_LIMIT: u32 = 100;
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// `User(id)`: the 1:1 conversation with that user, both directions;
    /// `Group(id)`: the group's messages.
    pub of: ChatTarget,
    /// Only messages older than this `mid` (exclusive): the next page.
    pub before: Option<i64>,
    pub limit: u32,
}

impl History {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        let of = match (fields.opt_int("with")?, fields.opt_int("groupid")?) {
            (Some(user), None) => ChatTarget::User(user),
            (None, Some(group)) => ChatTarget::Group(group),
            _ => return Err("exactly one of with and groupid is needed".to_owned()),
        };
        let limit = match fields.opt_int("limit")? {
            None => DEFAULT_HISTORY_LIMIT,
            Some(n) if (1..=i64::from(MAX_HISTORY_LIMIT)).contains(&n) => n as u32,
            Some(_) => return Err(format!("limit must be 1 to {MAX_HISTORY_LIMIT}")),
        };
        Ok(History {
            of,
            before: fields.opt_int("before")?,
            limit,
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        match self.of {
            ChatTarget::User(user) => object.field("with", &user),
            ChatTarget::Group(group) => object.field("groupid", &group),
        };
        object
            .optional("before", self.before)
            .field("limit", &self.limit);
    }
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// Newest first, each with its `mid` and `ts`.
    pub messages: Vec<Chat>,
    /// Older messages exist: ask again with `before` = the last `mid`.
    pub more: bool,
}

impl HistoryPage {
    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .field("msgid", &MsgId::Ack.number())
            .field("errno", &0)
            .field("messages", &self.messages)
            .field("more", &self.more);
    }

    pub(crate) fn read(object: &Obj) -> Self {
        let messages = match object.0.get("messages") {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|item| as_object(item).and_then(|map| Chat::read(&map).ok()))
                .collect(),
            _ => Vec::new(),
        };
        HistoryPage {
            messages,
            more: object
                .0
                .get("more")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_frame, parse_server_frame, Reply, Request, ServerFrame, Version};

    #[test]
    fn history_requests_round_trip_and_bad_ones_are_refused() {
        let request = Request::History(History {
            of: ChatTarget::Group(3),
            before: Some(99),
            limit: 20,
        });
        let bytes = request.encode(Version::V2, None);
        assert_eq!(parse_frame(&bytes[..bytes.len() - 1]).request, Ok(request));
        let parsed = parse_frame(br#"{"msgid":15,"v":2,"with":4}"#).request;
        assert_eq!(
            parsed,
            Ok(Request::History(History {
                of: ChatTarget::User(4),
                before: None,
                limit: DEFAULT_HISTORY_LIMIT,
            }))
        );
        for bad in [
            r#"{"msgid":15,"v":2}"#,
            r#"{"msgid":15,"v":2,"with":1,"groupid":2}"#,
            r#"{"msgid":15,"v":2,"with":1,"limit":0}"#,
            r#"{"msgid":15,"v":2,"with":1,"limit":101}"#,
        ] {
            assert!(parse_frame(bad.as_bytes()).request.is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_read_back() {
        let page = HistoryPage {
            messages: vec![Chat {
                target: ChatTarget::User(2),
                from: 1,
                name: "n".into(),
                msg: "m".into(),
                time: "t".into(),
                mid: Some(5),
                ts: Some(6),
                seq: None,
            }],
            more: true,
        };
        let bytes = Reply::History(page.clone())
            .render(Version::V2, Some(&serde_json::json!(1)))
            .unwrap();
        let back = parse_server_frame(&bytes).unwrap();
        assert_eq!(back.rid_number(), Some(1));
        assert_eq!(back.frame, ServerFrame::Reply(Reply::History(page)));
    }
}
