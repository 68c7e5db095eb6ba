//! The messaging command service behind the conversation, invitation, message,
//! read-state and notification mutations.
//!
//! It looks up what a command needs (users, the message a reply or reaction targets,
//! the actor's standing), hands it to the aggregates, and reports the log position of
//! what was appended so the API can wait for the read models (read-your-writes).

use std::collections::BTreeSet;

use cqrs_es::AggregateError;
use parley_aggregates::claim::{slug_claim, NameClaim, NameCommand};
use parley_aggregates::conversation::mentions::{mentioned_names, Named};
use parley_aggregates::conversation::{
    direct_conversation_id, Conversation, ConversationCommand, ConversationError,
    ConversationEvent, ConversationServices, MemberRef, ReplyTarget, Visibility,
};
use parley_aggregates::event::Event;
use parley_aggregates::inbox::{Inbox, InboxCommand};
use parley_aggregates::member::{member_state_id, MemberCommand, MemberState, NotificationLevel};
use parley_aggregates::message::{Actor, Message, MessageCommand, MessageError, PostedMessage};
use parley_aggregates::upload::{Upload, UploadCommand, UploadError};
use parley_aggregates::user::User;
use parley_aggregates::values::{parse_client_message_id, parse_id_list, Slug};
use parley_aggregates::InputError;
use parley_projections::conversations::{Founding, InvitationRow};
use parley_projections::messages::MessageRow;
use parley_projections::moderation::ModerationRow;
use parley_projections::page::MAX_PAGE;
use parley_projections::{conversations, messages, notifications, unread, users};
use parley_store::{log, Db, LogPosition, StoredEvent};
use uuid::Uuid;

use parley_store::{CommandBus, CommandMeta, Committed};

/// The result of a write: the id it concerns and where its events are in the log.
pub struct Written<T> {
    pub value: T,
    pub position: Option<LogPosition>,
}

impl<T> Written<T> {
    fn new(value: T, position: Option<LogPosition>) -> Self {
        Self { value, position }
    }
}

/// What a write made: the id of what it concerns, and the read-model row its own events
/// make, as the projector first writes it (for an answer to an invitation, the answer,
/// to apply to the row the read model holds). `None` when it made nothing new (a
/// retried post, a direct conversation that already existed): the caller reads the row.
///
/// The write stands whether or not the read models catch up within the consistency
/// wait; a mutation answers from the read model when it holds the row, and else from
/// this (past the wait, or behind a failed projector) rather than failing.
pub struct Made<Row> {
    pub id: Uuid,
    pub row: Option<Row>,
}

impl<Row> Made<Row> {
    pub(crate) fn of<A: cqrs_es::Aggregate>(
        id: Uuid,
        committed: &Committed<A>,
        row: impl Fn(&A::Event) -> Option<Row>,
    ) -> Self {
        let row = committed
            .events
            .iter()
            .find_map(|envelope| row(&envelope.payload));
        Self { id, row }
    }

    pub(crate) fn existing(id: Uuid) -> Self {
        Self { id, row: None }
    }
}

/// What `send` did.
pub enum Sent {
    /// Posted the message: its row as posted.
    Posted(Made<MessageRow>),
    /// Found it posted by an earlier attempt with the same `clientMessageId`. It is
    /// answered as the read model holds it now (it may have changed since), or as it was
    /// posted (read from the log) while the read model does not show it.
    Retried {
        id: Uuid,
        as_posted: Option<MessageRow>,
    },
}

pub struct Chat {
    db: Db,
    conversations: CommandBus<Conversation>,
    messages: CommandBus<Message>,
    members: CommandBus<MemberState>,
    inbox: CommandBus<Inbox>,
    names: CommandBus<NameClaim>,
    uploads: CommandBus<Upload>,
    services: ConversationServices,
}

