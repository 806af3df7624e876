//! The ChatChat wire protocol (see docs/protocol.md): message ids, error numbers,
//! the frame codec, request parsing and v1/v2 rendering of replies.
//!
//! This crate does no I/O of its own, so the server, the client, the balancer's
//! health check and the benchmark tool all share one definition of the bytes.

mod codec;
mod ids;
mod reply;
mod request;

pub use codec::{FrameCodec, FrameError, DEFAULT_MAX_FRAME};
pub use ids::{Errno, MsgId, Version};
pub use reply::{
    ChatPush, ChatTarget, FriendEntry, GroupEntry, LoginSuccess, MemberEntry, Presence, Reply, Role,
};
pub use request::{parse_frame, BadRequest, Parsed, Request};

/// Longest user or group name, in Unicode scalar values.
pub const MAX_NAME_CHARS: usize = 50;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 128;
/// Longest group description, in Unicode scalar values (the original schema's 200).
pub const MAX_GROUP_DESC_CHARS: usize = 200;

/// True when `name` is an acceptable user or group name (1 to 50 characters).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS
}
