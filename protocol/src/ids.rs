//! The numbers of the protocol: message ids, error numbers and versions.

/// A message id (`msgid`) as listed in docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgId {
    Login = 1,
    LoginAck = 2,
    Logout = 3,
    Register = 4,
    RegisterAck = 5,
    OneChat = 6,
    AddFriend = 7,
    CreateGroup = 8,
    AddGroup = 9,
    GroupChat = 10,
    Ack = 11,
    Ping = 12,
    Pong = 13,
    Delivered = 14,
    History = 15,
    GoAway = 16,
    Notice = 17,
}

impl MsgId {
    const ALL: [MsgId; 17] = [
        MsgId::Login,
        MsgId::LoginAck,
        MsgId::Logout,
        MsgId::Register,
        MsgId::RegisterAck,
        MsgId::OneChat,
        MsgId::AddFriend,
        MsgId::CreateGroup,
        MsgId::AddGroup,
        MsgId::GroupChat,
        MsgId::Ack,
        MsgId::Ping,
        MsgId::Pong,
        MsgId::Delivered,
        MsgId::History,
        MsgId::GoAway,
        MsgId::Notice,
    ];

    /// The message id for a number, if the protocol defines one.
    pub fn from_number(n: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|id| i64::from(id.number()) == n)
    }

    pub fn number(self) -> u8 {
        self as u8
    }
}

/// An error number (`errno`) as listed in docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Errno {
    Ok = 0,
    /// Bad credentials (LOGIN) or name taken (REGISTER).
    BadCredentials = 1,
    AlreadyLoggedIn = 2,
    GroupNameTaken = 3,
    NotFound = 4,
    NotMember = 5,
    BadRequest = 6,
    NotAuthorized = 7,
    FrameTooLarge = 8,
    RateLimited = 9,
    ServerError = 10,
}

impl Errno {
    pub fn number(self) -> u8 {
        self as u8
    }

    const ALL: [Errno; 11] = [
        Errno::Ok,
        Errno::BadCredentials,
        Errno::AlreadyLoggedIn,
        Errno::GroupNameTaken,
        Errno::NotFound,
        Errno::NotMember,
        Errno::BadRequest,
        Errno::NotAuthorized,
        Errno::FrameTooLarge,
        Errno::RateLimited,
        Errno::ServerError,
    ];

    /// The errno for a number, if the protocol defines one.
    pub fn from_number(n: i64) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|errno| i64::from(errno.number()) == n)
    }

    /// The message sent with this errno when the handler has nothing more
    /// specific to say. Errnos 1 and 2 keep the original server's wording,
    /// which the original client prints as is.
    pub fn default_message(self) -> &'static str {
        match self {
            Errno::Ok => "ok",
            Errno::BadCredentials => "incorrect id or password!",
            Errno::AlreadyLoggedIn => "this account is using, input another!",
            Errno::GroupNameTaken => "group name is taken",
            Errno::NotFound => "no such user or group",
            Errno::NotMember => "not a member of that group",
            Errno::BadRequest => "bad request",
            Errno::NotAuthorized => "not logged in, or id is not yours",
            Errno::FrameTooLarge => "frame too large",
            Errno::RateLimited => "too many failed logins, try again later",
            Errno::ServerError => "server error, nothing was changed; try again",
        }
    }
}

/// The protocol level a connection speaks. A connection starts at v1 and
/// moves to v2 for good with the first request that carries `"v": 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Version {
    #[default]
    V1,
    V2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_both_ways_and_unknown_ones_are_none() {
        for n in 1..=17 {
            assert_eq!(
                MsgId::from_number(n).map(|id| i64::from(id.number())),
                Some(n)
            );
        }
        for n in 0..=10 {
            assert_eq!(
                Errno::from_number(n).map(|e| i64::from(e.number())),
                Some(n)
            );
        }
        for n in [-1, 0, 18, 99, i64::MAX] {
            assert_eq!(MsgId::from_number(n), None);
        }
        assert_eq!(Errno::from_number(11), None);
    }
}
