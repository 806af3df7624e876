//! JSON plumbing shared by the message modules: a writer that renders an
//! object field by field (no intermediate map), the borrowed fields of a
//! request as the server reads them, and a lenient reader for the frames a
//! client reads.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::Version;

/// Writes one JSON object into a byte buffer, field by field.
pub(crate) struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Writes `"key":value`. Keys are our own ASCII names, never escaped.
    pub(crate) fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> &mut Self {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        serde_json::to_writer(&mut *self.out, value).expect("plain data always serializes");
        self
    }

    pub(crate) fn optional<T: Serialize>(&mut self, key: &str, value: Option<T>) -> &mut Self {
        if let Some(value) = value {
            self.field(key, &value);
        }
        self
    }

    /// A list in the shape of `version`: v1 nests each item as the JSON text
    /// of an object (a string), v2 writes the objects themselves.
    pub(crate) fn list<T: Serialize>(
        &mut self,
        key: &str,
        items: &[T],
        version: Version,
    ) -> &mut Self {
        match version {
            Version::V2 => self.field(key, items),
            Version::V1 => {
                let texts: Vec<String> = items.iter().map(to_text).collect();
                self.field(key, &texts)
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        self.out.push(b'}');
    }
}

/// The JSON text of plain data.
pub(crate) fn to_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serializes")
}

/// Declares the fields a request may carry once: the struct that borrows
/// them from the frame and the lookup by name both come from this list.
macro_rules! raw_fields {
    ($($field:ident),* $(,)?) => {
        /// Every field any request may carry, borrowed from the frame
        /// undecoded: a request is decoded without building a map of the
        /// whole object, and a field is only decoded (and type-checked) when
        /// the request needs it.
        #[derive(Deserialize, Default)]
        #[serde(default)]
        pub(crate) struct RawFields<'a> {
            $(
                #[serde(borrow, deserialize_with = "present")]
                pub(crate) $field: Option<&'a RawValue>,
            )*
        }

        impl<'a> RawFields<'a> {
            fn get(&self, key: &str) -> Option<&'a RawValue> {
                match key {
                    $(stringify!($field) => self.$field,)*
                    _ => None,
                }
            }
        }
    };
}

raw_fields!(
    msgid, v, rid, id, password, name, toid, msg, time, friendid, groupname, groupdesc, groupid,
    cid, since, token, seq, with, before, limit,
);

/// A field that is present is `Some`, even when it is `null` (which is
/// then refused as mistyped rather than taken for a missing field).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Typed, checked access to the fields of a request. Errors are the reason
/// given to the client with errno 6.
pub(crate) struct Fields<'a>(pub(crate) RawFields<'a>);

impl Fields<'_> {
    fn raw(&self, key: &str) -> Option<&RawValue> {
        self.0.get(key)
    }

    pub(crate) fn version(&self) -> Result<Option<Version>, String> {
        match self.0.v.map(|raw| serde_json::from_str::<i64>(raw.get())) {
            None => Ok(None),
            Some(Ok(1)) => Ok(Some(Version::V1)),
            Some(Ok(2)) => Ok(Some(Version::V2)),
            Some(_) => Err("v must be the integer 1 or 2".to_owned()),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<i64, String> {
        self.opt_int(key)?
            .ok_or_else(|| format!("missing field {key}"))
    }

    pub(crate) fn opt_int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<i64>(raw.get())
                .map(Some)
                .map_err(|_| format!("{key} must be an integer")),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<String, String> {
        self.opt_string(key)?
            .ok_or_else(|| format!("missing field {key}"))
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| format!("{key} must be a string")),
        }
    }
}

/// Lenient reading of a frame a server sent: unknown fields are ignored,
/// a missing optional field is `None`, and v1 lists of JSON strings read
/// like v2 lists of objects.
pub(crate) struct Obj<'a>(pub(crate) &'a Map<String, Value>);

impl Obj<'_> {
    pub(crate) fn int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }

    pub(crate) fn string(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(Value::as_str).map(str::to_owned)
    }

    pub(crate) fn count(&self, key: &str) -> usize {
        self.0
            .get(key)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }

    /// The objects of a list that may hold objects (v2) or JSON strings (v1).
    pub(crate) fn objects(&self, key: &str) -> Vec<Map<String, Value>> {
        match self.0.get(key) {
            Some(Value::Array(items)) => items.iter().filter_map(as_object).collect(),
            _ => Vec::new(),
        }
    }
}

/// An object, or a string holding the JSON text of one (v1 nesting).
pub(crate) fn as_object(item: &Value) -> Option<Map<String, Value>> {
    match item {
        Value::Object(map) => Some(map.clone()),
        Value::String(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        },
        _ => None,
    }
}
