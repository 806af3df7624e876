//! ADD_GROUP (9): join a group. v2 gets an ACK.

use crate::json::{Fields, ObjectWriter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddGroup {
    pub id: Option<i64>,
    pub group: i64,
}

impl AddGroup {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        Ok(AddGroup {
            id: fields.opt_int("id")?,
            group: fields.int("groupid")?,
        })
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object.optional("id", self.id).field("groupid", &self.group);
    }
}
