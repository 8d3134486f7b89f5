//! How one field of [`RuntimeInput`](super::RuntimeInput) is read, and the deserializer
//! error that keeps the name of the field to blame.
//!
//! ArcGIS clients and HTML forms send numbers as strings and booleans as `"on"`, and a field
//! of the wrong kind must be refused with a 400 naming it, in the order validation looks at
//! the fields. So every field deserializes from any JSON value into a [`Given`] (never
//! failing), and validation turns a [`Given::Wrong`] into the error. What the deserializer
//! itself refuses — an unknown field, a field given under two spellings — comes out as a
//! [`FieldError`] that names the field (serde_json's own errors would only say where in the
//! text it was).

use std::fmt;

use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Result, SiteError};

/// One input field as it was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Given<T> {
    /// Not in the input: a partial update keeps the stored value.
    #[default]
    Absent,
    /// `null` (for numbers also `""`): no value, but given — a partial update clears the
    /// stored one.
    Null,
    Value(T),
    /// A value of another kind, kept for the error that names the field.
    Wrong(Value),
}

impl<T> Given<T> {
    /// Whether the field was in the input at all (`null` included).
    pub fn is_given(&self) -> bool {
        !matches!(self, Given::Absent)
    }

    /// This field if it was given, else `base`.
    pub fn or(self, base: Given<T>) -> Given<T> {
        if self.is_given() {
            self
        } else {
            base
        }
    }
}

impl<T: Kind> Given<T> {
    /// The value, `None` when absent or null; a 400 naming `field` when of the wrong kind.
    pub fn get(&self, field: &str) -> Result<Option<&T>> {
        match self {
            Given::Absent | Given::Null => Ok(None),
            Given::Value(v) => Ok(Some(v)),
            Given::Wrong(v) => Err(SiteError::invalid(
                field,
                format!("expected {}, got {v}", T::EXPECTED),
            )),
        }
    }
}

impl<T> From<T> for Given<T> {
    fn from(v: T) -> Self {
        Given::Value(v)
    }
}

/// A kind of field value and how loosely it is read.
pub trait Kind: Sized {
    /// What the error says was expected.
    const EXPECTED: &'static str;
    fn read(v: Value) -> Given<Self>;
}

impl Kind for String {
    const EXPECTED: &'static str = "a string";
    fn read(v: Value) -> Given<Self> {
        match v {
            Value::Null => Given::Null,
            Value::String(s) => Given::Value(s),
            other => Given::Wrong(other),
        }
    }
}

/// Numbers: JSON numbers, or strings holding one (form posts and ArcGIS clients send them
/// so; an empty string is no value).
impl Kind for f64 {
    const EXPECTED: &'static str = "a number";
    fn read(v: Value) -> Given<Self> {
        let parsed = match &v {
            Value::Null => return Given::Null,
            Value::Number(n) => n.as_f64(),
            Value::String(s) if s.trim().is_empty() => return Given::Null,
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(x) if x.is_finite() => Given::Value(x),
            _ => Given::Wrong(v),
        }
    }
}

/// Booleans: JSON booleans, or a form checkbox's `"true"`/`"on"` and `"false"`/`""`.
impl Kind for bool {
    const EXPECTED: &'static str = "true or false";
    fn read(v: Value) -> Given<Self> {
        match v {
            Value::Null => Given::Null,
            Value::Bool(b) => Given::Value(b),
            Value::String(s) if s == "true" || s == "on" => Given::Value(true),
            Value::String(s) if s == "false" || s.is_empty() => Given::Value(false),
            other => Given::Wrong(other),
        }
    }
}

impl<'de, T: Kind> Deserialize<'de> for Given<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Value::deserialize(d).map(T::read)
    }
}

/// A field that is accepted with any value and not used (what the API shows but does not
/// take, so a GET → edit → update round trip works; ArcGIS fields nbrt has no use for).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

/// What deserializing an input object refused, with the field to blame.
#[derive(Debug)]
pub struct FieldError {
    field: String,
    message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

impl serde::de::Error for FieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FieldError {
            field: "body".to_string(),
            message: msg.to_string(),
        }
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        FieldError {
            field: field.to_string(),
            message: "unknown field".to_string(),
        }
    }

    /// Serde names the field by its canonical name whichever spelling came second.
    fn duplicate_field(field: &'static str) -> Self {
        FieldError {
            field: field.to_string(),
            message: format!("given twice (as {field} and a variant spelling)"),
        }
    }
}

impl From<FieldError> for SiteError {
    fn from(e: FieldError) -> Self {
        SiteError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

/// A JSON value as a deserializer whose errors are [`FieldError`]s.
struct Raw(Value);

impl<'de> Deserializer<'de> for Raw {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.0
            .deserialize_any(visitor)
            .map_err(<FieldError as serde::de::Error>::custom)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.0
            .deserialize_option(visitor)
            .map_err(<FieldError as serde::de::Error>::custom)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

impl<'de> IntoDeserializer<'de, FieldError> for Raw {
    type Deserializer = Raw;
    fn into_deserializer(self) -> Raw {
        self
    }
}

/// Deserialize an input object, refusals naming their field (a 400).
pub fn from_map<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T> {
    let de = MapDeserializer::new(map.into_iter().map(|(k, v)| (k, Raw(v))));
    Ok(T::deserialize(de)?)
}
