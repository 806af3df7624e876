//! DELIVERED (14), v2: the client holds every inbox message up to `seq`.
//! It moves the user's inbox cursor; no reply unless it is malformed or
//! names a `seq` the user has not been sent.

use crate::json::{Fields, ObjectWriter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub seq: i64,
}

impl Delivered {
    pub(crate) fn parse(fields: &Fields) -> Result<Self, String> {
        match fields.int("seq")? {
            seq if seq < 0 => Err("seq must be 0 or more".to_owned()),
            seq => Ok(Delivered { seq }),
        }
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter) {
        object.field("seq", &self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_frame, Reply, Request, Version};

    #[test]
    fn delivered_round_trips_and_is_silent_on_success() {
        let request = Request::Delivered(Delivered { seq: 12 });
        let bytes = request.encode(Version::V2, None);
        assert_eq!(bytes, b"{\"msgid\":14,\"v\":2,\"seq\":12}\n");
        assert_eq!(parse_frame(&bytes[..bytes.len() - 1]).request, Ok(request));
        assert!(parse_frame(br#"{"msgid":14,"v":2,"seq":-1}"#)
            .request
            .is_err());
        assert!(parse_frame(br#"{"msgid":14,"v":2}"#).request.is_err());
        assert_eq!(Reply::Silent.render(Version::V2, None), None);
    }
}
