//! Serde helpers shared by the op types.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// `skip_serializing_if` for fields whose default value is left out of the canonical form, as protobuf
/// leaves out zero values: adding a new optional field later does not change the digest of an op that
/// does not use it.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// File contents (FileOp mkfile data). Serialised as a JSON string when the bytes are UTF-8 (Dockerfile
/// heredocs are, and stay readable in dumps) and as `{"hex": "..."}` otherwise; both forms are
/// deterministic, so the canonical bytes are too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Bytes(pub Vec<u8>);

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&str> for Bytes {
    fn from(v: &str) -> Self {
        Bytes(v.as_bytes().to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or {\"hex\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                Ok(Bytes(v.as_bytes().to_vec()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bytes, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "hex" || out.is_some() {
                        return Err(de::Error::custom(format!("unexpected key {key:?} in bytes")));
                    }
                    let h: String = map.next_value()?;
                    out = Some(hex::decode(&h).map_err(de::Error::custom)?);
                }
                out.map(Bytes).ok_or_else(|| de::Error::missing_field("hex"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_text_and_binary_round_trip() {
        let text = Bytes::from("echo hi\n");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""echo hi\n""#);
        let bin = Bytes(vec![0xff, 0x00]);
        let json = serde_json::to_string(&bin).unwrap();
        assert_eq!(json, r#"{"hex":"ff00"}"#);
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), bin);
        assert!(serde_json::from_str::<Bytes>(r#"{"b64":"x"}"#).is_err());
    }
}
