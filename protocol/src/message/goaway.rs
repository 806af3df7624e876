//! GOAWAY (16), v2: the server is about to close the session (shutdown or
//! drain). The client reconnects after a random delay in [0, `retry_ms`]
//! and resumes with its token and `since`.

use crate::json::{Obj, ObjectWriter};
use crate::MsgId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub reason: String,
    pub retry_ms: u64,
}

impl GoAway {
    /// The frame to write, `\n` included.
    pub fn frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let mut object = ObjectWriter::new(&mut out);
        object
            .field("msgid", &MsgId::GoAway.number())
            .field("reason", &self.reason)
            .field("retry_ms", &self.retry_ms)
            .finish();
        out.push(b'\n');
        out
    }

    pub(crate) fn read(object: &Obj) -> Self {
        GoAway {
            reason: object.string("reason").unwrap_or_default(),
            retry_ms: object
                .0
                .get("retry_ms")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_server_frame, ServerFrame};

    #[test]
    fn goaway_reads_back() {
        let goaway = GoAway {
            reason: "shutdown".into(),
            retry_ms: 2000,
        };
        let frame = goaway.frame();
        assert_eq!(
            frame,
            b"{\"msgid\":16,\"reason\":\"shutdown\",\"retry_ms\":2000}\n"
        );
        assert_eq!(
            parse_server_frame(&frame).unwrap().frame,
            ServerFrame::GoAway(goaway)
        );
    }
}
