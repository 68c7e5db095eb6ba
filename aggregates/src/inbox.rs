//! The `Inbox` aggregate, one per user: which notifications the user has read. Read
//! flags are facts like any other, so they are events; the notifications projector
//! applies them.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub enum InboxCommand {
    /// `unread`: those of the ids the client gave that are the user's own unread
    /// notifications, as the command service found them; nothing else is recorded.
    MarkRead {
        user_id: Uuid,
        unread: Vec<Uuid>,
        at: OffsetDateTime,
    },
    /// `unread`: how many of the user's notifications are unread now.
    MarkAllRead {
        user_id: Uuid,
        unread: u64,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboxEvent {
    NotificationsRead {
        user_id: Uuid,
        notification_ids: Vec<String>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Every notification created up to `at` is read.
    AllNotificationsRead {
        user_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for InboxEvent {
    fn event_type(&self) -> String {
        match self {
            Self::NotificationsRead { .. } => "NotificationsRead",
            Self::AllNotificationsRead { .. } => "AllNotificationsRead",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbox;

impl Aggregate for Inbox {
    const TYPE: &'static str = "Inbox";
    type Command = InboxCommand;
    type Event = InboxEvent;
    type Error = InboxError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InboxCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), InboxError> {
        let event = match command {
            // A command that changes nothing records nothing.
            InboxCommand::MarkRead {
                user_id,
                unread,
                at,
            } => {
                if unread.is_empty() {
                    return Ok(());
                }
                InboxEvent::NotificationsRead {
                    user_id,
                    notification_ids: unread.iter().map(Uuid::to_string).collect(),
                    at,
                }
            }
            InboxCommand::MarkAllRead {
                user_id,
                unread,
                at,
            } => {
                if unread == 0 {
                    return Ok(());
                }
                InboxEvent::AllNotificationsRead { user_id, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, _event: InboxEvent) {}
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    use super::*;

    #[tokio::test]
    async fn marking_nothing_read_records_nothing() {
        let at = datetime!(2026-03-01 9:00 UTC);
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when_async(InboxCommand::MarkRead {
                user_id: Uuid::from_u128(1),
                unread: vec![],
                at,
            })
            .await
            .then_expect_events(vec![]);
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when_async(InboxCommand::MarkAllRead {
                user_id: Uuid::from_u128(1),
                unread: 0,
                at,
            })
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn marking_read_records_the_unread_ids() {
        let at = datetime!(2026-03-01 9:00 UTC);
        let n1 = Uuid::from_u128(0x11);
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when_async(InboxCommand::MarkRead {
                user_id: Uuid::from_u128(1),
                unread: vec![n1],
                at,
            })
            .await
            .then_expect_events(vec![InboxEvent::NotificationsRead {
                user_id: Uuid::from_u128(1),
                notification_ids: vec![n1.to_string()],
                at,
            }]);
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when_async(InboxCommand::MarkAllRead {
                user_id: Uuid::from_u128(1),
                unread: 3,
                at,
            })
            .await
            .then_expect_events(vec![InboxEvent::AllNotificationsRead {
                user_id: Uuid::from_u128(1),
                at,
            }]);
    }
}
