//! The `Message` aggregate: what happens to a message after it is posted — edits (every
//! earlier body kept), deletion as a tombstone, and reactions (one per user and emoji).
//!
//! The post itself is a `Conversation` event, which decides `seq` and membership. The
//! facts a message is born with (conversation, author, seq, body, mentions) reach this
//! aggregate with its first command, from the read model; they never change, and once
//! this stream has an event its own state is the truth.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conversation::mentions::{mentions_in, Named};
use crate::conversation::Conversation;
use crate::policy::{allows, Action, Role};
use crate::values::{parse_reason, Emoji, InputError, MessageBody};

/// A message as posted, looked up by the command service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub author_id: Uuid,
    pub seq: u64,
    pub body: String,
    pub mentions: BTreeSet<Uuid>,
    pub posted_at: Option<OffsetDateTime>,
}

/// The actor's standing in the message's conversation, looked up by the command service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Uuid,
    /// `None` when not a member.
    pub role: Option<Role>,
    /// The conversation's members, whom an edit may mention.
    pub members: BTreeSet<Uuid>,
    /// Whether the actor is muted in the conversation now: a muted member cannot edit,
    /// react or (in the conversation) post.
    pub muted: bool,
    /// The message author's current role (`None` when no longer a member).
    pub author_role: Option<Role>,
}

