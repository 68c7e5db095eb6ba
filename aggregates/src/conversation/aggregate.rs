use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::commands::{ConversationCommand, ConversationServices, ReplyTarget};
use super::error::ConversationError;
use super::events::{ConversationEvent, ConversationKind, InitialMember, Visibility};
use super::mentions::mentioned_names;
use crate::policy::{allows, Action, Role};
use crate::values::{
    parse_client_message_id, parse_description, parse_reason, InputError, MessageBody, Title,
    Username,
};

/// How long a `clientMessageId` is remembered for deduplication.
pub const CLIENT_ID_RETENTION: Duration = Duration::days(7);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub username: Username,
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
struct PendingInvitation {
    invitee_id: Uuid,
    inviter_id: Uuid,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Option<Uuid>,
    pub kind: Option<ConversationKind>,
    pub visibility: Option<Visibility>,
    pub members: BTreeMap<Uuid, MemberInfo>,
    pub last_seq: u64,
    pending: BTreeMap<Uuid, PendingInvitation>,
    /// Keyed by `author_id/clientMessageId`.
    client_ids: BTreeMap<String, ClientRecord>,
    /// Banned users and until when (`None`: indefinitely).
    #[serde(default)]
    pub bans: BTreeMap<Uuid, Option<OffsetDateTime>>,
    /// Muted members and until when (`None`: indefinitely).
    #[serde(default)]
    pub mutes: BTreeMap<Uuid, Option<OffsetDateTime>>,
}

/// A ban's or mute's `until`, when given, must lie after the command's time.
fn require_future(until: Option<OffsetDateTime>, at: OffsetDateTime) -> Result<(), InputError> {
    match until {
        Some(until) if until <= at => Err(InputError::new("until", "must be in the future")),
        _ => Ok(()),
    }
}

/// Whether a ban or mute recorded with `until` is still in force at `at`.
fn in_force(until: Option<OffsetDateTime>, at: OffsetDateTime) -> bool {
    until.is_none_or(|until| until > at)
}

fn client_key(author_id: Uuid, client_id: &str) -> String {
    format!("{author_id}/{client_id}")
}

