//! Requests, one file each: `apply` takes a parsed request and the session's
//! state and returns the reply. Nothing here touches a socket; the session
//! writes the reply and then runs the outcome's `after_write`.

mod add_friend;
mod add_group;
mod create_group;
mod delivered;
mod group_chat;
mod history;
mod login;
mod logout;
mod one_chat;
mod register;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use protocol::{Ack, Chat, ChatTarget, Errno, MsgId, Reply, Request, SendChat, Version};

use crate::context::Context;
use crate::delivery::notify;
use crate::error::Unavailable;
use crate::mailbox::{Mailbox, Pushed};
use crate::rate_limit::Failures;
use crate::refusals::Refusal;
use crate::store::NewMessage;
use crate::writer::{SendJob, SendOutcome};

pub use logout::end_login;

/// The logged-in user of a session.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: Arc<str>,
}

/// What commands know about a connection.
#[derive(Debug)]
pub struct SessionState {
    pub conn_id: u64,
    pub peer_ip: IpAddr,
    /// The protocol level replies and pushes are rendered in.
    pub version: Version,
    pub user: Option<User>,
    /// Present while logged in: where other sessions' messages arrive.
    pub mailbox: Option<Mailbox>,
    pub login_failures: Failures,
    /// Where this session is in its user's inbox.
    pub inbox: InboxCursor,
    /// The hash of the token this login holds, revoked by LOGOUT.
    pub token_hash: Option<String>,
    /// Friends and fellow group members (sorted, no duplicates): who hears
    /// of this user's logout.
    pub related: Vec<i64>,
}

/// A session's position in its user's inbox.
#[derive(Debug, Default, Clone, Copy)]
pub struct InboxCursor {
    /// Highest seq written to the socket (or held by the client at login):
    /// a push at or below it is a duplicate, one above `written + 1` means a
    /// gap to read from the inbox.
    pub written: i64,
    /// Highest seq confirmed to the writer.
    pub confirmed: i64,
}

impl SessionState {
    pub fn new(conn_id: u64, peer_ip: IpAddr) -> Self {
        Self {
            conn_id,
            peer_ip,
            version: Version::V1,
            user: None,
            mailbox: None,
            login_failures: Failures::default(),
            inbox: InboxCursor::default(),
            token_hash: None,
            related: Vec::new(),
        }
    }

    /// Adds `user` to those who hear of this user's logout.
    pub fn relate(&mut self, user: i64) {
        if let Err(at) = self.related.binary_search(&user) {
            self.related.insert(at, user);
        }
    }
}

/// Work that must wait until the reply is on the socket.
#[derive(Debug, Default, PartialEq)]
pub enum AfterWrite {
    #[default]
    Nothing,
    /// The LOGIN_ACK is written: confirm the inbox up to the cursor's
    /// `written` (v1 carries the first messages in the ACK), then stream
    /// the rest of the inbox.
    ReadInbox,
}

#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub after_write: AfterWrite,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome {
            reply,
            after_write: AfterWrite::Nothing,
        }
    }
}

/// An error reply for `request` with a specific message.
pub(crate) fn refuse(request: MsgId, errno: Errno, message: impl Into<Cow<'static, str>>) -> Reply {
    Reply::refuse(Some(request), errno, message)
}

/// Storage failed: log it and answer errno 10.
pub(crate) fn server_error(ctx: &Context, request: MsgId, error: impl Into<Unavailable>) -> Reply {
    let error = error.into();
    ctx.metrics.unavailable(&error);
    tracing::error!(%error, request = ?request, "request failed: storage, hashing or cluster unavailable");
    Reply::error(Some(request), Errno::ServerError)
}