/// Why a messaging command was refused or failed: the domain's own errors, and what
/// the service itself found missing or broken. The GraphQL layer maps each to a code
/// (`graphql/error.rs`).
///
/// Deliberately not `Display`, like the API's error: a resolver's `?` then has only the
/// mapping to go through, never async-graphql's code-less conversion of any `Display`.
#[derive(Debug)]
pub enum ChatError {
    Conversation(ConversationError),
    Message(MessageError),
    Name(parley_aggregates::claim::NameError),
    Upload(UploadError),
    Input(InputError),
    /// What the command names does not exist (`"user"`, `"message"` …).
    NotFound(&'static str),
    SlugTaken(String),
    /// Another node changed the aggregate first, every time it was retried.
    Concurrent,
    /// Stored data that breaks a rule it passed when written: a bug, not bad input.
    Corrupt(String),
    Store(Box<dyn std::error::Error + Send + Sync>),
}

impl From<ConversationError> for ChatError {
    fn from(error: ConversationError) -> Self {
        Self::Conversation(error)
    }
}

impl From<MessageError> for ChatError {
    fn from(error: MessageError) -> Self {
        Self::Message(error)
    }
}

impl From<parley_aggregates::claim::NameError> for ChatError {
    fn from(error: parley_aggregates::claim::NameError) -> Self {
        Self::Name(error)
    }
}

impl From<UploadError> for ChatError {
    fn from(error: UploadError) -> Self {
        Self::Upload(error)
    }
}

impl From<InputError> for ChatError {
    fn from(error: InputError) -> Self {
        Self::Input(error)
    }
}

impl From<parley_aggregates::member::MemberError> for ChatError {
    fn from(error: parley_aggregates::member::MemberError) -> Self {
        match error {}
    }
}

impl From<parley_aggregates::inbox::InboxError> for ChatError {
    fn from(error: parley_aggregates::inbox::InboxError) -> Self {
        match error {}
    }
}

impl From<parley_store::StoreError> for ChatError {
    fn from(error: parley_store::StoreError) -> Self {
        Self::Store(Box::new(error))
    }
}

impl From<sqlx::Error> for ChatError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(Box::new(error))
    }
}

impl From<parley_projections::ProjectionError> for ChatError {
    fn from(error: parley_projections::ProjectionError) -> Self {
        Self::Store(Box::new(error))
    }
}

impl<E> From<AggregateError<E>> for ChatError
where
    E: std::error::Error + Send + Sync + 'static,
    ChatError: From<E>,
{
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(error) => error.into(),
            AggregateError::AggregateConflict => Self::Concurrent,
            AggregateError::DatabaseConnectionError(e)
            | AggregateError::DeserializationError(e)
            | AggregateError::UnexpectedError(e) => Self::Store(e),
        }
    }
}

/// An id the read models hold, which was well formed when written.
fn stored_id(raw: &str) -> Result<Uuid, ChatError> {
    Uuid::parse_str(raw).map_err(|_| ChatError::Corrupt(format!("stored id {raw:?} is not a UUID")))
}

impl Chat {
    pub fn new(db: &Db, services: ConversationServices) -> Self {
        Self {
            db: db.clone(),
            conversations: CommandBus::new(db, services.clone()),
            messages: CommandBus::new(db, ()),
            members: CommandBus::new(db, ()),
            inbox: CommandBus::new(db, ()),
            names: CommandBus::new(db, ()),
            uploads: CommandBus::new(db, ()),
            services,
        }
    }

    /// A user as a conversation records them; `NOT_FOUND` for unknown users. One the
    /// users read model does not show yet (it lags, or failed) is looked for in the log:
    /// an account whose registration stands is not refused as unknown.
    async fn member_ref(&self, user_id: Uuid) -> Result<MemberRef, ChatError> {
        let id = user_id.to_string();
        if users::by_id(&self.db, &id).await?.is_none()
            && !log::stream_exists(&self.db, <User as cqrs_es::Aggregate>::TYPE, &id).await?
        {
            return Err(ChatError::NotFound("user"));
        }
        Ok(MemberRef { user_id })
    }

    /// The accounts `body`'s `@names` belong to. A body too long to post names nobody
    /// (the aggregate refuses it), so no request makes a lookup of unbounded size.
    async fn named(&self, body: &str) -> Result<Named, ChatError> {
        if body.chars().count() > self.services.max_body_chars {
            return Ok(Named::new());
        }
        Ok(users::named(&self.db, &mentioned_names(body)).await?)
    }

    async fn run(
        &self,
        conversation_id: Uuid,
        command: ConversationCommand,
        meta: &CommandMeta,
    ) -> Result<Option<LogPosition>, ChatError> {
        Ok(self.commit(conversation_id, command, meta).await?.position)
    }

