//! How a conversation decides on moderation: roles, ownership, kicks, bans and mutes.
//! Who may moderate whom is `Conversation::moderate`; expiry compares each `until` with
//! the command's time.

use super::aggregate::require_future;
use crate::policy::Role;
use crate::values::{parse_reason, InputError};
use time::OffsetDateTime;
use uuid::Uuid;

use super::aggregate::{Conversation, Decision};
use super::error::ConversationError;
use super::events::ConversationEvent;

impl Conversation {
    /// The owner makes a member an admin or an admin a member.
    pub(super) fn set_member_role(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        role: Role,
        reason: Option<String>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.require_owner(actor_id)?;
        let from = self
            .members
            .get(&user_id)
            .map(|m| m.role)
            .ok_or(ConversationError::TargetNotMember)?;
        if role == Role::Owner || from == Role::Owner {
            return Err(
                InputError::new("role", "ownership changes hands with transferOwnership").into(),
            );
        }
        let reason = parse_reason(reason.as_deref(), false)?;
        if from == role {
            return Err(InputError::new("role", "the member already has this role").into());
        }
        Ok(vec![ConversationEvent::MemberRoleChanged {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            from,
            to: role,
            reason,
            changed_at: at,
        }])
    }

    /// The owner hands over; they become an admin.
    pub(super) fn transfer_ownership(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.require_owner(actor_id)?;
        if actor_id == user_id {
            return Err(InputError::new("userId", "you already own this conversation").into());
        }
        if !self.members.contains_key(&user_id) {
            return Err(ConversationError::TargetNotMember);
        }
        Ok(vec![ConversationEvent::OwnershipTransferred {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            reason: parse_reason(reason.as_deref(), false)?,
            transferred_at: at,
        }])
    }

    /// A moderator removes a member (who may come back).
    pub(super) fn kick(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.moderate(actor_id, user_id)?;
        let reason = parse_reason(Some(&reason), true)?.unwrap_or_default();
        if !self.members.contains_key(&user_id) {
            return Err(ConversationError::TargetNotMember);
        }
        Ok(vec![ConversationEvent::MemberKicked {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            reason,
            kicked_at: at,
        }])
    }

    /// A moderator bans a user (member or not) until `until`, withdrawing their invitations.
    pub(super) fn ban(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Decision {
        let mut events = Vec::new();
        let id = self.id()?;
        self.moderate(actor_id, user_id)?;
        let reason = parse_reason(Some(&reason), true)?.unwrap_or_default();
        require_future(until, at)?;
        // A ban also withdraws the user's pending invitations.
        let pending: Vec<Uuid> = self
            .pending
            .iter()
            .filter(|(_, p)| p.invitee_id == user_id)
            .map(|(invitation_id, _)| *invitation_id)
            .collect();
        for invitation_id in pending {
            events.push(ConversationEvent::InvitationRevoked {
                conversation_id: id,
                invitation_id,
                invitee_id: user_id,
                revoked_by: actor_id,
                revoked_at: at,
            });
        }
        events.push(ConversationEvent::MemberBanned {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            reason,
            until,
            banned_at: at,
        });
        Ok(events)
    }

    /// A moderator lifts a ban in force.
    pub(super) fn unban(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.moderate(actor_id, user_id)?;
        if !self.is_banned(user_id, at) {
            return Err(ConversationError::NotBanned);
        }
        Ok(vec![ConversationEvent::MemberUnbanned {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            reason: parse_reason(reason.as_deref(), false)?,
            unbanned_at: at,
        }])
    }

    /// A moderator mutes a member until `until`.
    pub(super) fn mute(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.moderate(actor_id, user_id)?;
        let reason = parse_reason(Some(&reason), true)?.unwrap_or_default();
        require_future(until, at)?;
        if !self.members.contains_key(&user_id) {
            return Err(ConversationError::TargetNotMember);
        }
        Ok(vec![ConversationEvent::MemberMuted {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            reason,
            until,
            muted_at: at,
        }])
    }

    /// A moderator lifts a mute in force.
    pub(super) fn unmute(
        &self,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.moderate(actor_id, user_id)?;
        if !self.is_muted(user_id, at) {
            return Err(ConversationError::NotMuted);
        }
        Ok(vec![ConversationEvent::MemberUnmuted {
            conversation_id: id,
            action_id,
            actor_id,
            user_id,
            reason: parse_reason(reason.as_deref(), false)?,
            unmuted_at: at,
        }])
    }
}
