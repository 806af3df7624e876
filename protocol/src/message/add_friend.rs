//! ADD_FRIEND (7): befriend another user, mutually. v2 gets an ACK.

use crate::json::{Fields, ObjectWriter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddFriend {
    /// The sender's id as claimed; the server checks it against the session.
    pub id: Option<i64>,
    pub friend: i64,
}

impl AddFriend {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        Ok(AddFriend {
            id: fields.opt_int("id")?,
            friend: fields.int("friendid")?,
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .optional("id", self.id)
            .field("friendid", &self.friend);
    }
}