    async fn commit(
        &self,
        conversation_id: Uuid,
        command: ConversationCommand,
        meta: &CommandMeta,
    ) -> Result<Committed<Conversation>, ChatError> {
        Ok(self
            .conversations
            .execute(
                &conversation_id.to_string(),
                (conversation_id, command),
                meta,
            )
            .await?)
    }

    /// `createDirectConversation`: the existing one if any.
    pub async fn create_direct(
        &self,
        viewer: Uuid,
        other: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Made<Founding>>, ChatError> {
        let creator = self.member_ref(viewer).await?;
        let other = self.member_ref(other).await?;
        let id = direct_conversation_id(viewer, other.user_id);
        let command = ConversationCommand::CreateDirect {
            creator,
            other,
            at: meta.at,
        };
        match self
            .conversations
            .execute(&id.to_string(), (id, command), meta)
            .await
        {
            Ok(committed) => {
                let made = Made::of(id, &committed, Founding::of);
                Ok(Written::new(made, committed.position))
            }
            // It may have been created a moment ago by a concurrent call: wait for
            // everything committed so far, so the caller can read it.
            Err(AggregateError::UserError(ConversationError::AlreadyExists)) => Ok(Written::new(
                Made::existing(id),
                Some(log::head(&self.db).await?),
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// `createGroup`.
    pub async fn create_group(
        &self,
        viewer: Uuid,
        title: &str,
        member_ids: &[String],
        meta: &CommandMeta,
    ) -> Result<Written<Made<Founding>>, ChatError> {
        // Bounded before any lookup, so a huge list costs nothing.
        let member_ids = parse_id_list(member_ids, "memberIds", self.services.max_group_invites)?;
        let creator = self.member_ref(viewer).await?;
        let mut members = Vec::with_capacity(member_ids.len());
        for id in member_ids {
            members.push(self.member_ref(id).await?);
        }
        let id = Uuid::now_v7();
        let command = ConversationCommand::CreateGroup {
            creator,
            title: title.to_owned(),
            members,
            at: meta.at,
        };
        let committed = self.commit(id, command, meta).await?;
        let made = Made::of(id, &committed, Founding::of);
        Ok(Written::new(made, committed.position))
    }

    /// `createChannel`: claims the slug first, so two channels never share one.
    pub async fn create_channel(
        &self,
        viewer: Uuid,
        name: &str,
        slug: Option<&str>,
        description: Option<String>,
        visibility: Visibility,
        meta: &CommandMeta,
    ) -> Result<Written<Made<Founding>>, ChatError> {
        let creator = self.member_ref(viewer).await?;
        parley_aggregates::values::Title::parse(name, "name")?;
        let slug = match slug {
            Some(slug) => Slug::parse(slug, "slug")?,
            None => Slug::derive(name, "name")?,
        };
        let id = Uuid::now_v7();
        let claim = slug_claim(slug.as_str());
        // A slug whose channel was never created (the process died in between) is
        // taken over once old enough; the channel's own stream says whether it exists.
        let abandoned_by = match self.names.load(&claim).await?.owner {
            Some(holder)
                if self
                    .conversations
                    .load(&holder.to_string())
                    .await?
                    .id
                    .is_none() =>
            {
                Some(holder)
            }
            _ => None,
        };
        self.names
            .execute(
                &claim,
                NameCommand::Claim {
                    name: slug.as_str().to_owned(),
                    owner_id: id,
                    abandoned_by,
                    at: meta.at,
                },
                meta,
            )
            .await
            .map_err(|error| match error {
                AggregateError::UserError(parley_aggregates::claim::NameError::Taken) => {
                    ChatError::SlugTaken(slug.as_str().to_owned())
                }
                other => other.into(),
            })?;
        let command = ConversationCommand::CreateChannel {
            creator,
            name: name.to_owned(),
            slug,
            description,
            visibility,
            at: meta.at,
        };
        match self.commit(id, command, meta).await {
            Ok(committed) => {
                let made = Made::of(id, &committed, Founding::of);
                Ok(Written::new(made, committed.position))
            }
            Err(error) => {
                let release = NameCommand::Release {
                    owner_id: id,
                    at: meta.at,
                };
                if let Err(release_error) = self.names.execute(&claim, release, meta).await {
                    tracing::error!(%claim, error = %release_error, "could not release the slug of a failed channel");
                }
                Err(error)
            }
        }
    }

    /// `joinChannel`.
    pub async fn join(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let user = self.member_ref(viewer).await?;
        let position = self
            .run(
                conversation_id,
                ConversationCommand::Join { user, at: meta.at },
                meta,
            )
            .await?;
        Ok(Written::new(conversation_id, position))
    }

    /// `leaveConversation`.
    pub async fn leave(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<bool>, ChatError> {
        let position = self
            .run(
                conversation_id,
                ConversationCommand::Leave {
                    user_id: viewer,
                    at: meta.at,
                },
                meta,
            )
            .await?;
        Ok(Written::new(true, position))
    }

    /// `updateConversation`.
    pub async fn update(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        title: Option<String>,
        description: Option<String>,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let command = ConversationCommand::Update {
            actor_id: viewer,
            title,
            description,
            at: meta.at,
        };
        let position = self.run(conversation_id, command, meta).await?;
        Ok(Written::new(conversation_id, position))
    }

    /// Sets how many days the conversation keeps messages (`None`: the server's
    /// default); owners and admins.
    pub async fn set_retention(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        days: Option<i64>,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let command = ConversationCommand::SetRetention {
            actor_id: viewer,
            days,
            at: meta.at,
        };
        let position = self.run(conversation_id, command, meta).await?;
        Ok(Written::new(conversation_id, position))
    }

    /// The viewer's current role, from the conversation's own state (not a read model).
    async fn standing(
        &self,
        conversation_id: Uuid,
        viewer: Uuid,
    ) -> Result<(Conversation, Option<parley_aggregates::policy::Role>), ChatError> {
        let conversation = self
            .conversations
            .load(&conversation_id.to_string())
            .await?;
        if conversation.id.is_none() {
            return Err(ChatError::NotFound("conversation"));
        }
        let role = conversation.role_of(viewer).ok();
        Ok((conversation, role))
    }

    /// `setNotificationLevel`.
    pub async fn set_notification_level(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        level: NotificationLevel,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let (_, role) = self.standing(conversation_id, viewer).await?;
        if role.is_none() {
            return Err(ConversationError::NotMember.into());
        }
        let command = MemberCommand::SetNotificationLevel {
            conversation_id,
            user_id: viewer,
            level,
            at: meta.at,
        };
        let committed = self
            .members
            .execute(&member_state_id(conversation_id, viewer), command, meta)
            .await?;
        Ok(Written::new(conversation_id, committed.position))
    }

    /// `inviteMember`.
    pub async fn invite(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        user_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Made<InvitationRow>>, ChatError> {
        let invitee = self.member_ref(user_id).await?;
        let invitation_id = Uuid::now_v7();
        let command = ConversationCommand::Invite {
            invitation_id,
            inviter_id: viewer,
            invitee,
            at: meta.at,
        };
        let committed = self.commit(conversation_id, command, meta).await?;
        let made = Made::of(invitation_id, &committed, InvitationRow::sent);
        Ok(Written::new(made, committed.position))
    }

    async fn invitation_conversation(&self, invitation_id: Uuid) -> Result<Uuid, ChatError> {
        let row = conversations::invitation(&self.db, &invitation_id.to_string())
            .await?
            .ok_or(ChatError::NotFound("invitation"))?;
        stored_id(&row.conversation_id)
    }

    /// `acceptInvitation`: returns the conversation joined.
    pub async fn accept(
        &self,
        viewer: Uuid,
        invitation_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let conversation_id = self.invitation_conversation(invitation_id).await?;
        let user = self.member_ref(viewer).await?;
        let command = ConversationCommand::AcceptInvitation {
            invitation_id,
            user,
            at: meta.at,
        };
        let position = self.run(conversation_id, command, meta).await?;
        Ok(Written::new(conversation_id, position))
    }

    /// `declineInvitation`.
    pub async fn decline(
        &self,
        viewer: Uuid,
        invitation_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Made<ConversationEvent>>, ChatError> {
        let conversation_id = self.invitation_conversation(invitation_id).await?;
        let command = ConversationCommand::DeclineInvitation {
            invitation_id,
            user_id: viewer,
            at: meta.at,
        };
        let committed = self.commit(conversation_id, command, meta).await?;
        // The answer itself: the read model's row may not show it yet.
        let made = Made::of(invitation_id, &committed, |event| Some(event.clone()));
        Ok(Written::new(made, committed.position))
    }

    /// `revokeInvitation`.
    pub async fn revoke(
        &self,
        viewer: Uuid,
        invitation_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Made<ConversationEvent>>, ChatError> {
        let conversation_id = self.invitation_conversation(invitation_id).await?;
        let command = ConversationCommand::RevokeInvitation {
            invitation_id,
            actor_id: viewer,
            at: meta.at,
        };
        let committed = self.commit(conversation_id, command, meta).await?;
        // The answer itself: the read model's row may not show it yet.
        let made = Made::of(invitation_id, &committed, |event| Some(event.clone()));
        Ok(Written::new(made, committed.position))
    }

    async fn message_row(&self, message_id: Uuid) -> Result<MessageRow, ChatError> {
        messages::by_id(&self.db, &message_id.to_string())
            .await?
            .ok_or(ChatError::NotFound("message"))
    }

    /// `sendMessage`: a retry with the same `clientMessageId` returns the first message.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        body: String,
        reply_to: Option<Uuid>,
        client_message_id: Option<String>,
        attachment_ids: Vec<Uuid>,
        meta: &CommandMeta,
    ) -> Result<Written<Sent>, ChatError> {
        // Checked before anything is claimed or looked up under it.
        let client_message_id = client_message_id
            .map(|key| parse_client_message_id(&key, "clientMessageId"))
            .transpose()?;
        let reply_to = match reply_to {
            Some(id) => {
                let row = match self.message_row(id).await {
                    Err(ChatError::NotFound(_)) => {
                        return Err(ChatError::NotFound("the message replied to"))
                    }
                    other => other?,
                };
                Some(ReplyTarget {
                    message_id: id,
                    conversation_id: stored_id(&row.conversation_id)?,
                    author_id: stored_id(&row.author_id)?,
                })
            }
            None => None,
        };
        let message_id = Uuid::now_v7();
        // Each attachment is claimed for this message before it is posted, so no two
        // messages ever carry the same one; the claims are given back if it is not.
        let mut claimed = Vec::with_capacity(attachment_ids.len());
        for upload_id in &attachment_ids {
            let claim = UploadCommand::Attach {
                actor_id: viewer,
                conversation_id,
                message_id,
                client_message_id: client_message_id.clone(),
                at: meta.at,
            };
            match self
                .uploads
                .execute(&upload_id.to_string(), claim, meta)
                .await
            {
                Ok(_) => claimed.push(*upload_id),
                Err(error) => {
                    self.release(&claimed, message_id, meta).await;
                    return Err(error.into());
                }
            }
        }
        let named = self.named(&body).await?;
        let retry_key = client_message_id.clone();
        let command = ConversationCommand::PostMessage {
            message_id,
            author_id: viewer,
            body,
            reply_to,
            client_message_id,
            attachment_ids,
            named,
            at: meta.at,
        };
        match self
            .conversations
            .execute(
                &conversation_id.to_string(),
                (conversation_id, command),
                meta,
            )
            .await
        {
            Ok(committed) => {
                let sent = Made::of(message_id, &committed, MessageRow::posted);
                Ok(Written::new(Sent::Posted(sent), committed.position))
            }
            Err(AggregateError::UserError(ConversationError::AlreadyPosted { message_id })) => {
                // The first attempt may still be settling: wait for everything committed so far.
                let head = log::head(&self.db).await?;
                let as_posted = match retry_key {
                    Some(key) => self.as_posted(conversation_id, viewer, &key).await?,
                    None => None,
                };
                let sent = Sent::Retried {
                    id: message_id,
                    as_posted,
                };
                Ok(Written::new(sent, Some(head)))
            }
            Err(error) => {
                self.release(&claimed, message_id, meta).await;
                Err(error.into())
            }
        }
    }

    /// The author's post under `client_message_id` as it was posted, from the log (one
    /// probe of the index the retry rule itself reads).
    async fn as_posted(
        &self,
        conversation_id: Uuid,
        author_id: Uuid,
        client_message_id: &str,
    ) -> Result<Option<MessageRow>, ChatError> {
        let stored = log::post_by_client_id(
            &self.db,
            &conversation_id.to_string(),
            &author_id.to_string(),
            client_message_id,
        )
        .await?;
        Ok(match stored.as_ref().map(StoredEvent::event).transpose()? {
            Some(Some(Event::Conversation(posted))) => MessageRow::posted(posted),
            _ => None,
        })
    }

    /// Gives back attachments claimed for a message that was not posted.
    async fn release(&self, claimed: &[Uuid], message_id: Uuid, meta: &CommandMeta) {
        for upload_id in claimed {
            let detach = UploadCommand::Detach {
                message_id,
                at: meta.at,
            };
            if let Err(error) = self
                .uploads
                .execute(&upload_id.to_string(), detach, meta)
                .await
            {
                tracing::error!(%upload_id, %error, "cannot release an attachment of a message not posted");
            }
        }
    }

    async fn posted_and_actor(
        &self,
        viewer: Uuid,
        message_id: Uuid,
        at: time::OffsetDateTime,
    ) -> Result<(PostedMessage, Actor), ChatError> {
        let row = self.message_row(message_id).await?;
        let conversation_id = stored_id(&row.conversation_id)?;
        let (conversation, _) = self.standing(conversation_id, viewer).await?;
        let posted = PostedMessage {
            message_id,
            conversation_id,
            author_id: stored_id(&row.author_id)?,
            seq: u64::try_from(row.seq).unwrap_or_default(),
            body: row.body.clone().unwrap_or_default(),
            mentions: row
                .mention_ids()
                .iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect::<BTreeSet<_>>(),
            posted_at: time::OffsetDateTime::parse(
                &row.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok(),
        };
        let actor = Actor::in_conversation(&conversation, viewer, posted.author_id, at);
        Ok((posted, actor))
    }

    async fn on_message(
        &self,
        message_id: Uuid,
        command: MessageCommand,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let committed = self
            .messages
            .execute(&message_id.to_string(), command, meta)
            .await?;
        Ok(Written::new(message_id, committed.position))
    }

    /// `editMessage`.
    pub async fn edit(
        &self,
        viewer: Uuid,
        message_id: Uuid,
        body: String,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let (posted, actor) = self.posted_and_actor(viewer, message_id, meta.at).await?;
        let named = self.named(&body).await?;
        let command = MessageCommand::Edit {
            posted,
            actor,
            body,
            max_body_chars: self.services.max_body_chars,
            named,
            at: meta.at,
        };
        self.on_message(message_id, command, meta).await
    }

    /// `deleteMessage`.
    pub async fn delete(
        &self,
        viewer: Uuid,
        message_id: Uuid,
        reason: Option<String>,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let (posted, actor) = self.posted_and_actor(viewer, message_id, meta.at).await?;
        self.on_message(
            message_id,
            MessageCommand::Delete {
                posted,
                actor,
                reason,
                at: meta.at,
            },
            meta,
        )
        .await
    }

    /// `addReaction` / `removeReaction`.
    pub async fn react(
        &self,
        viewer: Uuid,
        message_id: Uuid,
        emoji: String,
        add: bool,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let (posted, actor) = self.posted_and_actor(viewer, message_id, meta.at).await?;
        let command = if add {
            MessageCommand::AddReaction {
                posted,
                actor,
                emoji,
                at: meta.at,
            }
        } else {
            MessageCommand::RemoveReaction {
                posted,
                actor,
                emoji,
                at: meta.at,
            }
        };
        self.on_message(message_id, command, meta).await
    }

    /// The message, checked to be in `conversation_id`, and the viewer's membership.
    async fn read_target(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        message_id: Uuid,
    ) -> Result<MessageRow, ChatError> {
        let (_, role) = self.standing(conversation_id, viewer).await?;
        if role.is_none() {
            return Err(ConversationError::NotMember.into());
        }
        let row = self.message_row(message_id).await?;
        if row.conversation_id != conversation_id.to_string() {
            return Err(
                InputError::new("messageId", "is not a message of this conversation").into(),
            );
        }
        Ok(row)
    }

    /// `markRead`: forward only.
    pub async fn mark_read(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        message_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let row = self
            .read_target(viewer, conversation_id, message_id)
            .await?;
        let current =
            unread::read_seq(&self.db, &conversation_id.to_string(), &viewer.to_string()).await?;
        let command = MemberCommand::MarkRead {
            conversation_id,
            user_id: viewer,
            message_id,
            seq: u64::try_from(row.seq).unwrap_or_default(),
            current_seq: u64::try_from(current).unwrap_or_default(),
            at: meta.at,
        };
        let committed = self
            .members
            .execute(&member_state_id(conversation_id, viewer), command, meta)
            .await?;
        Ok(Written::new(conversation_id, committed.position))
    }

    /// `markUnread`: the marker moves to just before the message.
    pub async fn mark_unread(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        message_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Uuid>, ChatError> {
        let row = self
            .read_target(viewer, conversation_id, message_id)
            .await?;
        let command = MemberCommand::MarkUnread {
            conversation_id,
            user_id: viewer,
            message_id,
            seq: u64::try_from(row.seq).unwrap_or_default(),
            at: meta.at,
        };
        let committed = self
            .members
            .execute(&member_state_id(conversation_id, viewer), command, meta)
            .await?;
        Ok(Written::new(conversation_id, committed.position))
    }

    /// `markNotificationsRead`: how many of `ids` became read. Only the caller's unread
    /// notifications among them are recorded.
    pub async fn mark_notifications_read(
        &self,
        viewer: Uuid,
        ids: &[String],
        meta: &CommandMeta,
    ) -> Result<Written<i32>, ChatError> {
        let ids = parse_id_list(ids, "ids", MAX_PAGE as usize)?;
        let unread = notifications::unread_among(&self.db, &viewer.to_string(), &ids).await?;
        let count = unread.len();
        let command = InboxCommand::MarkRead {
            user_id: viewer,
            unread,
            at: meta.at,
        };
        let committed = self
            .inbox
            .execute(&viewer.to_string(), command, meta)
            .await?;
        Ok(Written::new(
            i32::try_from(count).unwrap_or(i32::MAX),
            committed.position,
        ))
    }

    /// `markAllNotificationsRead`.
    pub async fn mark_all_notifications_read(
        &self,
        viewer: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<i32>, ChatError> {
        let count = notifications::count_unread(&self.db, &viewer.to_string()).await?;
        let committed = self
            .inbox
            .execute(
                &viewer.to_string(),
                InboxCommand::MarkAllRead {
                    user_id: viewer,
                    unread: u64::try_from(count).unwrap_or_default(),
                    at: meta.at,
                },
                meta,
            )
            .await?;
        Ok(Written::new(
            i32::try_from(count).unwrap_or(i32::MAX),
            committed.position,
        ))
    }

    /// The moderation mutations: role changes, ownership transfer, kick, ban, mute and
    /// their reversals. Returns the id of the recorded action.
    pub async fn moderate(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        user_id: Uuid,
        action: Moderation,
        reason: Option<String>,
        meta: &CommandMeta,
    ) -> Result<Written<Made<ModerationRow>>, ChatError> {
        self.member_ref(user_id).await?;
        let action_id = Uuid::now_v7();
        let (actor_id, at) = (viewer, meta.at);
        let required = || reason.clone().unwrap_or_default();
        let command = match action {
            Moderation::SetRole(role) => ConversationCommand::SetMemberRole {
                action_id,
                actor_id,
                user_id,
                role,
                reason,
                at,
            },
            Moderation::TransferOwnership => ConversationCommand::TransferOwnership {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            },
            Moderation::Kick => ConversationCommand::Kick {
                action_id,
                actor_id,
                user_id,
                reason: required(),
                at,
            },
            Moderation::Ban { until } => ConversationCommand::Ban {
                action_id,
                actor_id,
                user_id,
                reason: required(),
                until,
                at,
            },
            Moderation::Unban => ConversationCommand::Unban {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            },
            Moderation::Mute { until } => ConversationCommand::Mute {
                action_id,
                actor_id,
                user_id,
                reason: required(),
                until,
                at,
            },
            Moderation::Unmute => ConversationCommand::Unmute {
                action_id,
                actor_id,
                user_id,
                reason,
                at,
            },
        };
        let committed = self.commit(conversation_id, command, meta).await?;
        // Every moderation command's action has an id of its own; no event id is needed.
        let id = action_id.to_string();
        let made = Made::of(action_id, &committed, |event| {
            Some(ModerationRow::of(&event.moderation_action()?, &id))
        });
        Ok(Written::new(made, committed.position))
    }
}

/// A moderation action to take on a member.
#[derive(Debug, Clone, Copy)]
pub enum Moderation {
    SetRole(parley_aggregates::policy::Role),
    TransferOwnership,
    Kick,
    Ban { until: Option<time::OffsetDateTime> },
    Unban,
    Mute { until: Option<time::OffsetDateTime> },
    Unmute,
}