impl Actor {
    /// `user_id`'s standing in `conversation` at `at`, towards a message by `author_id`.
    pub fn in_conversation(
        conversation: &Conversation,
        user_id: Uuid,
        author_id: Uuid,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            user_id,
            role: conversation.role_of(user_id).ok(),
            members: conversation.members.keys().copied().collect(),
            muted: conversation.is_muted(user_id, at),
            author_role: conversation.role_of(author_id).ok(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum MessageCommand {
    Edit {
        posted: PostedMessage,
        actor: Actor,
        body: String,
        max_body_chars: usize,
        /// The accounts the new body's `@names` belong to, from the service's directory.
        named: Named,
        at: OffsetDateTime,
    },
    Delete {
        posted: PostedMessage,
        actor: Actor,
        reason: Option<String>,
        at: OffsetDateTime,
    },
    AddReaction {
        posted: PostedMessage,
        actor: Actor,
        emoji: String,
        at: OffsetDateTime,
    },
    RemoveReaction {
        posted: PostedMessage,
        actor: Actor,
        emoji: String,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MessageEvent {
    MessageEdited {
        message_id: Uuid,
        conversation_id: Uuid,
        author_id: Uuid,
        seq: u64,
        body: String,
        previous_body: String,
        mentions: Vec<Uuid>,
        /// Mentions this edit adds; only these are notified.
        new_mentions: Vec<Uuid>,
        #[serde(with = "time::serde::rfc3339")]
        edited_at: OffsetDateTime,
        /// When the message was posted, which names the key its text is sealed with
        /// (absent from edits recorded before sealing).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        posted_at: Option<OffsetDateTime>,
    },
    MessageDeleted {
        message_id: Uuid,
        conversation_id: Uuid,
        author_id: Uuid,
        seq: u64,
        deleted_by: Uuid,
        reason: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        deleted_at: OffsetDateTime,
    },
    ReactionAdded {
        message_id: Uuid,
        conversation_id: Uuid,
        message_author_id: Uuid,
        user_id: Uuid,
        emoji: String,
        #[serde(with = "time::serde::rfc3339")]
        reacted_at: OffsetDateTime,
    },
    ReactionRemoved {
        message_id: Uuid,
        conversation_id: Uuid,
        message_author_id: Uuid,
        user_id: Uuid,
        emoji: String,
        #[serde(with = "time::serde::rfc3339")]
        removed_at: OffsetDateTime,
    },
}

impl MessageEvent {
    /// The stored type name of `MessageDeleted`, for reading just those from the log.
    pub const DELETED: &'static str = "MessageDeleted";
}

impl DomainEvent for MessageEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MessageEdited { .. } => "MessageEdited",
            Self::MessageDeleted { .. } => Self::DELETED,
            Self::ReactionAdded { .. } => "ReactionAdded",
            Self::ReactionRemoved { .. } => "ReactionRemoved",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Invalid(#[from] InputError),
    #[error("you are not a member of this conversation")]
    NotMember,
    #[error("{0}")]
    NotAllowed(&'static str),
    #[error("the message was deleted")]
    Deleted,
}

/// Only what can change is kept: the immutable facts (conversation, author, seq) come
/// with every command.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Whether `body` and `mentions` come from this stream (an edit or deletion
    /// happened) rather than from the facts the message was posted with.
    pub rewritten: bool,
    pub body: String,
    pub mentions: BTreeSet<Uuid>,
    pub deleted: bool,
    /// `emoji` → users who reacted with it.
    pub reactions: BTreeMap<String, BTreeSet<Uuid>>,
}

/// How many different emoji one user may put on one message: enough for any person,
/// not enough to fill a message with thousands of reaction rows.
pub const MAX_REACTIONS_PER_USER: usize = 20;

fn member_role(actor: &Actor) -> Result<Role, MessageError> {
    actor.role.ok_or(MessageError::NotMember)
}

impl Aggregate for Message {
    const TYPE: &'static str = "Message";
    type Command = MessageCommand;
    type Event = MessageEvent;
    type Error = MessageError;
    type Services = ();

    async fn handle(
        &mut self,
        command: MessageCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), MessageError> {
        if !self.rewritten {
            let posted = match &command {
                MessageCommand::Edit { posted, .. }
                | MessageCommand::Delete { posted, .. }
                | MessageCommand::AddReaction { posted, .. }
                | MessageCommand::RemoveReaction { posted, .. } => posted,
            };
            self.body.clone_from(&posted.body);
            self.mentions.clone_from(&posted.mentions);
        }
        let event = match command {
            MessageCommand::Edit {
                posted,
                actor,
                body,
                max_body_chars,
                named,
                at,
            } => {
                member_role(&actor)?;
                if actor.user_id != posted.author_id {
                    return Err(MessageError::NotAllowed(
                        "only the author can edit a message",
                    ));
                }
                // An edit can say anything a post can (mentions included), so a mute
                // stops it as it stops posting.
                if actor.muted {
                    return Err(MessageError::NotAllowed(
                        "you cannot edit messages while muted",
                    ));
                }
                if self.deleted {
                    return Err(MessageError::Deleted);
                }
                let body = MessageBody::parse(&body, "body", max_body_chars)?;
                if body.as_str() == self.body {
                    return Ok(());
                }
                let mentions = mentions_in(
                    body.as_str(),
                    &named,
                    |user_id| actor.members.contains(user_id),
                    posted.author_id,
                );
                let new_mentions = mentions.difference(&self.mentions).copied().collect();
                MessageEvent::MessageEdited {
                    message_id: posted.message_id,
                    conversation_id: posted.conversation_id,
                    author_id: posted.author_id,
                    seq: posted.seq,
                    body: body.into_string(),
                    previous_body: self.body.clone(),
                    mentions: mentions.into_iter().collect(),
                    new_mentions,
                    edited_at: at,
                    posted_at: posted.posted_at,
                }
            }
            MessageCommand::Delete {
                posted,
                actor,
                reason,
                at,
            } => {
                let role = member_role(&actor)?;
                if self.deleted {
                    return Ok(());
                }
                let own = actor.user_id == posted.author_id;
                if !own && !allows(role, Action::DeleteOthersMessage) {
                    return Err(MessageError::NotAllowed(
                        "only the author or a moderator can delete a message",
                    ));
                }
                if !own && actor.author_role.is_some_and(|author| author >= role) {
                    return Err(MessageError::NotAllowed(
                        "an admin cannot delete messages of the owner or another admin",
                    ));
                }
                // A reason is required when deleting someone else's message.
                let reason = parse_reason(reason.as_deref(), !own)?;
                MessageEvent::MessageDeleted {
                    message_id: posted.message_id,
                    conversation_id: posted.conversation_id,
                    author_id: posted.author_id,
                    seq: posted.seq,
                    deleted_by: actor.user_id,
                    reason,
                    deleted_at: at,
                }
            }
            MessageCommand::AddReaction {
                posted,
                actor,
                emoji,
                at,
            } => {
                let role = member_role(&actor)?;
                if !allows(role, Action::React) || actor.muted {
                    return Err(MessageError::NotAllowed(
                        "you cannot react here while muted",
                    ));
                }
                if self.deleted {
                    return Err(MessageError::Deleted);
                }
                let emoji = Emoji::parse(&emoji, "emoji")?;
                let already = self
                    .reactions
                    .get(emoji.as_str())
                    .is_some_and(|users| users.contains(&actor.user_id));
                if already {
                    return Ok(());
                }
                let mine = self
                    .reactions
                    .values()
                    .filter(|users| users.contains(&actor.user_id))
                    .count();
                if mine >= MAX_REACTIONS_PER_USER {
                    return Err(InputError::new(
                        "emoji",
                        format!(
                            "you can add at most {MAX_REACTIONS_PER_USER} different reactions to a message"
                        ),
                    )
                    .into());
                }
                MessageEvent::ReactionAdded {
                    message_id: posted.message_id,
                    conversation_id: posted.conversation_id,
                    message_author_id: posted.author_id,
                    user_id: actor.user_id,
                    emoji: emoji.as_str().to_owned(),
                    reacted_at: at,
                }
            }
            MessageCommand::RemoveReaction {
                posted,
                actor,
                emoji,
                at,
            } => {
                member_role(&actor)?;
                let emoji = Emoji::parse(&emoji, "emoji")?;
                let present = self
                    .reactions
                    .get(emoji.as_str())
                    .is_some_and(|users| users.contains(&actor.user_id));
                if !present {
                    return Ok(());
                }
                MessageEvent::ReactionRemoved {
                    message_id: posted.message_id,
                    conversation_id: posted.conversation_id,
                    message_author_id: posted.author_id,
                    user_id: actor.user_id,
                    emoji: emoji.as_str().to_owned(),
                    removed_at: at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: MessageEvent) {
        match event {
            MessageEvent::MessageEdited { body, mentions, .. } => {
                self.rewritten = true;
                self.body = body;
                self.mentions = mentions.into_iter().collect();
            }
            MessageEvent::MessageDeleted { .. } => {
                self.rewritten = true;
                self.deleted = true;
                self.body.clear();
                self.mentions.clear();
                self.reactions.clear();
            }
            MessageEvent::ReactionAdded { user_id, emoji, .. } => {
                self.reactions.entry(emoji).or_default().insert(user_id);
            }
            MessageEvent::ReactionRemoved { user_id, emoji, .. } => {
                if let Some(users) = self.reactions.get_mut(&emoji) {
                    users.remove(&user_id);
                    if users.is_empty() {
                        self.reactions.remove(&emoji);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
