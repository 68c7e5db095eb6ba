use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::commands::{ConversationCommand, ConversationServices};
use super::error::ConversationError;
use super::events::{ConversationEvent, ConversationKind, Visibility};
use crate::policy::{allows, Action, Role};
use crate::values::parse_client_message_id;
use crate::values::InputError;

/// How long a `clientMessageId` is remembered for deduplication.
pub const CLIENT_ID_RETENTION: Duration = Duration::days(7);

/// A member as the conversation keeps them: by id and role, never by name (snapshots
/// written before names left the aggregate carry a `username`, which is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub role: Role,
}

/// What a `clientMessageId` was used for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub message_id: Uuid,
    /// SHA-256 of the post's input, to tell a retry from a different message.
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub posted_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingInvitation {
    pub(super) invitee_id: Uuid,
    pub(super) inviter_id: Uuid,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Option<Uuid>,
    pub kind: Option<ConversationKind>,
    pub visibility: Option<Visibility>,
    pub members: BTreeMap<Uuid, MemberInfo>,
    pub last_seq: u64,
    pub(super) pending: BTreeMap<Uuid, PendingInvitation>,
    /// Banned users and until when (`None`: indefinitely).
    #[serde(default)]
    pub bans: BTreeMap<Uuid, Option<OffsetDateTime>>,
    /// Muted members and until when (`None`: indefinitely).
    #[serde(default)]
    pub mutes: BTreeMap<Uuid, Option<OffsetDateTime>>,
    /// Days messages are kept; `None`: the server's default.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Messages posted before this have expired.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expired_before: Option<OffsetDateTime>,
}

/// A ban's or mute's `until`, when given, must lie after the command's time.
pub(super) fn require_future(
    until: Option<OffsetDateTime>,
    at: OffsetDateTime,
) -> Result<(), InputError> {
    match until {
        Some(until) if until <= at => Err(InputError::new("until", "must be in the future")),
        _ => Ok(()),
    }
}

/// Whether a ban or mute recorded with `until` is still in force at `at`.
pub(super) fn in_force(until: Option<OffsetDateTime>, at: OffsetDateTime) -> bool {
    until.is_none_or(|until| until > at)
}

