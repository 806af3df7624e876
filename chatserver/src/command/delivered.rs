//! DELIVERED: the client holds its inbox up to `seq`; the rows go.

use protocol::{Errno, MsgId, Reply};

use super::{logged_in, refuse, SessionState};
use crate::context::Context;

pub async fn apply(ctx: &Context, session: &mut SessionState, seq: i64) -> Reply {
    let user = logged_in(session).id;
    let cursor = &mut session.inbox;
    if seq > cursor.written {
        // The client cannot hold what was never sent to it.
        return refuse(
            MsgId::Delivered,
            Errno::BadRequest,
            format!(
                "seq {seq} is above the newest message sent ({})",
                cursor.written
            ),
        );
    }
    if seq > cursor.confirmed {
        cursor.confirmed = seq;
        ctx.writer.confirm(user, seq).await;
    }
    Reply::Silent
}
