//! PING (12) and PONG (13): a heartbeat allowed before login, answered in
//! both versions; the balancer's chat health check uses it too.

use crate::json::{Obj, ObjectWriter};
use crate::MsgId;

/// What a PONG tells: which server answered, how many users it holds, and
/// whether it should get new clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    pub server: String,
    pub load: u64,
    /// False while the server cannot serve (database or Redis away,
    /// shutting down): written as `"ready":false`, and left out when true,
    /// so a ready server's PONG is the same bytes as before the field
    /// existed. The balancer's chat health check counts a not-ready PONG
    /// as a failure.
    pub ready: bool,
}

impl Pong {
    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .field("msgid", &MsgId::Pong.number())
            .field("server", &self.server)
            .field("load", &self.load);
        if !self.ready {
            object.field("ready", &false);
        }
    }

    pub(crate) fn read(object: &Obj) -> Self {
        Pong {
            server: object.string("server").unwrap_or_default(),
            load: object.0.get("load").and_then(|v| v.as_u64()).unwrap_or(0),
            ready: object
                .0
                .get("ready")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_frame, parse_server_frame, Reply, Request, ServerFrame, Version};

    #[test]
    fn ping_and_pong_round_trip() {
        for version in [Version::V1, Version::V2] {
            let bytes = Request::Ping.encode(version, None);
            let parsed = parse_frame(&bytes[..bytes.len() - 1]);
            assert_eq!(parsed.request, Ok(Request::Ping));
        }
        let pong = Reply::Pong(super::Pong {
            server: "s1".into(),
            load: 3,
            ready: true,
        });
        let bytes = pong.render(Version::V1, None).unwrap();
        assert_eq!(bytes, b"{\"msgid\":13,\"server\":\"s1\",\"load\":3}\n");
        let back = parse_server_frame(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(back.frame, ServerFrame::Reply(pong));
    }

    #[test]
    fn a_server_that_is_not_ready_says_so() {
        let pong = Reply::Pong(super::Pong {
            server: "s1".into(),
            load: 0,
            ready: false,
        });
        for version in [Version::V1, Version::V2] {
            let bytes = pong.render(version, None).unwrap();
            assert_eq!(
                bytes,
                b"{\"msgid\":13,\"server\":\"s1\",\"load\":0,\"ready\":false}\n"
            );
            let back = parse_server_frame(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(back.frame, ServerFrame::Reply(pong.clone()));
        }
    }
}
