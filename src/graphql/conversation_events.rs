//! `conversationEvents`: what one subscriber sees of one conversation — its events as
//! they are logged, typing as it happens — and where a removed member's resume ends.

use std::sync::Arc;

use async_graphql::{SimpleObject, Union, ID};
use cqrs_es::Aggregate as _;
use parley_aggregates::conversation::{Conversation, ConversationEvent as Domain};
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use parley_store::{log, Db, LogPosition};
use uuid::Uuid;

use super::error::ApiError;
use super::follow::{Flow, Follower};
use super::types::{named_user, Message, ModerationKind, User};
use crate::live::{Announced, LiveEvent, Signal};

#[derive(SimpleObject)]
pub struct MessagePosted {
    pub cursor: String,
    pub message: Message,
}

#[derive(SimpleObject)]
pub struct MessageEdited {
    pub cursor: String,
    pub message: Message,
}

#[derive(SimpleObject)]
pub struct MessageDeleted {
    pub cursor: String,
    pub message_id: ID,
}

#[derive(SimpleObject)]
pub struct ReactionAdded {
    pub cursor: String,
    pub message_id: ID,
    pub emoji: String,
    pub user: User,
}

#[derive(SimpleObject)]
pub struct ReactionRemoved {
    pub cursor: String,
    pub message_id: ID,
    pub emoji: String,
    pub user: User,
}

#[derive(SimpleObject)]
pub struct MemberJoined {
    pub cursor: String,
    pub user: User,
}

#[derive(SimpleObject)]
pub struct MemberLeft {
    pub cursor: String,
    pub user: User,
}

#[derive(SimpleObject)]
pub struct MemberRemoved {
    pub cursor: String,
    pub user: User,
    pub action: ModerationKind,
}

#[derive(SimpleObject)]
pub struct ReadReceiptUpdated {
    pub cursor: String,
    pub user: User,
    pub message_id: ID,
}

/// Someone started or stopped typing. Ephemeral: no cursor, never replayed.
#[derive(SimpleObject)]
pub struct TypingChanged {
    pub user: User,
    pub typing: bool,
}

/// Something that happened in a conversation.
#[derive(Union)]
pub enum ConversationEvent {
    MessagePosted(MessagePosted),
    MessageEdited(MessageEdited),
    MessageDeleted(MessageDeleted),
    ReactionAdded(ReactionAdded),
    ReactionRemoved(ReactionRemoved),
    MemberJoined(MemberJoined),
    MemberLeft(MemberLeft),
    MemberRemoved(MemberRemoved),
    ReadReceiptUpdated(ReadReceiptUpdated),
    TypingChanged(TypingChanged),
}

/// What one stored event means to a subscriber of one conversation.
enum Delivery {
    Skip,
    Send(ConversationEvent),
    /// Send, then end: the subscriber lost access here.
    SendAndEnd(ConversationEvent),
}

async fn message(db: &Db, event: &Arc<LiveEvent>, id: Uuid) -> Result<Message, ApiError> {
    event
        .message(db, &id.to_string())
        .await?
        .map(|row| Message::delivered(row, event.clone()))
        .ok_or_else(|| ApiError::internal("message missing from the read model"))
}

/// A user the event names, looked up once for all its subscribers.
async fn named(db: &Db, event: &LiveEvent, id: Uuid) -> Result<User, ApiError> {
    named_user(event.user(db, &id.to_string()).await?)
}

