//! How a conversation decides on creation, membership, details, invitations and posts
//! (moderation is in `moderation.rs`). Each method checks the rules and returns the
//! events to record; `apply` alone changes the state.

use super::aggregate::{fingerprint, ClientRecord, CLIENT_ID_RETENTION};
use super::commands::{ConversationServices, MemberRef, ReplyTarget};
use super::events::{ConversationKind, InitialMember, Visibility};
use super::mentions::{mentions_in, Named};
use crate::policy::{Action, Role};
use crate::values::{parse_description, InputError, MessageBody, Slug, Title};
use time::OffsetDateTime;
use uuid::Uuid;

use super::aggregate::{Conversation, Decision};
use super::error::ConversationError;
use super::events::ConversationEvent;

/// The longest retention window: a hundred years is "forever" said explicitly.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Conversation {
    /// A direct conversation between two users, both plain members.
    pub(super) fn create_direct(
        &self,
        conversation_id: Uuid,
        creator: MemberRef,
        other: MemberRef,
        at: OffsetDateTime,
    ) -> Decision {
        if creator.user_id == other.user_id {
            return Err(
                InputError::new("userId", "cannot start a conversation with yourself").into(),
            );
        }
        let members = [&creator, &other]
            .into_iter()
            .map(|member| InitialMember {
                user_id: member.user_id,
                role: Role::Member,
            })
            .collect();
        Ok(vec![ConversationEvent::ConversationCreated {
            conversation_id,
            kind: ConversationKind::Direct,
            title: None,
            slug: None,
            description: None,
            visibility: Visibility::Private,
            creator_id: creator.user_id,
            members,
            created_at: at,
        }])
    }

    /// A group: the creator owns it, the members named join it once each.
    pub(super) fn create_group(
        &self,
        conversation_id: Uuid,
        services: &ConversationServices,
        creator: MemberRef,
        title: String,
        members: Vec<MemberRef>,
        at: OffsetDateTime,
    ) -> Decision {
        let title = Title::parse(&title, "title")?;
        let mut initial = vec![InitialMember {
            user_id: creator.user_id,
            role: Role::Owner,
        }];
        for member in members {
            if initial.iter().all(|m| m.user_id != member.user_id) {
                initial.push(InitialMember {
                    user_id: member.user_id,
                    role: Role::Member,
                });
            }
        }
        let limit = services
            .max_group_invites
            .min(services.max_members.saturating_sub(1));
        if initial.len() - 1 > limit {
            return Err(
                InputError::new("memberIds", format!("may list at most {limit} members")).into(),
            );
        }
        Ok(vec![ConversationEvent::ConversationCreated {
            conversation_id,
            kind: ConversationKind::Group,
            title: Some(title.as_str().to_owned()),
            slug: None,
            description: None,
            visibility: Visibility::Private,
            creator_id: creator.user_id,
            members: initial,
            created_at: at,
        }])
    }

    /// A channel under a slug already claimed for it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_channel(
        &self,
        conversation_id: Uuid,
        creator: MemberRef,
        name: String,
        slug: Slug,
        description: Option<String>,
        visibility: Visibility,
        at: OffsetDateTime,
    ) -> Decision {
        let name = Title::parse(&name, "name")?;
        let description = description
            .map(|d| parse_description(&d, "description"))
            .transpose()?;
        let members = vec![InitialMember {
            user_id: creator.user_id,
            role: Role::Owner,
        }];
        Ok(vec![ConversationEvent::ConversationCreated {
            conversation_id,
            kind: ConversationKind::Channel,
            title: Some(name.as_str().to_owned()),
            slug: Some(slug.as_str().to_owned()),
            description,
            visibility,
            creator_id: creator.user_id,
            members,
            created_at: at,
        }])
    }

    /// Joining a public channel; a member joining again changes nothing.
    pub(super) fn join(
        &self,
        services: &ConversationServices,
        user: MemberRef,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        if self.members.contains_key(&user.user_id) {
            return Ok(Vec::new());
        }
        if self.is_banned(user.user_id, at) {
            return Err(ConversationError::Banned);
        }
        if self.kind != Some(ConversationKind::Channel)
            || self.visibility != Some(Visibility::Public)
        {
            return Err(ConversationError::NotPublic);
        }
        self.require_room(services)?;
        Ok(vec![ConversationEvent::MemberJoined {
            conversation_id: id,
            user_id: user.user_id,
            role: Role::Member,
            invitation_id: None,
            last_seq: self.last_seq,
            joined_at: at,
        }])
    }

    /// Leaving; the last owner hands over first, and direct conversations are not left.
    pub(super) fn leave(&self, user_id: Uuid, at: OffsetDateTime) -> Decision {
        let id = self.id()?;
        let role = self.role_of(user_id)?;
        if self.is_direct() {
            return Err(ConversationError::NotAllowed(
                "direct conversations cannot be left",
            ));
        }
        let owners = self
            .members
            .values()
            .filter(|m| m.role == Role::Owner)
            .count();
        if role == Role::Owner && owners == 1 && self.members.len() > 1 {
            return Err(ConversationError::NotAllowed(
                "the last owner must transfer ownership before leaving",
            ));
        }
        Ok(vec![ConversationEvent::MemberLeft {
            conversation_id: id,
            user_id,
            left_at: at,
        }])
    }

    /// New details, by an owner or admin.
    pub(super) fn update(
        &self,
        actor_id: Uuid,
        title: Option<String>,
        description: Option<String>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        if self.is_direct() {
            return Err(ConversationError::NotAllowed(
                "direct conversations have no details to change",
            ));
        }
        self.require(actor_id, Action::UpdateDetails)?;
        let field = if self.kind == Some(ConversationKind::Channel) {
            "name"
        } else {
            "title"
        };
        let title = title
            .map(|t| Title::parse(&t, field).map(|t| t.as_str().to_owned()))
            .transpose()
            .map_err(|e| InputError::new("title", e.message))?;
        let description = description
            .map(|d| parse_description(&d, "description"))
            .transpose()?;
        if title.is_none() && description.is_none() {
            return Err(InputError::new("title", "give a title or a description to change").into());
        }
        Ok(vec![ConversationEvent::ConversationUpdated {
            conversation_id: id,
            title,
            description,
            updated_by: actor_id,
            updated_at: at,
        }])
    }

    /// A retention window, by an owner or admin: 1 to [`MAX_RETENTION_DAYS`] days, or
    /// `None` for the server's default.
    pub(super) fn set_retention(
        &self,
        actor_id: Uuid,
        days: Option<i64>,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        if self.is_direct() {
            return Err(ConversationError::NotAllowed(
                "direct conversations keep the server's retention",
            ));
        }
        self.require(actor_id, Action::UpdateDetails)?;
        let days = days
            .map(|days| {
                u32::try_from(days)
                    .ok()
                    .filter(|days| (1..=MAX_RETENTION_DAYS).contains(days))
                    .ok_or_else(|| {
                        InputError::new(
                            "days",
                            format!("must be between 1 and {MAX_RETENTION_DAYS}, or null"),
                        )
                    })
            })
            .transpose()?;
        if days == self.retention_days {
            return Ok(Vec::new());
        }
        Ok(vec![ConversationEvent::RetentionSet {
            conversation_id: id,
            days,
            set_by: actor_id,
            set_at: at,
        }])
    }

    /// Records an expiry, unless one at least as late is recorded already.
    pub(super) fn expire(&self, before: OffsetDateTime, at: OffsetDateTime) -> Decision {
        let id = self.id()?;
        if self.expired_before.is_some_and(|done| done >= before) {
            return Ok(Vec::new());
        }
        Ok(vec![ConversationEvent::MessagesExpired {
            conversation_id: id,
            before,
            expired_at: at,
        }])
    }

    /// An invitation, which holds a seat until answered.
    pub(super) fn invite(
        &self,
        services: &ConversationServices,
        invitation_id: Uuid,
        inviter_id: Uuid,
        invitee: MemberRef,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        if self.is_direct() {
            return Err(ConversationError::NotAllowed(
                "nobody can be invited to a direct conversation",
            ));
        }
        self.require(inviter_id, Action::Invite)?;
        if self.members.contains_key(&invitee.user_id) {
            return Err(ConversationError::AlreadyMember);
        }
        if self.is_banned(invitee.user_id, at) {
            return Err(ConversationError::TargetBanned);
        }
        if self
            .pending
            .values()
            .any(|p| p.invitee_id == invitee.user_id)
        {
            return Err(ConversationError::AlreadyInvited);
        }
        self.require_room(services)?;
        Ok(vec![ConversationEvent::InvitationSent {
            conversation_id: id,
            invitation_id,
            inviter_id,
            invitee_id: invitee.user_id,
            sent_at: at,
        }])
    }

    /// The invitee accepts and joins.
    pub(super) fn accept_invitation(
        &self,
        invitation_id: Uuid,
        user: MemberRef,
        at: OffsetDateTime,
    ) -> Decision {
        let mut events = Vec::new();
        let id = self.id()?;
        let pending = self
            .pending
            .get(&invitation_id)
            .ok_or(ConversationError::InvitationNotPending)?;
        if pending.invitee_id != user.user_id {
            return Err(ConversationError::NotInvitee);
        }
        if self.is_banned(user.user_id, at) {
            return Err(ConversationError::Banned);
        }
        events.push(ConversationEvent::InvitationAccepted {
            conversation_id: id,
            invitation_id,
            invitee_id: user.user_id,
            accepted_at: at,
        });
        events.push(ConversationEvent::MemberJoined {
            conversation_id: id,
            user_id: user.user_id,
            role: Role::Member,
            invitation_id: Some(invitation_id),
            last_seq: self.last_seq,
            joined_at: at,
        });
        Ok(events)
    }

    /// The invitee declines.
    pub(super) fn decline_invitation(
        &self,
        invitation_id: Uuid,
        user_id: Uuid,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        let pending = self
            .pending
            .get(&invitation_id)
            .ok_or(ConversationError::InvitationNotPending)?;
        if pending.invitee_id != user_id {
            return Err(ConversationError::NotInvitee);
        }
        Ok(vec![ConversationEvent::InvitationDeclined {
            conversation_id: id,
            invitation_id,
            invitee_id: user_id,
            declined_at: at,
        }])
    }

    /// The inviter or an admin withdraws an invitation.
    pub(super) fn revoke_invitation(
        &self,
        invitation_id: Uuid,
        actor_id: Uuid,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        let pending = self
            .pending
            .get(&invitation_id)
            .ok_or(ConversationError::InvitationNotPending)?;
        let role = self.role_of(actor_id)?;
        if pending.inviter_id != actor_id && role < Role::Admin {
            return Err(ConversationError::NotAllowed(
                "only the inviter or an admin can revoke an invitation",
            ));
        }
        Ok(vec![ConversationEvent::InvitationRevoked {
            conversation_id: id,
            invitation_id,
            invitee_id: pending.invitee_id,
            revoked_by: actor_id,
            revoked_at: at,
        }])
    }

    /// A message: the next `seq`, mentions resolved among members, retries recognised by `clientMessageId`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn post_message(
        &self,
        services: &ConversationServices,
        message_id: Uuid,
        author_id: Uuid,
        body: String,
        reply_to: Option<ReplyTarget>,
        client_message_id: Option<String>,
        earlier: Option<ClientRecord>,
        attachment_ids: Vec<Uuid>,
        named: &Named,
        at: OffsetDateTime,
    ) -> Decision {
        let id = self.id()?;
        self.require(author_id, Action::Post)?;
        if self.is_muted(author_id, at) {
            return Err(ConversationError::Muted);
        }
        let body = MessageBody::parse(&body, "body", services.max_body_chars)?;
        if let Some(ReplyTarget {
            conversation_id, ..
        }) = &reply_to
        {
            if *conversation_id != id {
                return Err(InputError::new(
                    "replyToId",
                    "must be a message of the same conversation",
                )
                .into());
            }
        }
        let reply_to_id = reply_to.as_ref().map(|r| r.message_id);
        // Remembered for a week: a retry is recognised, and an old id may be used again.
        if client_message_id.is_some() {
            if let Some(record) = earlier.filter(|r| r.posted_at > at - CLIENT_ID_RETENTION) {
                let same =
                    record.fingerprint == fingerprint(body.as_str(), reply_to_id, &attachment_ids);
                return Err(if same {
                    ConversationError::AlreadyPosted {
                        message_id: record.message_id,
                    }
                } else {
                    ConversationError::ClientMessageIdReused
                });
            }
        }
        let mentions = mentions_in(
            body.as_str(),
            named,
            |user_id| self.members.contains_key(user_id),
            author_id,
        );
        Ok(vec![ConversationEvent::MessagePosted {
            conversation_id: id,
            message_id,
            seq: self.last_seq + 1,
            author_id,
            body: body.into_string(),
            format: "PLAIN".to_owned(),
            reply_to_id,
            reply_to_author_id: reply_to.map(|r| r.author_id),
            mentions: mentions.into_iter().collect(),
            client_message_id,
            attachment_ids,
            posted_at: at,
        }])
    }
}
