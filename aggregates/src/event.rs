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
        fn read<'a, E: Deserialize<'a>>(
            payload: &'a serde_json::Value,
        ) -> Result<E, serde_json::Error> {
            E::deserialize(payload)
        }
        let Some(kind) = EventKind::of(aggregate_type) else {
            return Ok(None);
        };
        Ok(Some(match kind {
            EventKind::User => Self::User(read(payload)?),
            EventKind::Conversation => Self::Conversation(read(payload)?),
            EventKind::Message => Self::Message(read(payload)?),
            EventKind::Member => Self::Member(read(payload)?),
            EventKind::Inbox => Self::Inbox(read(payload)?),
            EventKind::Name => Self::Name(read(payload)?),
            EventKind::Upload => Self::Upload(read(payload)?),
        }))
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
}