async fn interpret(
    db: &Db,
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
    event: &Arc<LiveEvent>,
) -> Result<Delivery, ApiError> {
    let cursor = event.position.to_cursor();
    let ours = conversation.to_string();
    Ok(
        match event.event_of(&[
            EventKind::Conversation,
            EventKind::Message,
            EventKind::Member,
        ])? {
            Some(Event::Conversation(decoded)) if event.aggregate_id == ours => {
                match decoded.clone() {
                    Domain::MessagePosted {
                        message_id,
                        body,
                        mentions,
                        ..
                    } => {
                        let mut posted = message(db, event, message_id).await?;
                        // The message as this event posted it, though the read model may
                        // already hold a later edit (which arrives as its own event). A
                        // deleted message stays a tombstone: replaying its post must not
                        // bring its text back.
                        if posted.0.deleted == 0 {
                            posted.0.body = Some(body);
                            posted.0.edited_at = None;
                            posted.0.mentions = serde_json::to_string(
                                &mentions.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                            )
                            .map_err(|error| ApiError::internal(error.to_string()))?;
                        }
                        Delivery::Send(ConversationEvent::MessagePosted(MessagePosted {
                            cursor,
                            message: posted,
                        }))
                    }
                    Domain::MemberJoined { user_id, .. } => {
                        Delivery::Send(ConversationEvent::MemberJoined(MemberJoined {
                            cursor,
                            user: named(db, event, user_id).await?,
                        }))
                    }
                    Domain::MemberLeft { user_id, .. } => {
                        let left = ConversationEvent::MemberLeft(MemberLeft {
                            cursor,
                            user: named(db, event, user_id).await?,
                        });
                        if user_id == viewer && !public {
                            Delivery::SendAndEnd(left)
                        } else {
                            Delivery::Send(left)
                        }
                    }
                    Domain::MemberKicked { user_id, .. } | Domain::MemberBanned { user_id, .. } => {
                        let action = if matches!(decoded, Domain::MemberKicked { .. }) {
                            ModerationKind::Kick
                        } else {
                            ModerationKind::Ban
                        };
                        let removed = ConversationEvent::MemberRemoved(MemberRemoved {
                            cursor,
                            user: named(db, event, user_id).await?,
                            action,
                        });
                        if user_id == viewer {
                            Delivery::SendAndEnd(removed)
                        } else {
                            Delivery::Send(removed)
                        }
                    }
                    _ => Delivery::Skip,
                }
            }
            Some(Event::Message(decoded)) => match decoded.clone() {
                MessageEvent::MessageEdited {
                    conversation_id,
                    message_id,
                    ..
                } if conversation_id == conversation => {
                    Delivery::Send(ConversationEvent::MessageEdited(MessageEdited {
                        cursor,
                        message: message(db, event, message_id).await?,
                    }))
                }
                MessageEvent::MessageDeleted {
                    conversation_id,
                    message_id,
                    ..
                } if conversation_id == conversation => {
                    Delivery::Send(ConversationEvent::MessageDeleted(MessageDeleted {
                        cursor,
                        message_id: ID(message_id.to_string()),
                    }))
                }
                MessageEvent::ReactionAdded {
                    conversation_id,
                    message_id,
                    user_id,
                    emoji,
                    ..
                } if conversation_id == conversation => {
                    Delivery::Send(ConversationEvent::ReactionAdded(ReactionAdded {
                        cursor,
                        message_id: ID(message_id.to_string()),
                        emoji,
                        user: named(db, event, user_id).await?,
                    }))
                }
                MessageEvent::ReactionRemoved {
                    conversation_id,
                    message_id,
                    user_id,
                    emoji,
                    ..
                } if conversation_id == conversation => {
                    Delivery::Send(ConversationEvent::ReactionRemoved(ReactionRemoved {
                        cursor,
                        message_id: ID(message_id.to_string()),
                        emoji,
                        user: named(db, event, user_id).await?,
                    }))
                }
                _ => Delivery::Skip,
            },
            Some(Event::Member(decoded)) => match decoded.clone() {
                MemberEvent::ReadMarkerMoved {
                    conversation_id,
                    user_id,
                    message_id,
                    ..
                } if conversation_id == conversation => {
                    Delivery::Send(ConversationEvent::ReadReceiptUpdated(ReadReceiptUpdated {
                        cursor,
                        user: named(db, event, user_id).await?,
                        message_id: ID(message_id.to_string()),
                    }))
                }
                _ => Delivery::Skip,
            },
            _ => Delivery::Skip,
        },
    )
}

