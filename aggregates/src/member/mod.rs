//! The `MemberState` aggregate, one per member and conversation (id
//! `conversation:user`): the read marker and the notification level. Kept apart from
//! the conversation so marking read never contends with posting.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationLevel {
    All,
    Mentions,
    None,
}

impl NotificationLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "ALL",
            Self::Mentions => "MENTIONS",
            Self::None => "NONE",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ALL" => Some(Self::All),
            "MENTIONS" => Some(Self::Mentions),
            "NONE" => Some(Self::None),
            _ => None,
        }
    }
}

pub fn member_state_id(conversation_id: Uuid, user_id: Uuid) -> String {
    format!("{conversation_id}:{user_id}")
}

#[derive(Debug, Clone)]
pub enum MemberCommand {
    /// Moves the marker forward to `seq`; `current_seq` is the marker as the read model
    /// knows it (it also moves when the member posts).
    MarkRead {
        conversation_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        seq: u64,
        current_seq: u64,
        at: OffsetDateTime,
    },
    /// Moves the marker to just before `seq`, backwards if need be.
    MarkUnread {
        conversation_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        seq: u64,
        at: OffsetDateTime,
    },
    SetNotificationLevel {
        conversation_id: Uuid,
        user_id: Uuid,
        level: NotificationLevel,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberEvent {
    ReadMarkerMoved {
        conversation_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        seq: u64,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    MarkedUnread {
        conversation_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        /// The marker's new place: just before the message.
        seq: u64,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    NotificationLevelSet {
        conversation_id: Uuid,
        user_id: Uuid,
        level: NotificationLevel,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for MemberEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ReadMarkerMoved { .. } => "ReadMarkerMoved",
            Self::MarkedUnread { .. } => "MarkedUnread",
            Self::NotificationLevelSet { .. } => "NotificationLevelSet",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub read_seq: u64,
    pub level: Option<NotificationLevel>,
}

impl Aggregate for MemberState {
    const TYPE: &'static str = "MemberState";
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = MemberError;
    type Services = ();

    async fn handle(
        &mut self,
        command: MemberCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), MemberError> {
        let event = match command {
            MemberCommand::MarkRead {
                conversation_id,
                user_id,
                message_id,
                seq,
                current_seq,
                at,
            } => {
                // Forward only: an older message succeeds and changes nothing.
                if seq <= current_seq {
                    return Ok(());
                }
                MemberEvent::ReadMarkerMoved {
                    conversation_id,
                    user_id,
                    message_id,
                    seq,
                    at,
                }
            }
            MemberCommand::MarkUnread {
                conversation_id,
                user_id,
                message_id,
                seq,
                at,
            } => MemberEvent::MarkedUnread {
                conversation_id,
                user_id,
                message_id,
                seq: seq.saturating_sub(1),
                at,
            },
            MemberCommand::SetNotificationLevel {
                conversation_id,
                user_id,
                level,
                at,
            } => {
                if self.level == Some(level) {
                    return Ok(());
                }
                MemberEvent::NotificationLevelSet {
                    conversation_id,
                    user_id,
                    level,
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: MemberEvent) {
        match event {
            MemberEvent::ReadMarkerMoved { seq, .. } | MemberEvent::MarkedUnread { seq, .. } => {
                self.read_seq = seq;
            }
            MemberEvent::NotificationLevelSet { level, .. } => self.level = Some(level),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);
    const CONV: Uuid = Uuid::from_u128(0xC0);
    const BOB: Uuid = Uuid::from_u128(2);
    const MSG: Uuid = Uuid::from_u128(0x10);

    #[tokio::test]
    async fn the_read_marker_moves_forward_only() {
        let mark = |seq, current_seq| MemberCommand::MarkRead {
            conversation_id: CONV,
            user_id: BOB,
            message_id: MSG,
            seq,
            current_seq,
            at: NOW,
        };
        TestFramework::<MemberState>::with(())
            .given_no_previous_events()
            .when_async(mark(5, 3))
            .await
            .then_expect_events(vec![MemberEvent::ReadMarkerMoved {
                conversation_id: CONV,
                user_id: BOB,
                message_id: MSG,
                seq: 5,
                at: NOW,
            }]);
        for (seq, current) in [(3, 5), (5, 5)] {
            TestFramework::<MemberState>::with(())
                .given_no_previous_events()
                .when_async(mark(seq, current))
                .await
                .then_expect_events(vec![]);
        }
    }

    #[tokio::test]
    async fn marking_unread_moves_the_marker_to_just_before_the_message() {
        TestFramework::<MemberState>::with(())
            .given_no_previous_events()
            .when_async(MemberCommand::MarkUnread {
                conversation_id: CONV,
                user_id: BOB,
                message_id: MSG,
                seq: 4,
                at: NOW,
            })
            .await
            .then_expect_events(vec![MemberEvent::MarkedUnread {
                conversation_id: CONV,
                user_id: BOB,
                message_id: MSG,
                seq: 3,
                at: NOW,
            }]);
    }

    #[tokio::test]
    async fn setting_the_same_notification_level_again_changes_nothing() {
        let set = |level| MemberCommand::SetNotificationLevel {
            conversation_id: CONV,
            user_id: BOB,
            level,
            at: NOW,
        };
        let set_event = MemberEvent::NotificationLevelSet {
            conversation_id: CONV,
            user_id: BOB,
            level: NotificationLevel::Mentions,
            at: NOW,
        };
        TestFramework::<MemberState>::with(())
            .given_no_previous_events()
            .when_async(set(NotificationLevel::Mentions))
            .await
            .then_expect_events(vec![set_event.clone()]);
        TestFramework::<MemberState>::with(())
            .given(vec![set_event])
            .when_async(set(NotificationLevel::Mentions))
            .await
            .then_expect_events(vec![]);
    }
}
