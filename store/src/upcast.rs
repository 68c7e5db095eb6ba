//! Upcasters: how older stored shapes of events become today's. One list, applied both
//! when an aggregate loads its stream (the command bus) and when a log record decodes
//! to a typed event (readers of the log), so both always see the same shape.

use std::sync::LazyLock;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use parley_aggregates::conversation::ConversationEvent;
use serde_json::Value;

/// Every upcaster of this release, oldest shape first.
pub fn registered() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(NamelessMembers)]
}

/// Version 1 of `ConversationCreated` and `MemberJoined` named members by `username`;
/// version 2 names them by id alone, so that no conversation (its state, snapshots and
/// events) holds a name an erasure must be able to remove. Reading version 1 drops the
/// names: no reader of the log sees them, though the stored bytes keep them.
struct NamelessMembers;

impl EventUpcaster for NamelessMembers {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_version == "1" && ConversationEvent::NAMELESS.contains(&event_type)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = event
            .payload
            .get_mut(&event.event_type)
            .and_then(Value::as_object_mut)
        {
            fields.remove("username");
            if let Some(Value::Array(members)) = fields.get_mut("members") {
                for member in members.iter_mut().filter_map(Value::as_object_mut) {
                    member.remove("username");
                }
            }
        }
        event.event_version = "2".to_owned();
        event
    }
}

static REGISTERED: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(registered);

/// `event` in today's shape, through each upcaster that takes it.
pub fn upcast(event: SerializedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

/// The registered upcasters, for decoding log records.
pub fn all() -> &'static [Box<dyn EventUpcaster>] {
    &REGISTERED
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rename;

    impl EventUpcaster for Rename {
        fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
            event_type == "Old" && event_version == "1"
        }

        fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
            event.event_type = "New".to_owned();
            event.event_version = "2".to_owned();
            event
        }
    }

    #[test]
    fn only_the_shapes_an_upcaster_takes_change() {
        let event = |event_type: &str| SerializedEvent {
            aggregate_id: "a".to_owned(),
            sequence: 1,
            aggregate_type: "T".to_owned(),
            event_type: event_type.to_owned(),
            event_version: "1".to_owned(),
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
        };
        let upcasters: Vec<Box<dyn EventUpcaster>> = vec![Box::new(Rename)];
        assert_eq!(upcast(event("Old"), &upcasters).event_type, "New");
        assert_eq!(upcast(event("Other"), &upcasters).event_type, "Other");
    }

    #[test]
    fn version_1_members_lose_their_names_and_read_as_version_2() {
        let user = uuid::Uuid::from_u128(7);
        let at = "2026-01-02T03:04:05Z";
        let v1 = |event_type: &str, fields: Value| SerializedEvent {
            aggregate_id: "c".to_owned(),
            sequence: 1,
            aggregate_type: "Conversation".to_owned(),
            event_type: event_type.to_owned(),
            event_version: "1".to_owned(),
            payload: serde_json::json!({ event_type: fields }),
            metadata: serde_json::json!({}),
        };
        let created = v1(
            "ConversationCreated",
            serde_json::json!({
                "conversation_id": user, "kind": "Group", "title": "t", "slug": null,
                "description": null, "visibility": "Private", "creator_id": user,
                "members": [{ "user_id": user, "username": "alice", "role": "Owner" }],
                "created_at": at,
            }),
        );
        let joined = v1(
            "MemberJoined",
            serde_json::json!({
                "conversation_id": user, "user_id": user, "username": "alice",
                "role": "Member", "invitation_id": null, "last_seq": 0, "joined_at": at,
            }),
        );
        for event in [created, joined] {
            let upcast = upcast(event, all());
            assert_eq!(upcast.event_version, "2");
            assert!(
                !upcast.payload.to_string().contains("alice"),
                "{}",
                upcast.payload
            );
            let decoded: ConversationEvent =
                serde_json::from_value(upcast.payload).expect("today's shape");
            assert_eq!(
                cqrs_es::DomainEvent::event_version(&decoded),
                upcast.event_version
            );
        }
    }
}