/// A conversation event on its way to one subscriber, with the event or signal it
/// came from: subscribers of one shape share that origin's rendering of it.
pub(super) struct Delivered {
    pub event: ConversationEvent,
    pub origin: Origin,
}

pub(super) enum Origin {
    Event(Arc<LiveEvent>),
    Signal(Arc<Announced>),
}

impl Origin {
    pub(super) fn renders(&self) -> &crate::live::Renders {
        match self {
            Self::Event(event) => &event.renders,
            Self::Signal(signal) => &signal.renders,
        }
    }
}

type Out = super::follow::Out<Delivered>;

/// One subscriber's view of a conversation.
pub(super) struct ConversationFeed {
    pub db: Db,
    pub conversation: Uuid,
    pub viewer: Uuid,
    pub public: bool,
}

#[async_trait::async_trait]
impl Follower for ConversationFeed {
    type Item = Delivered;

    async fn event(&mut self, event: &Arc<LiveEvent>, out: &Out) -> Result<Flow, ApiError> {
        // Most events on a busy node are other conversations': skip them undecoded.
        if event.conversation_id() != Some(self.conversation.to_string().as_str()) {
            return Ok(Flow::Continue);
        }
        let delivery = interpret(&self.db, self.conversation, self.viewer, self.public, event);
        let delivered = |item| Delivered {
            event: item,
            origin: Origin::Event(event.clone()),
        };
        Ok(match delivery.await? {
            Delivery::Skip => Flow::Continue,
            Delivery::Send(item) => out.send(delivered(item)).await,
            Delivery::SendAndEnd(item) => {
                if let Flow::Continue = out.send(delivered(item)).await {
                    let denied = ApiError::Forbidden(
                        "you no longer have access to this conversation".to_owned(),
                    );
                    out.fail(denied).await;
                }
                Flow::Stop
            }
        })
    }

    /// Typing in this conversation by someone other than the subscriber.
    async fn signal(&mut self, announced: Arc<Announced>, out: &Out) -> Result<Flow, ApiError> {
        let Signal::Typing {
            conversation_id,
            user_id,
            typing,
        } = announced.signal
        else {
            return Ok(Flow::Continue);
        };
        if conversation_id != self.conversation || user_id == self.viewer {
            return Ok(Flow::Continue);
        }
        let user = named_user(announced.user(&self.db).await?)?;
        Ok(out
            .send(Delivered {
                event: ConversationEvent::TypingChanged(TypingChanged { user, typing }),
                origin: Origin::Signal(announced),
            })
            .await)
    }
}

/// Whether `viewer` was a member of the conversation at `cursor` and was removed
/// after it: such a subscriber may resume, and gets the events up to the removal.
pub(super) async fn removed_after(
    db: &Db,
    conversation: Uuid,
    viewer: Uuid,
    cursor: LogPosition,
) -> Result<bool, ApiError> {
    let events = log::stream_of_types(
        db,
        Conversation::TYPE,
        &conversation.to_string(),
        &Domain::MEMBERSHIP,
    )
    .await?;
    let mut member = false;
    for event in &events {
        let Some(Event::Conversation(decoded)) = event.event()? else {
            continue;
        };
        let (joined, user) = match decoded {
            Domain::ConversationCreated { members, .. } => {
                (members.iter().any(|m| m.user_id == viewer), viewer)
            }
            Domain::MemberJoined { user_id, .. } => (true, *user_id),
            Domain::MemberLeft { user_id, .. }
            | Domain::MemberKicked { user_id, .. }
            | Domain::MemberBanned { user_id, .. } => (false, *user_id),
            _ => continue,
        };
        if user != viewer {
            continue;
        }
        if event.position > cursor {
            return Ok(member && !joined);
        }
        member = joined;
    }
    Ok(false)
}
