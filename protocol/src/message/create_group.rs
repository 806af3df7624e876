//! CREATE_GROUP (8): create a group, the sender becoming its creator. v2
//! gets an ACK carrying `groupid`.

use crate::json::{Fields, ObjectWriter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateGroup {
    pub id: Option<i64>,
    pub name: String,
    /// Optional on the wire; absent reads as empty.
    pub desc: String,
}

impl CreateGroup {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        Ok(CreateGroup {
            id: fields.opt_int("id")?,
            name: fields.string("groupname")?,
            desc: fields.opt_string("groupdesc")?.unwrap_or_default(),
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object
            .optional("id", self.id)
            .field("groupname", &self.name)
            .field("groupdesc", &self.desc);
    }
}
