//! The scenarios, one file each.

pub mod fanout;
pub mod groupstore;
pub mod idle;
pub mod login;
pub mod offline;
pub mod pingpong;
pub mod proxy;
pub mod register;
pub mod tokens;