fn fingerprint(body: &str, reply_to: Option<Uuid>, attachments: &[Uuid]) -> String {
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
    fn id(&self) -> Result<Uuid, ConversationError> {
        self.id.ok_or(ConversationError::NotFound)
    }

    /// The member's role, or `NotMember`.
    pub fn role_of(&self, user_id: Uuid) -> Result<Role, ConversationError> {
        self.members
            .get(&user_id)
            .map(|member| member.role)
            .ok_or(ConversationError::NotMember)
    }

    fn require(&self, user_id: Uuid, action: Action) -> Result<Role, ConversationError> {
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
    fn moderate(&self, actor_id: Uuid, target_id: Uuid) -> Result<Role, ConversationError> {
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

    fn require_owner(&self, actor_id: Uuid) -> Result<(), ConversationError> {
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
    fn require_room(&self, services: &ConversationServices) -> Result<(), ConversationError> {
        if self.members.len() + self.pending.len() >= services.max_members {
            Err(ConversationError::Full {
                max: services.max_members,
            })
        } else {
            Ok(())
        }
    }

    fn is_direct(&self) -> bool {
        self.kind == Some(ConversationKind::Direct)
    }

    /// The message a `clientMessageId` of `author_id` was used for, if remembered.
    pub fn client_record(&self, author_id: Uuid, client_id: &str) -> Option<&ClientRecord> {
        self.client_ids.get(&client_key(author_id, client_id))
    }
}

#[allow(clippy::too_many_lines)]
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
        let event = match command {
            ConversationCommand::CreateDirect { creator, other, at } => {
                if creator.user_id == other.user_id {
                    return Err(InputError::new(
                        "userId",
                        "cannot start a conversation with yourself",
                    )
                    .into());
                }
                let members = [&creator, &other]
                    .into_iter()
                    .map(|member| InitialMember {
                        user_id: member.user_id,
                        username: member.username.clone(),
                        role: Role::Member,
                    })
                    .collect();
                ConversationEvent::ConversationCreated {
                    conversation_id,
                    kind: ConversationKind::Direct,
                    title: None,
                    slug: None,
                    description: None,
                    visibility: Visibility::Private,
                    creator_id: creator.user_id,
                    members,
                    created_at: at,
                }
            }
            ConversationCommand::CreateGroup {
                creator,
                title,
                members,
                at,
            } => {
                let title = Title::parse(&title, "title")?;
                let mut initial = vec![InitialMember {
                    user_id: creator.user_id,
                    username: creator.username.clone(),
                    role: Role::Owner,
                }];
                for member in members {
                    if initial.iter().all(|m| m.user_id != member.user_id) {
                        initial.push(InitialMember {
                            user_id: member.user_id,
                            username: member.username,
                            role: Role::Member,
                        });
                    }
                }
                let limit = services
                    .max_group_invites
                    .min(services.max_members.saturating_sub(1));
                if initial.len() - 1 > limit {
                    return Err(InputError::new(
                        "memberIds",
                        format!("may list at most {limit} members"),
                    )
                    .into());
                }
                ConversationEvent::ConversationCreated {
                    conversation_id,
                    kind: ConversationKind::Group,
                    title: Some(title.as_str().to_owned()),
                    slug: None,
                    description: None,
                    visibility: Visibility::Private,
                    creator_id: creator.user_id,
                    members: initial,
                    created_at: at,
                }
            }
            ConversationCommand::CreateChannel {
                creator,
                name,
                slug,
                description,
                visibility,
                at,
            } => {
                let name = Title::parse(&name, "name")?;
                let description = description
                    .map(|d| parse_description(&d, "description"))
                    .transpose()?;
                let members = vec![InitialMember {
                    user_id: creator.user_id,
                    username: creator.username.clone(),
                    role: Role::Owner,
                }];
                ConversationEvent::ConversationCreated {
                    conversation_id,
                    kind: ConversationKind::Channel,
                    title: Some(name.as_str().to_owned()),
                    slug: Some(slug.as_str().to_owned()),
                    description,
                    visibility,
                    creator_id: creator.user_id,
                    members,
                    created_at: at,
                }
            }
            ConversationCommand::Join { user, at } => {
                let id = self.id()?;
                if self.members.contains_key(&user.user_id) {
                    return Ok(());
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
                ConversationEvent::MemberJoined {
                    conversation_id: id,
                    user_id: user.user_id,
                    username: user.username,
                    role: Role::Member,
                    invitation_id: None,
                    last_seq: self.last_seq,
                    joined_at: at,
                }
            }
            ConversationCommand::Leave { user_id, at } => {
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
                ConversationEvent::MemberLeft {
                    conversation_id: id,
                    user_id,
                    left_at: at,
                }
            }
            ConversationCommand::Update {
                actor_id,
                title,
                description,
                at,
            } => {
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
                    return Err(InputError::new(
                        "title",
                        "give a title or a description to change",
                    )
                    .into());
                }
                ConversationEvent::ConversationUpdated {
                    conversation_id: id,
                    title,
                    description,
                    updated_by: actor_id,
                    updated_at: at,
                }
            }
            ConversationCommand::Invite {
                invitation_id,
                inviter_id,
                invitee,
                at,
            } => {
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
                ConversationEvent::InvitationSent {
                    conversation_id: id,
                    invitation_id,
                    inviter_id,
                    invitee_id: invitee.user_id,
                    sent_at: at,
                }
            }
            ConversationCommand::AcceptInvitation {
                invitation_id,
                user,
                at,
            } => {
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
                sink.write(
                    ConversationEvent::InvitationAccepted {
                        conversation_id: id,
                        invitation_id,
                        invitee_id: user.user_id,
                        accepted_at: at,
                    },
                    self,
                )
                .await;
                ConversationEvent::MemberJoined {
                    conversation_id: id,
                    user_id: user.user_id,
                    username: user.username,
                    role: Role::Member,
                    invitation_id: Some(invitation_id),
                    last_seq: self.last_seq,
                    joined_at: at,
                }
            }
            ConversationCommand::DeclineInvitation {
                invitation_id,
                user_id,
                at,
            } => {
                let id = self.id()?;
                let pending = self
                    .pending
                    .get(&invitation_id)
                    .ok_or(ConversationError::InvitationNotPending)?;
                if pending.invitee_id != user_id {
                    return Err(ConversationError::NotInvitee);
                }
                ConversationEvent::InvitationDeclined {
                    conversation_id: id,
                    invitation_id,
                    invitee_id: user_id,
                    declined_at: at,
                }
            }
            ConversationCommand::RevokeInvitation {
                invitation_id,
                actor_id,
                at,
            } => {
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
                ConversationEvent::InvitationRevoked {
                    conversation_id: id,
                    invitation_id,
                    invitee_id: pending.invitee_id,
                    revoked_by: actor_id,
                    revoked_at: at,
                }
            }
            ConversationCommand::SetMemberRole {
                action_id,
                actor_id,
                user_id,
                role,
                reason,
                at,
            } => {
                let id = self.id()?;
                self.require_owner(actor_id)?;
                let from = self
                    .members
                    .get(&user_id)
                    .map(|m| m.role)
                    .ok_or(ConversationError::TargetNotMember)?;
                if role == Role::Owner || from == Role::Owner {
                    return Err(InputError::new(
                        "role",
                        "ownership changes hands with transferOwnership",
                    )
                    .into());
                }
                let reason = parse_reason(reason.as_deref(), false)?;
                if from == role {
                    return Err(InputError::new("role", "the member already has this role").into());
                }
                ConversationEvent::MemberRoleChanged {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    from,
                    to: role,
                    reason,
                    changed_at: at,
                }
            }
            ConversationCommand::TransferOwnership {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => {
                let id = self.id()?;
                self.require_owner(actor_id)?;
                if actor_id == user_id {
                    return Err(
                        InputError::new("userId", "you already own this conversation").into(),
                    );
                }
                if !self.members.contains_key(&user_id) {
                    return Err(ConversationError::TargetNotMember);
                }
                ConversationEvent::OwnershipTransferred {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    reason: parse_reason(reason.as_deref(), false)?,
                    transferred_at: at,
                }
            }
            ConversationCommand::Kick {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => {
                let id = self.id()?;
                self.moderate(actor_id, user_id)?;
                let reason = parse_reason(Some(&reason), true)?.unwrap_or_default();
                if !self.members.contains_key(&user_id) {
                    return Err(ConversationError::TargetNotMember);
                }
                ConversationEvent::MemberKicked {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    reason,
                    kicked_at: at,
                }
            }
            ConversationCommand::Ban {
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                at,
            } => {
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
                    sink.write(
                        ConversationEvent::InvitationRevoked {
                            conversation_id: id,
                            invitation_id,
                            invitee_id: user_id,
                            revoked_by: actor_id,
                            revoked_at: at,
                        },
                        self,
                    )
                    .await;
                }
                ConversationEvent::MemberBanned {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    reason,
                    until,
                    banned_at: at,
                }
            }
            ConversationCommand::Unban {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => {
                let id = self.id()?;
                self.moderate(actor_id, user_id)?;
                if !self.is_banned(user_id, at) {
                    return Err(ConversationError::NotBanned);
                }
                ConversationEvent::MemberUnbanned {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    reason: parse_reason(reason.as_deref(), false)?,
                    unbanned_at: at,
                }
            }
            ConversationCommand::Mute {
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                at,
            } => {
                let id = self.id()?;
                self.moderate(actor_id, user_id)?;
                let reason = parse_reason(Some(&reason), true)?.unwrap_or_default();
                require_future(until, at)?;
                if !self.members.contains_key(&user_id) {
                    return Err(ConversationError::TargetNotMember);
                }
                ConversationEvent::MemberMuted {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    reason,
                    until,
                    muted_at: at,
                }
            }
            ConversationCommand::Unmute {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            } => {
                let id = self.id()?;
                self.moderate(actor_id, user_id)?;
                if !self.is_muted(user_id, at) {
                    return Err(ConversationError::NotMuted);
                }
                ConversationEvent::MemberUnmuted {
                    conversation_id: id,
                    action_id,
                    actor_id,
                    user_id,
                    reason: parse_reason(reason.as_deref(), false)?,
                    unmuted_at: at,
                }
            }
            ConversationCommand::PostMessage {
                message_id,
                author_id,
                body,
                reply_to,
                client_message_id,
                attachment_ids,
                at,
            } => {
                let id = self.id()?;
                self.require(author_id, Action::Post)?;
                if self.is_muted(author_id, at) {
                    return Err(ConversationError::Muted);
                }
                let body = MessageBody::parse(&body, "body", services.max_body_chars)?;
                let client_message_id = client_message_id
                    .map(|c| parse_client_message_id(&c, "clientMessageId"))
                    .transpose()?;
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
                if let Some(client_id) = &client_message_id {
                    if let Some(record) = self.client_record(author_id, client_id) {
                        let same = record.fingerprint
                            == fingerprint(body.as_str(), reply_to_id, &attachment_ids);
                        return Err(if same {
                            ConversationError::AlreadyPosted {
                                message_id: record.message_id,
                            }
                        } else {
                            ConversationError::ClientMessageIdReused
                        });
                    }
                }
                let names = mentioned_names(body.as_str());
                let mentions = self
                    .members
                    .iter()
                    .filter(|(user_id, member)| {
                        **user_id != author_id && names.contains(member.username.as_str())
                    })
                    .map(|(user_id, _)| *user_id)
                    .collect();
                ConversationEvent::MessagePosted {
                    conversation_id: id,
                    message_id,
                    seq: self.last_seq + 1,
                    author_id,
                    body: body.into_string(),
                    format: "PLAIN".to_owned(),
                    reply_to_id,
                    reply_to_author_id: reply_to.map(|r| r.author_id),
                    mentions,
                    client_message_id,
                    attachment_ids,
                    posted_at: at,
                }
            }
        };
        sink.write(event, self).await;
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
                    .map(|m| {
                        (
                            m.user_id,
                            MemberInfo {
                                username: m.username,
                                role: m.role,
                            },
                        )
                    })
                    .collect();
            }
            ConversationEvent::MemberJoined {
                user_id,
                username,
                role,
                ..
            } => {
                self.members.insert(user_id, MemberInfo { username, role });
            }
            ConversationEvent::MemberLeft { user_id, .. } => {
                self.members.remove(&user_id);
            }
            ConversationEvent::ConversationUpdated { .. } => {}
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
            ConversationEvent::MessagePosted {
                message_id,
                seq,
                author_id,
                body,
                reply_to_id,
                client_message_id,
                attachment_ids,
                posted_at,
                ..
            } => {
                self.last_seq = seq;
                let horizon = posted_at - CLIENT_ID_RETENTION;
                self.client_ids
                    .retain(|_, record| record.posted_at > horizon);
                if let Some(client_id) = client_message_id {
                    self.client_ids.insert(
                        client_key(author_id, &client_id),
                        ClientRecord {
                            message_id,
                            fingerprint: fingerprint(&body, reply_to_id, &attachment_ids),
                            posted_at,
                        },
                    );
                }
            }
        }
    }
}
