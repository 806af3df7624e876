//! One module per message, each holding both directions: how a client
//! encodes the request and the server parses it, how the server renders the
//! reply or push and a client reads it back, and the tests of both.
//!
//! Adding a message type: a module here, an arm in [`crate::Request`] or
//! [`crate::Reply`] (and in `MsgId`), a command file in the server and an arm
//! in its dispatch (docs/adding-a-message.md).

pub mod ack;
pub mod add_friend;
pub mod add_group;
pub mod chat;
pub mod create_group;
pub mod delivered;
pub mod goaway;
pub mod history;
pub mod login;
pub mod logout;
pub mod notice;
pub mod ping;
pub mod register;
