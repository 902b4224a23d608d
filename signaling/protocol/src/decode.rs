//! Hand-written deserialization of the two tagged message enums,
//! [`ClientMessage`] and [`ServerMessage`].
//!
//! When `"type"` is the first key (every client we know writes it first) the
//! payload is deserialized straight from the rest of the object: one pass,
//! no buffering, and raw values such as [`crate::Sdp`] work. When it is not,
//! the object is buffered into a JSON map first, as serde's derived
//! internally tagged enums do, so the result is the same either way.

use crate::client::{ClientKind, ClientMessage};
use crate::server::{ServerKind, ServerMessage};
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// An enum tagged by `"type"` whose payloads are structs.
trait Tagged: Sized {
    /// Every tag, for "expected one of".
    const NAMES: &'static [&'static str];
    /// Deserializes the payload for `tag` from `de` (the object's other keys).
    fn payload<'de, D: Deserializer<'de>>(tag: usize, de: D) -> Result<Self, D::Error>;
}

impl Tagged for ClientMessage {
    const NAMES: &'static [&'static str] = &ClientKind::NAMES;

    fn payload<'de, D: Deserializer<'de>>(tag: usize, de: D) -> Result<Self, D::Error> {
        let Some(kind) = ClientKind::ALL.get(tag) else { unreachable!("tag index from NAMES") };
        Ok(match kind {
            ClientKind::Join => Self::Join(Deserialize::deserialize(de)?),
            ClientKind::Offer => Self::Offer(Deserialize::deserialize(de)?),
            ClientKind::Answer => Self::Answer(Deserialize::deserialize(de)?),
            ClientKind::Candidate => Self::Candidate(Deserialize::deserialize(de)?),
            ClientKind::EndOfCandidates => Self::EndOfCandidates(Deserialize::deserialize(de)?),
            ClientKind::Chat => Self::Chat(Deserialize::deserialize(de)?),
            ClientKind::ChatHistory => Self::ChatHistory(Deserialize::deserialize(de)?),
            ClientKind::Typing => Self::Typing(Deserialize::deserialize(de)?),
            ClientKind::Read => Self::Read(Deserialize::deserialize(de)?),
            ClientKind::Media => Self::Media(Deserialize::deserialize(de)?),
            ClientKind::Ping => Self::Ping(Deserialize::deserialize(de)?),
            ClientKind::Leave => Self::Leave(Deserialize::deserialize(de)?),
            ClientKind::IceServers => Self::IceServers(Deserialize::deserialize(de)?),
        })
    }
}

impl Tagged for ServerMessage {
    const NAMES: &'static [&'static str] = &ServerKind::NAMES;

    fn payload<'de, D: Deserializer<'de>>(tag: usize, de: D) -> Result<Self, D::Error> {
        let Some(kind) = ServerKind::ALL.get(tag) else { unreachable!("tag index from NAMES") };
        Ok(match kind {
            ServerKind::Welcome => Self::Welcome(Deserialize::deserialize(de)?),
            ServerKind::PeerJoined => Self::PeerJoined(Deserialize::deserialize(de)?),
            ServerKind::PeerLeft => Self::PeerLeft(Deserialize::deserialize(de)?),
            ServerKind::PeerUpdated => Self::PeerUpdated(Deserialize::deserialize(de)?),
            ServerKind::Offer => Self::Offer(Deserialize::deserialize(de)?),
            ServerKind::Answer => Self::Answer(Deserialize::deserialize(de)?),
            ServerKind::Candidate => Self::Candidate(Deserialize::deserialize(de)?),
            ServerKind::EndOfCandidates => Self::EndOfCandidates(Deserialize::deserialize(de)?),
            ServerKind::Chat => Self::Chat(Deserialize::deserialize(de)?),
            ServerKind::ChatHistory => Self::ChatHistory(Deserialize::deserialize(de)?),
            ServerKind::Typing => Self::Typing(Deserialize::deserialize(de)?),
            ServerKind::Read => Self::Read(Deserialize::deserialize(de)?),
            ServerKind::Pong => Self::Pong(Deserialize::deserialize(de)?),
            ServerKind::Error => Self::Error(Deserialize::deserialize(de)?),
            ServerKind::GoingAway => Self::GoingAway(Deserialize::deserialize(de)?),
            ServerKind::IceServers => Self::IceServers(Deserialize::deserialize(de)?),
        })
    }
}

