//! The ChatChat wire protocol (docs/protocol.md), both directions: message
//! ids, error numbers, the frame codec, requests (parse and encode) and
//! replies and pushes (render and read back).
//!
//! This crate does no I/O of its own, so the server, the client, the
//! balancer's health check, the benchmark tool and the tests all share one
//! definition of the bytes.

mod codec;
mod ids;
mod json;
pub mod message;
mod reply;
mod request;

pub use codec::{FrameCodec, FrameError, DEFAULT_MAX_FRAME};
pub use ids::{Errno, MsgId, Version};
pub use message::ack::{Ack, Failure};
pub use message::add_friend::AddFriend;
pub use message::add_group::AddGroup;
pub use message::chat::{Chat, ChatTarget, SendChat, MAX_CID_BYTES};
pub use message::create_group::CreateGroup;
pub use message::delivered::Delivered;
pub use message::goaway::GoAway;
pub use message::history::{History, HistoryPage, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
pub use message::login::{
    Credential, Friend, Group, Login, LoginAck, Member, Presence, Role, MAX_TOKEN_BYTES,
};
pub use message::logout::Logout;
pub use message::notice::Notice;
pub use message::ping::Pong;
pub use message::register::Register;
pub use reply::{parse_server_frame, Incoming, Reply, ServerFrame, WireError};
pub use request::{parse_frame, BadRequest, Parsed, Request};

/// Longest user or group name, in Unicode scalar values.
pub const MAX_NAME_CHARS: usize = 50;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 128;
/// Longest group description, in Unicode scalar values (the original schema's 200).
pub const MAX_GROUP_DESC_CHARS: usize = 200;
/// The original client reads at most this many bytes per `recv` and parses
/// each read as one message: every frame to a v1 connection must be shorter.
pub const V1_READ_SIZE: usize = 1024;

/// True when `name` is an acceptable user or group name (1 to 50 characters).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS
}
