//! A YAML document tree that remembers where every key and value came from.
//!
//! Documents are first read into [`Node`]s (which keeps 1-based line numbers), then converted
//! to `serde_json::Value` for typed deserialization. When typed deserialization or semantic
//! validation reports a field path, [`Node::line_of`] maps that path back to a source line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::problem::Segment;

/// One YAML value with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub value: Value,
}

/// The shape of a YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order: (key text, key line, value).
    Map(Vec<(String, usize, Node)>),
}

impl Node {
    /// Line of the deepest node reachable along `path` (the key's line for map entries).
    pub fn line_of(&self, path: &[Segment]) -> usize {
        let mut node = self;
        let mut line = self.line;
        for seg in path {
            match (seg, &node.value) {
                (Segment::Key(k), Value::Map(entries)) => {
                    match entries.iter().find(|(name, _, _)| name == k) {
                        Some((_, key_line, child)) => {
                            line = *key_line;
                            node = child;
                        }
                        None => return line,
                    }
                }
                (Segment::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(child) => {
                        line = child.line;
                        node = child;
                    }
                    None => return line,
                },
                _ => return line,
            }
        }
        line
    }

    /// Looks up a direct child of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    /// The string value of a scalar node, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts the tree into a JSON value (mapping keys become strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A mapping key: any scalar, rendered as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Err(E::custom("mapping keys must not be null"))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

fn line_u(loc: &serde_saphyr::Location) -> usize {
    usize::try_from(loc.line()).unwrap_or(usize::MAX)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            line: line_u(&spanned.referenced),
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Value, D2::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Value::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Key>>()? {
                    let value = map.next_value::<Node>()?;
                    entries.push((key.value.0, line_u(&key.referenced), value));
                }
                Ok(Value::Map(entries))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// Reads every document of a YAML stream. Syntax errors fail the whole stream.
///
/// Booleans follow YAML 1.2 (`true`/`false` only), so values such as `y`, `on` or `no`
/// stay strings.
pub(crate) fn parse_stream(text: &str) -> Result<Vec<Node>, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    serde_saphyr::from_multiple_with_options::<Node>(text, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lines_of_keys_and_items() {
        let docs = parse_stream("a: 1\nb:\n  - x\n  - y: 2\n---\n# c\n---\nz: true\n").unwrap();
        assert_eq!(docs.len(), 2, "{docs:?}");
        let d = &docs[0];
        assert_eq!(d.line, 1);
        assert_eq!(
            d.line_of(&[
                Segment::Key("b".into()),
                Segment::Index(1),
                Segment::Key("y".into())
            ]),
            4
        );
        assert_eq!(d.line_of(&[Segment::Key("b".into())]), 2);
        assert_eq!(docs[1].line, 8);
        assert_eq!(docs[1].to_json(), serde_json::json!({"z": true}));
    }

    #[test]
    fn integer_keys_become_text() {
        let docs = parse_stream("8080:\n  mode: STRICT\n").unwrap();
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"8080": {"mode": "STRICT"}})
        );
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let docs = parse_stream("a: y\nb: on\nc: true\nd: 'no'\ne: No\n").unwrap();
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"a": "y", "b": "on", "c": true, "d": "no", "e": "No"})
        );
    }
}
