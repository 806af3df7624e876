//! LOGOUT (3): end the login but keep the connection. v2 gets an ACK.

use crate::json::{Fields, ObjectWriter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub id: Option<i64>,
}

impl Logout {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        Ok(Logout {
            id: fields.opt_int("id")?,
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object.optional("id", self.id);
    }
}
