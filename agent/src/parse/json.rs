//! The `json` step: a line that is a JSON object gives its members as fields,
//! nested objects as dotted names (`{"http": {"request": {"method": "GET"}}}` is
//! `http.request.method`). serde_json reads it borrowing the line's text, with no
//! tree built: every member goes straight into the line's fields.

use super::fields::Fields;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Reads `text` as a JSON object into `fields`; the value of `message_field`, a
/// member of the top level, goes to `message` instead.
pub(crate) fn parse(
    text: &str,
    fields: &mut Fields,
    message_field: Option<&str>,
    message: &mut Option<String>,
) -> Result<(), String> {
    if !text.trim_start().starts_with('{') {
        return Err("not a JSON object".to_owned());
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut name = String::new();
    Members {
        fields,
        name: &mut name,
        message_field,
        message,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end())
    .map_err(|error| format!("not valid JSON: {error}"))
}

/// The members of one object, named under the dotted prefix in `name`.
struct Members<'f> {
    fields: &'f mut Fields,
    name: &'f mut String,
    message_field: Option<&'f str>,
    message: &'f mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let prefix_len = self.name.len();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            self.name.truncate(prefix_len);
            if prefix_len > 0 {
                self.name.push('.');
            }
            self.name.push_str(key.as_str());
            let top_level_message =
                prefix_len == 0 && self.message_field == Some(self.name.as_str());
            map.next_value_seed(Member {
                fields: self.fields,
                name: self.name,
                message: top_level_message.then_some(&mut *self.message),
            })?;
        }
        self.name.truncate(prefix_len);
        Ok(())
    }
}

/// A member's key, borrowed from the line unless it holds escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// One member's value: a scalar becomes a field, an object its members, an array
/// its JSON text.
struct Member<'f> {
    fields: &'f mut Fields,
    name: &'f mut String,
    /// Where the value goes if it is the message.
    message: Option<&'f mut Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Member<'_> {
    fn scalar(self, value: &str) {
        match self.message {
            Some(message) => *message = Some(value.to_owned()),
            None => self.fields.add(self.name, value),
        }
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.scalar(value);
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.scalar(if value { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.scalar(&value.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.scalar(&value.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.scalar(&value.to_string());
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let mut ignored = None;
        Members {
            fields: self.fields,
            name: self.name,
            message_field: None,
            message: &mut ignored,
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        let text = serde_json::Value::Array(items).to_string();
        self.fields.add(self.name, &text);
        Ok(())
    }
}
