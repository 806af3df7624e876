//! REGISTER (4) and its REGISTER_ACK (5): create an account; the reply
//! carries the new id (errno 1 when the name is taken).

use crate::json::{Fields, ObjectWriter};

#[derive(Clone, PartialEq, Eq)]
pub struct Register {
    pub name: String,
    pub password: String,
}

/// Never prints the password.
impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Register {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        Ok(Register {
            name: fields.string("name")?,
            password: fields.string("password")?,
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .field("name", &self.name)
            .field("password", &self.password);
    }
}