pub fn fingerprint(body: &str, reply_to: Option<Uuid>, attachments: &[Uuid]) -> String {
    let mut hasher = Sha256::new();
    hasher.update((body.len() as u64).to_be_bytes());
    hasher.update(body.as_bytes());
    hasher.update(reply_to.map(|id| *id.as_bytes()).unwrap_or_default());
    for attachment in attachments {
        hasher.update(attachment.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Conversation {
    pub(super) fn id(&self) -> Result<Uuid, ConversationError> {
        self.id.ok_or(ConversationError::NotFound)
    }

    /// The member's role, or `NotMember`.
    pub fn role_of(&self, user_id: Uuid) -> Result<Role, ConversationError> {
        self.members
            .get(&user_id)
            .map(|member| member.role)
            .ok_or(ConversationError::NotMember)
    }

    pub(super) fn require(&self, user_id: Uuid, action: Action) -> Result<Role, ConversationError> {
        let role = self.role_of(user_id)?;
        if allows(role, action) {
            Ok(role)
        } else {
            Err(ConversationError::NotAllowed(
                "your role in this conversation does not allow that",
            ))
        }
    }

    pub fn is_banned(&self, user_id: Uuid, at: OffsetDateTime) -> bool {
        self.bans
            .get(&user_id)
            .is_some_and(|until| in_force(*until, at))
    }

    pub fn is_muted(&self, user_id: Uuid, at: OffsetDateTime) -> bool {
        self.mutes
            .get(&user_id)
            .is_some_and(|until| in_force(*until, at))
    }

    /// Checks that `actor_id` may moderate `target_id`: an owner or admin acting on
    /// someone of a lower role, never on themselves, never in a direct conversation.
    pub(super) fn moderate(
        &self,
        actor_id: Uuid,
        target_id: Uuid,
    ) -> Result<Role, ConversationError> {
        if self.is_direct() {
            return Err(ConversationError::NotAllowed(
                "direct conversations have no moderation",
            ));
        }
        let actor = self.role_of(actor_id)?;
        if actor < Role::Admin {
            return Err(ConversationError::NotAllowed(
                "only owners and admins can moderate",
            ));
        }
        if actor_id == target_id {
            return Err(ConversationError::NotAllowed(
                "you cannot moderate yourself",
            ));
        }
        if self
            .members
            .get(&target_id)
            .is_some_and(|target| target.role >= actor)
        {
            return Err(ConversationError::NotAllowed(
                "an admin cannot act on the owner or another admin",
            ));
        }
        Ok(actor)
    }

    pub(super) fn require_owner(&self, actor_id: Uuid) -> Result<(), ConversationError> {
        if self.is_direct() {
            return Err(ConversationError::NotAllowed(
                "direct conversations have no roles to change",
            ));
        }
        if self.role_of(actor_id)? != Role::Owner {
            return Err(ConversationError::NotAllowed(
                "only the owner can change roles",
            ));
        }
        Ok(())
    }

    /// Whether one more member (or pending invitee, who holds a seat until answering)
    /// fits under the conversation's member limit.
    pub(super) fn require_room(
        &self,
        services: &ConversationServices,
    ) -> Result<(), ConversationError> {
        if self.members.len() + self.pending.len() >= services.max_members {
            Err(ConversationError::Full {
                max: services.max_members,
            })
        } else {
            Ok(())
        }
    }

    pub(super) fn is_direct(&self) -> bool {
        self.kind == Some(ConversationKind::Direct)
    }
}

/// What a command decides: the events to record, in order (none: nothing changes).
pub(super) type Decision = Result<Vec<ConversationEvent>, ConversationError>;

/// Each command is decided by a method of its own (`decide.rs`, and `moderation.rs`
/// for moderation); `handle` only dispatches and records.
impl Aggregate for Conversation {
    const TYPE: &'static str = "Conversation";
    type Command = (Uuid, ConversationCommand);
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = ConversationServices;

    async fn handle(
        &mut self,
        (conversation_id, command): (Uuid, ConversationCommand),
        services: &ConversationServices,
        sink: &EventSink<Self>,
    ) -> Result<(), ConversationError> {
        let creating = matches!(
            command,
            ConversationCommand::CreateDirect { .. }
                | ConversationCommand::CreateGroup { .. }
                | ConversationCommand::CreateChannel { .. }
        );
        if creating && self.id.is_some() {
            return Err(ConversationError::AlreadyExists);
        }
        let events = match command {
            ConversationCommand::CreateDirect { creator, other, at } => {
                self.create_direct(conversation_id, creator, other, at)
            }
            ConversationCommand::CreateGroup {
                creator,
                title,
                members,
                at,
            } => self.create_group(conversation_id, services, creator, title, members, at),
            ConversationCommand::CreateChannel {
                creator,
                name,
                slug,
                description,
                visibility,
                at,
            } => self.create_channel(
                conversation_id,
                creator,
                name,
                slug,
                description,
                visibility,
                at,
            ),
            ConversationCommand::Join { user, at } => self.join(services, user, at),
            ConversationCommand::Leave { user_id, at } => self.leave(user_id, at),
            ConversationCommand::Update {
                actor_id,
                title,
                description,
                at,
            } => self.update(actor_id, title, description, at),
            ConversationCommand::SetRetention { actor_id, days, at } => {
                self.set_retention(actor_id, days, at)
            }
            ConversationCommand::Expire { before, at } => self.expire(before, at),
            ConversationCommand::Invite {
                invitation_id,
                inviter_id,
                invitee,
                at,
            } => self.invite(services, invitation_id, inviter_id, invitee, at),
            ConversationCommand::AcceptInvitation {
                invitation_id,
                user,
                at,
            } => self.accept_invitation(invitation_id, user, at),
            ConversationCommand::DeclineInvitation {
                invitation_id,
                user_id,
                at,
            } => self.decline_invitation(invitation_id, user_id, at),
            ConversationCommand::RevokeInvitation {
                invitation_id,
                actor_id,
                at,
            } => self.revoke_invitation(invitation_id, actor_id, at),
            ConversationCommand::SetMemberRole {
                action_id,
                actor_id,
                user_id,
                role,
                reason,
                at,
            } => self.set_member_role(action_id, actor_id, user_id, role, reason, at),
            ConversationCommand::TransferOwnership {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => self.transfer_ownership(action_id, actor_id, user_id, reason, at),
            ConversationCommand::Kick {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => self.kick(action_id, actor_id, user_id, reason, at),
            ConversationCommand::Ban {
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                at,
            } => self.ban(action_id, actor_id, user_id, reason, until, at),
            ConversationCommand::Unban {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => self.unban(action_id, actor_id, user_id, reason, at),
            ConversationCommand::Mute {
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                at,
            } => self.mute(action_id, actor_id, user_id, reason, until, at),
            ConversationCommand::Unmute {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => self.unmute(action_id, actor_id, user_id, reason, at),
            ConversationCommand::PostMessage {
                message_id,
                author_id,
                body,
                reply_to,
                client_message_id,
                attachment_ids,
                named,
                at,
            } => {
                // Checked before it is looked up.
                let client_message_id = client_message_id
                    .map(|key| parse_client_message_id(&key, "clientMessageId"))
                    .transpose()?;
                let earlier = match &client_message_id {
                    Some(client_id) => services
                        .posted
                        .find(conversation_id, author_id, client_id)
                        .await
                        .map_err(ConversationError::Lookup)?,
                    None => None,
                };
                self.post_message(
                    services,
                    message_id,
                    author_id,
                    body,
                    reply_to,
                    client_message_id,
                    earlier,
                    attachment_ids,
                    &named,
                    at,
                )
            }
        }?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: ConversationEvent) {
        match event {
            ConversationEvent::ConversationCreated {
                conversation_id,
                kind,
                visibility,
                members,
                ..
            } => {
                self.id = Some(conversation_id);
                self.kind = Some(kind);
                self.visibility = Some(visibility);
                self.members = members
                    .into_iter()
                    .map(|m| (m.user_id, MemberInfo { role: m.role }))
                    .collect();
            }
            ConversationEvent::MemberJoined { user_id, role, .. } => {
                self.members.insert(user_id, MemberInfo { role });
            }
            ConversationEvent::MemberLeft { user_id, .. } => {
                self.members.remove(&user_id);
            }
            ConversationEvent::ConversationUpdated { .. } => {}
            ConversationEvent::RetentionSet { days, .. } => self.retention_days = days,
            ConversationEvent::MessagesExpired { before, .. } => {
                self.expired_before = Some(before);
            }
            ConversationEvent::InvitationSent {
                invitation_id,
                inviter_id,
                invitee_id,
                ..
            } => {
                self.pending.insert(
                    invitation_id,
                    PendingInvitation {
                        invitee_id,
                        inviter_id,
                    },
                );
            }
            ConversationEvent::InvitationAccepted { invitation_id, .. }
            | ConversationEvent::InvitationDeclined { invitation_id, .. }
            | ConversationEvent::InvitationRevoked { invitation_id, .. } => {
                self.pending.remove(&invitation_id);
            }
            ConversationEvent::MemberRoleChanged { user_id, to, .. } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    member.role = to;
                }
            }
            ConversationEvent::OwnershipTransferred {
                actor_id, user_id, ..
            } => {
                if let Some(previous) = self.members.get_mut(&actor_id) {
                    previous.role = Role::Admin;
                }
                if let Some(owner) = self.members.get_mut(&user_id) {
                    owner.role = Role::Owner;
                }
            }
            ConversationEvent::MemberKicked { user_id, .. } => {
                self.members.remove(&user_id);
            }
            ConversationEvent::MemberBanned { user_id, until, .. } => {
                self.members.remove(&user_id);
                self.bans.insert(user_id, until);
            }
            ConversationEvent::MemberUnbanned { user_id, .. } => {
                self.bans.remove(&user_id);
            }
            ConversationEvent::MemberMuted { user_id, until, .. } => {
                self.mutes.insert(user_id, until);
            }
            ConversationEvent::MemberUnmuted { user_id, .. } => {
                self.mutes.remove(&user_id);
            }
            ConversationEvent::MessagePosted { seq, .. } => {
                self.last_seq = seq;
            }
        }
    }
}
