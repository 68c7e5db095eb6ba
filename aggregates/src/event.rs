//! Every aggregate's events as one type: what a record of the global log decodes to,
//! so that readers of the log match on types, never on names.

use cqrs_es::Aggregate;
use serde::Deserialize;

use crate::claim::{NameClaim, NameEvent};
use crate::conversation::{Conversation, ConversationEvent};
use crate::inbox::{Inbox, InboxEvent};
use crate::member::{MemberEvent, MemberState};
use crate::message::{Message, MessageEvent};
use crate::upload::{Upload, UploadEvent};
use crate::user::{User, UserEvent};

/// Which aggregate an event comes from, known without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    User,
    Conversation,
    Message,
    Member,
    Inbox,
    Name,
    Upload,
}

impl EventKind {
    /// The kind of a stored aggregate type (its `Aggregate::TYPE`).
    pub fn of(aggregate_type: &str) -> Option<Self> {
        Some(match aggregate_type {
            User::TYPE => Self::User,
            Conversation::TYPE => Self::Conversation,
            Message::TYPE => Self::Message,
            MemberState::TYPE => Self::Member,
            Inbox::TYPE => Self::Inbox,
            NameClaim::TYPE => Self::Name,
            Upload::TYPE => Self::Upload,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    User(UserEvent),
    Conversation(ConversationEvent),
    Message(MessageEvent),
    Member(MemberEvent),
    Inbox(InboxEvent),
    Name(NameEvent),
    Upload(UploadEvent),
}

impl Event {
    /// Decodes a stored payload by the type of the aggregate that wrote it (its
    /// `Aggregate::TYPE`); `None` for a type this release does not know.
    pub fn decode(
        aggregate_type: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<Self>, serde_json::Error> {
        EventKind::of(aggregate_type)
            .map(|kind| Self::decode_as(kind, payload))
            .transpose()
    }

    /// [`Event::decode`] straight from the payload's JSON text, without building a
    /// `serde_json::Value` on the way: most of the cost of reading the log was building
    /// and freeing those trees.
    pub fn decode_text(
        aggregate_type: &str,
        payload: &str,
    ) -> Result<Option<Self>, serde_json::Error> {
        let Some(kind) = EventKind::of(aggregate_type) else {
            return Ok(None);
        };
        let mut text = serde_json::Deserializer::from_str(payload);
        let event = Self::decode_as(kind, &mut text)?;
        text.end()?;
        Ok(Some(event))
    }

    fn decode_as<'de, D: serde::Deserializer<'de>>(
        kind: EventKind,
        payload: D,
    ) -> Result<Self, D::Error> {
        Ok(match kind {
            EventKind::User => Self::User(Deserialize::deserialize(payload)?),
            EventKind::Conversation => Self::Conversation(Deserialize::deserialize(payload)?),
            EventKind::Message => Self::Message(Deserialize::deserialize(payload)?),
            EventKind::Member => Self::Member(Deserialize::deserialize(payload)?),
            EventKind::Inbox => Self::Inbox(Deserialize::deserialize(payload)?),
            EventKind::Name => Self::Name(Deserialize::deserialize(payload)?),
            EventKind::Upload => Self::Upload(Deserialize::deserialize(payload)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_by_its_aggregate_type() {
        let payload = serde_json::json!({ "NameReleased": { "owner_id": "00000000-0000-0000-0000-000000000001", "released_at": "2026-01-01T00:00:00Z" } });
        assert!(matches!(
            Event::decode("NameClaim", &payload),
            Ok(Some(Event::Name(NameEvent::NameReleased { .. })))
        ));
        assert!(Event::decode("User", &payload).is_err());
        assert_eq!(Event::decode("Unknown", &payload).ok(), Some(None));
    }

    #[test]
    fn a_record_decodes_the_same_from_its_text() {
        let payload = serde_json::json!({ "NameReleased": { "owner_id": "00000000-0000-0000-0000-000000000001", "released_at": "2026-01-01T00:00:00Z" } });
        let text = payload.to_string();
        assert_eq!(
            Event::decode_text("NameClaim", &text).ok(),
            Event::decode("NameClaim", &payload).ok()
        );
        assert!(Event::decode_text("NameClaim", &text).is_ok_and(|event| event.is_some()));
        assert!(Event::decode_text("User", &text).is_err());
        assert!(Event::decode_text("NameClaim", &format!("{text} {{}}")).is_err());
        assert_eq!(Event::decode_text("Unknown", "not json").ok(), Some(None));
    }
}