/// Checks who may send what, then runs the request.
pub async fn apply(ctx: &Context, session: &mut SessionState, request: Request) -> Outcome {
    let msgid = request.msgid();
    match (&session.user, &request) {
        (None, Request::Login { .. } | Request::Register { .. } | Request::Ping) => {}
        (None, _) => return refuse(msgid, Errno::NotAuthorized, "log in first").into(),
        (Some(user), _) => {
            if request.claimed_id().is_some_and(|id| id != user.id) {
                return refuse(msgid, Errno::NotAuthorized, "id is not yours").into();
            }
        }
    }
    let user = session.user.as_ref().map(|user| user.id);
    let signups = &ctx.guard.signups;
    if let Some(refused) = signups
        .refuse(&ctx.store, &ctx.refusals, session.peer_ip, user, &request)
        .await
    {
        return refused.into();
    }
    match request {
        Request::Login(login) => login::apply(ctx, session, login).await,
        Request::Delivered(delivered) => delivered::apply(ctx, session, delivered.seq).await.into(),
        Request::History(history) => history::apply(ctx, logged_in(session), history)
            .await
            .into(),
        Request::Register(register) => register::apply(ctx, register.name, register.password)
            .await
            .into(),
        Request::Ping => Reply::Pong(protocol::Pong {
            server: ctx.server_name.clone(),
            load: ctx.registry.len() as u64,
            ready: crate::readiness::is_ready(ctx),
        })
        .into(),
        Request::Logout(_) => logout::apply(ctx, session).await.into(),
        Request::Chat(chat) => match chat.target {
            ChatTarget::User(to) => one_chat::apply(ctx, session, to, chat).await,
            ChatTarget::Group(group) => group_chat::apply(ctx, session, group, chat).await,
        }
        .into(),
        Request::AddFriend(add) => add_friend::apply(ctx, session, add.friend).await.into(),
        Request::CreateGroup(create) => {
            create_group::apply(ctx, logged_in(session), &create.name, &create.desc)
                .await
                .into()
        }
        Request::AddGroup(add) => add_group::apply(ctx, session, add.group).await.into(),
    }
}

/// The user of a session that passed the login check in `apply`.
fn logged_in(session: &SessionState) -> &User {
    session
        .user
        .as_ref()
        .expect("apply() refuses these requests before login")
}

/// The key a conversation's messages are stored (and HISTORY read) under:
/// `u:LOW:HIGH` for the two users of a 1:1 chat, `g:GROUP` for a group.
pub(crate) fn conversation_key(user: i64, target: ChatTarget) -> String {
    match target {
        ChatTarget::User(other) => format!("u:{}:{}", user.min(other), user.max(other)),
        ChatTarget::Group(group) => format!("g:{group}"),
    }
}

/// Stamps a chat message (id, server time), serializes it once, stores it
/// in every receiver's inbox and only then tells them; the ACK carries its
/// `mid` and `ts`. A repeated `cid` gets the first message's ACK.
pub(crate) async fn send_chat(
    ctx: &Context,
    session: &SessionState,
    user: &User,
    chat: SendChat,
    receivers: Vec<i64>,
) -> Reply {
    let msgid = chat.target.msgid();
    let conversation = conversation_key(user.id, chat.target);
    // 1:1 chats refuse a message to a full inbox; groups skip full members.
    let refuse_when_full = matches!(chat.target, ChatTarget::User(_));
    let mid = ctx.mids.next();
    let ts = chrono::Utc::now().timestamp_millis();
    let time = chat
        .time
        .unwrap_or_else(|| chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string());
    let push = Chat {
        target: chat.target,
        from: user.id,
        name: user.name.to_string(),
        msg: chat.msg,
        time,
        mid: Some(mid),
        ts: Some(ts),
        seq: None,
    };
    let pushed = Pushed::new(&push);
    let job = SendJob {
        message: NewMessage {
            mid,
            sender_id: user.id,
            conversation,
            cid: chat.cid,
            body: pushed.payload().clone(),
        },
        receivers,
        refuse_when_full,
    };
    match ctx.writer.send(job).await {
        Ok(SendOutcome::Stored {
            deliveries,
            skipped_full,
        }) => {
            if !skipped_full.is_empty() {
                ctx.refusals.note(Refusal::InboxFull, session.peer_ip);
                tracing::warn!(
                    skipped = ?skipped_full,
                    "group message not stored for members whose inbox is full"
                );
            }
            notify(ctx, &pushed, &deliveries).await;
            Reply::Done(Ack {
                mid: Some(mid),
                ts: Some(ts),
                ..Ack::default()
            })
        }
        Ok(SendOutcome::Duplicate { mid, body }) => Reply::Done(Ack {
            mid: Some(mid),
            ts: Chat::from_json(&body).ok().and_then(|chat| chat.ts),
            ..Ack::default()
        }),
        Ok(SendOutcome::InboxFull) => {
            ctx.refusals.note(Refusal::InboxFull, session.peer_ip);
            refuse(
                msgid,
                Errno::RateLimited,
                "the receiver has too many undelivered messages",
            )
        }
        Err(error) => server_error(ctx, msgid, error),
    }
}