impl<'de> Deserialize<'de> for ClientMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

struct TaggedVisitor<T>(PhantomData<T>);

fn tag_index<T: Tagged, E: de::Error>(tag: &str) -> Result<usize, E> {
    T::NAMES.iter().position(|n| *n == tag).ok_or_else(|| de::Error::unknown_variant(tag, T::NAMES))
}

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object with a \"type\" field")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(first) = map.next_key::<Cow<'de, str>>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag = map.next_value::<Cow<'de, str>>()?;
            return T::payload(tag_index::<T, A::Error>(&tag)?, MapAccessDeserializer::new(NoSecondTag(map)));
        }
        // Slow path: buffer the whole object, then find the tag. A repeated
        // key is refused here as the typed structs refuse theirs, so that no
        // key order decides which of two `type`s counts.
        let mut object = serde_json::Map::new();
        let value: serde_json::Value = map.next_value()?;
        object.insert(first.into_owned(), value);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            object.insert(key, value);
        }
        let tag = match object.remove("type") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(de::Error::custom("\"type\" must be a string")),
            None => return Err(de::Error::missing_field("type")),
        };
        let index = tag_index::<T, A::Error>(&tag)?;
        T::payload(index, serde_json::Value::Object(object).into_deserializer()).map_err(de::Error::custom)
    }
}

/// The rest of an object whose `type` was read first: a second `type` key
/// is an error (the payload structs would otherwise ignore it, and
/// `{"type":"ping","type":"leave"}` would be a ping while the same keys in
/// another order were a leave).
struct NoSecondTag<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for NoSecondTag<A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.0.next_key::<Cow<'de, str>>()? else { return Ok(None) };
        if key == "type" {
            return Err(de::Error::duplicate_field("type"));
        }
        match key {
            Cow::Borrowed(key) => seed.deserialize(de::value::BorrowedStrDeserializer::new(key)).map(Some),
            Cow::Owned(key) => seed.deserialize(key.into_deserializer()).map(Some),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use crate::{ClientMessage, ServerMessage, parse_client};

    #[test]
    fn type_first_and_type_last_give_the_same_message() {
        let first = r#"{"type":"offer","id":3,"to":"pA","description":{"type":"offer","sdp":"v=0\r\n"}}"#;
        let last = r#"{"id":3,"to":"pA","description":{"type":"offer","sdp":"v=0\r\n"},"type":"offer"}"#;
        let a = parse_client(first).expect("type first");
        let b = parse_client(last).expect("type last");
        assert_eq!(a, b);
        assert!(matches!(a, ClientMessage::Offer(_)));
        let s = r#"{"from":"pA","description":{"type":"answer","sdp":"v=0"},"type":"answer"}"#;
        assert!(matches!(ServerMessage::from_json(s), Some(ServerMessage::Answer(_))));
    }

    #[test]
    fn a_repeated_type_is_refused_whatever_the_key_order() {
        for json in [
            r#"{"id":"b","type":"ping","type":"leave"}"#,
            r#"{"type":"ping","id":"b","type":"leave"}"#,
            r#"{"type":"leave","type":"ping"}"#,
            r#"{"id":1,"id":2,"type":"ping"}"#,
        ] {
            let err = parse_client(json).expect_err(json);
            assert_eq!(err.code, crate::ErrorCode::InvalidMessage, "{json}: {}", err.message);
            assert!(err.message.contains("duplicate field"), "{json}: {}", err.message);
        }
    }
}
