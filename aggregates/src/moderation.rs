//! Moderation actions as the log records them: which events are moderation, and what
//! each says (who did what to whom, why, until when). The one mapping the moderation
//! read model and the auditors' replay both use.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::conversation::ConversationEvent;
use crate::message::MessageEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModerationKind {
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    DeleteMessage,
    RoleChange,
    OwnershipTransfer,
}

impl ModerationKind {
    /// The name the API and read models use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kick => "KICK",
            Self::Ban => "BAN",
            Self::Unban => "UNBAN",
            Self::Mute => "MUTE",
            Self::Unmute => "UNMUTE",
            Self::DeleteMessage => "DELETE_MESSAGE",
            Self::RoleChange => "ROLE_CHANGE",
            Self::OwnershipTransfer => "OWNERSHIP_TRANSFER",
        }
    }
}

/// One moderation action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationAction<'a> {
    /// The action's own id; `None` for a deletion, which the event's id names.
    pub action_id: Option<Uuid>,
    pub conversation_id: Uuid,
    pub kind: ModerationKind,
    pub actor_id: Uuid,
    pub target_id: Uuid,
    /// The deleted message, for `DeleteMessage`.
    pub message_id: Option<Uuid>,
    pub reason: Option<&'a str>,
    /// For bans and mutes: until when (`Some(None)`: indefinitely); `None` otherwise.
    pub until: Option<Option<OffsetDateTime>>,
    pub at: OffsetDateTime,
}

impl ConversationEvent {
    /// The moderation action this event records, if it is one.
    pub fn moderation_action(&self) -> Option<ModerationAction<'_>> {
        #[allow(clippy::too_many_arguments)]
        fn person<'a>(
            kind: ModerationKind,
            conversation_id: &Uuid,
            action_id: &Uuid,
            actor_id: &Uuid,
            user_id: &Uuid,
            reason: Option<&'a String>,
            until: Option<Option<OffsetDateTime>>,
            at: &OffsetDateTime,
        ) -> ModerationAction<'a> {
            ModerationAction {
                action_id: Some(*action_id),
                conversation_id: *conversation_id,
                kind,
                actor_id: *actor_id,
                target_id: *user_id,
                message_id: None,
                reason: reason.map(String::as_str),
                until,
                at: *at,
            }
        }
        Some(match self {
            Self::MemberRoleChanged {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                changed_at,
                ..
            } => person(
                ModerationKind::RoleChange,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason.as_ref(),
                None,
                changed_at,
            ),
            Self::OwnershipTransferred {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                transferred_at,
            } => person(
                ModerationKind::OwnershipTransfer,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason.as_ref(),
                None,
                transferred_at,
            ),
            Self::MemberKicked {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                kicked_at,
            } => person(
                ModerationKind::Kick,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                Some(reason),
                None,
                kicked_at,
            ),
            Self::MemberBanned {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                banned_at,
            } => person(
                ModerationKind::Ban,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                Some(reason),
                Some(*until),
                banned_at,
            ),
            Self::MemberUnbanned {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                unbanned_at,
            } => person(
                ModerationKind::Unban,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason.as_ref(),
                None,
                unbanned_at,
            ),
            Self::MemberMuted {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                muted_at,
            } => person(
                ModerationKind::Mute,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                Some(reason),
                Some(*until),
                muted_at,
            ),
            Self::MemberUnmuted {
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason,
                unmuted_at,
            } => person(
                ModerationKind::Unmute,
                conversation_id,
                action_id,
                actor_id,
                user_id,
                reason.as_ref(),
                None,
                unmuted_at,
            ),
            _ => return None,
        })
    }
}

impl MessageEvent {
    /// A moderator's deletion of someone else's message; the author deleting their own
    /// is not moderation.
    pub fn moderation_action(&self) -> Option<ModerationAction<'_>> {
        match self {
            Self::MessageDeleted {
                message_id,
                conversation_id,
                author_id,
                deleted_by,
                reason,
                deleted_at,
                ..
            } if deleted_by != author_id => Some(ModerationAction {
                action_id: None,
                conversation_id: *conversation_id,
                kind: ModerationKind::DeleteMessage,
                actor_id: *deleted_by,
                target_id: *author_id,
                message_id: Some(*message_id),
                reason: reason.as_deref(),
                until: None,
                at: *deleted_at,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const AT: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);

    #[test]
    fn bans_carry_their_end_and_memberships_are_not_moderation() {
        let ban = ConversationEvent::MemberBanned {
            conversation_id: Uuid::from_u128(1),
            action_id: Uuid::from_u128(2),
            actor_id: Uuid::from_u128(3),
            user_id: Uuid::from_u128(4),
            reason: "spam".to_owned(),
            until: None,
            banned_at: AT,
        };
        let action = ban.moderation_action().expect("a ban is moderation");
        assert_eq!(action.kind.as_str(), "BAN");
        assert_eq!(action.until, Some(None));
        assert_eq!(action.reason, Some("spam"));
        let left = ConversationEvent::MemberLeft {
            conversation_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(4),
            left_at: AT,
        };
        assert_eq!(left.moderation_action(), None);
    }

    #[test]
    fn only_deleting_someone_elses_message_is_moderation() {
        let deleted = |by: u128| MessageEvent::MessageDeleted {
            message_id: Uuid::from_u128(9),
            conversation_id: Uuid::from_u128(1),
            author_id: Uuid::from_u128(4),
            seq: 1,
            deleted_by: Uuid::from_u128(by),
            reason: Some("off topic".to_owned()),
            deleted_at: AT,
        };
        assert_eq!(deleted(4).moderation_action(), None);
        let by_moderator = deleted(3);
        let action = by_moderator.moderation_action().expect("moderation");
        assert_eq!(action.kind, ModerationKind::DeleteMessage);
        assert_eq!(action.message_id, Some(Uuid::from_u128(9)));
    }
}
