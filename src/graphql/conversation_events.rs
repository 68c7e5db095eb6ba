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
    Send,
    /// Send, then end: the subscriber lost access here.
    SendAndEnd,
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

const KINDS: [EventKind; 3] = [
    EventKind::Conversation,
    EventKind::Message,
    EventKind::Member,
];

/// Whether `event` goes to `viewer`'s subscription to `conversation`: the one part of a
/// delivery that depends on the subscriber, decided without building the event.
fn decide(
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
    event: &LiveEvent,
) -> Result<Delivery, ApiError> {
    Ok(match event.event_of(&KINDS)? {
        Some(Event::Conversation(decoded))
            if Uuid::parse_str(&event.aggregate_id).ok() == Some(conversation) =>
        {
            match decoded {
                Domain::MessagePosted { .. } | Domain::MemberJoined { .. } => Delivery::Send,
                Domain::MemberLeft { user_id, .. } if *user_id == viewer && !public => {
                    Delivery::SendAndEnd
                }
                Domain::MemberLeft { .. } => Delivery::Send,
                Domain::MemberKicked { user_id, .. } | Domain::MemberBanned { user_id, .. } => {
                    if *user_id == viewer {
                        Delivery::SendAndEnd
                    } else {
                        Delivery::Send
                    }
                }
                _ => Delivery::Skip,
            }
        }
        Some(Event::Message(
            MessageEvent::MessageEdited {
                conversation_id, ..
            }
            | MessageEvent::MessageDeleted {
                conversation_id, ..
            }
            | MessageEvent::ReactionAdded {
                conversation_id, ..
            }
            | MessageEvent::ReactionRemoved {
                conversation_id, ..
            },
        ))
        | Some(Event::Member(MemberEvent::ReadMarkerMoved {
            conversation_id, ..
        })) if *conversation_id == conversation => Delivery::Send,
        _ => Delivery::Skip,
    })
}

/// `event` as every subscriber of its conversation sees it, for an event `decide` sends.
async fn build(db: &Db, event: &Arc<LiveEvent>) -> Result<ConversationEvent, ApiError> {
    let cursor = event.position.to_cursor();
    let user = |id| named(db, event, id);
    Ok(match event.event_of(&KINDS)? {
        Some(Event::Conversation(decoded)) => match decoded {
            Domain::MessagePosted {
                message_id,
                body,
                mentions,
                ..
            } => {
                let mut posted = message(db, event, *message_id).await?;
                // The message as this event posted it, though the read model may already
                // hold a later edit (which arrives as its own event). A deleted message
                // stays a tombstone: replaying its post must not bring its text back.
                if posted.0.deleted == 0 {
                    posted.0.body = Some(body.clone());
                    posted.0.edited_at = None;
                    posted.0.mentions = serde_json::to_string(
                        &mentions.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                    )
                    .map_err(|error| ApiError::internal(error.to_string()))?;
                }
                ConversationEvent::MessagePosted(MessagePosted {
                    cursor,
                    message: posted,
                })
            }
            Domain::MemberJoined { user_id, .. } => ConversationEvent::MemberJoined(MemberJoined {
                cursor,
                user: user(*user_id).await?,
            }),
            Domain::MemberLeft { user_id, .. } => ConversationEvent::MemberLeft(MemberLeft {
                cursor,
                user: user(*user_id).await?,
            }),
            Domain::MemberKicked { user_id, .. } => {
                ConversationEvent::MemberRemoved(MemberRemoved {
                    cursor,
                    user: user(*user_id).await?,
                    action: ModerationKind::Kick,
                })
            }
            Domain::MemberBanned { user_id, .. } => {
                ConversationEvent::MemberRemoved(MemberRemoved {
                    cursor,
                    user: user(*user_id).await?,
                    action: ModerationKind::Ban,
                })
            }
            _ => return Err(not_delivered()),
        },
        Some(Event::Message(decoded)) => match decoded {
            MessageEvent::MessageEdited { message_id, .. } => {
                ConversationEvent::MessageEdited(MessageEdited {
                    cursor,
                    message: message(db, event, *message_id).await?,
                })
            }
            MessageEvent::MessageDeleted { message_id, .. } => {
                ConversationEvent::MessageDeleted(MessageDeleted {
                    cursor,
                    message_id: ID(message_id.to_string()),
                })
            }
            MessageEvent::ReactionAdded {
                message_id,
                user_id,
                emoji,
                ..
            } => ConversationEvent::ReactionAdded(ReactionAdded {
                cursor,
                message_id: ID(message_id.to_string()),
                emoji: emoji.clone(),
                user: user(*user_id).await?,
            }),
            MessageEvent::ReactionRemoved {
                message_id,
                user_id,
                emoji,
                ..
            } => ConversationEvent::ReactionRemoved(ReactionRemoved {
                cursor,
                message_id: ID(message_id.to_string()),
                emoji: emoji.clone(),
                user: user(*user_id).await?,
            }),
        },
        Some(Event::Member(MemberEvent::ReadMarkerMoved {
            user_id,
            message_id,
            ..
        })) => ConversationEvent::ReadReceiptUpdated(ReadReceiptUpdated {
            cursor,
            user: user(*user_id).await?,
            message_id: ID(message_id.to_string()),
        }),
        _ => return Err(not_delivered()),
    })
}

fn not_delivered() -> ApiError {
    ApiError::internal("not an event conversationEvents delivers")
}

/// A conversation event on its way to one subscriber: the event or signal it comes
/// from, built into what the subscriber gets only when it is rendered, so subscribers of
/// one shape build and render it once between them.
pub(super) struct Delivered {
    pub origin: Origin,
}

pub(super) enum Origin {
    Event(Arc<LiveEvent>),
    /// Someone's typing changed.
    Typing(Arc<Announced>),
}

impl Delivered {
    /// What the subscriber gets.
    pub(super) async fn event(&self, db: &Db) -> Result<ConversationEvent, ApiError> {
        match &self.origin {
            Origin::Event(event) => build(db, event).await,
            Origin::Typing(announced) => {
                let Signal::Typing { typing, .. } = announced.signal else {
                    return Err(ApiError::internal("not a typing signal"));
                };
                let user = named_user(announced.user(db).await?)?;
                Ok(ConversationEvent::TypingChanged(TypingChanged {
                    user,
                    typing,
                }))
            }
        }
    }

    pub(super) fn renders(&self) -> &crate::live::Renders {
        match &self.origin {
            Origin::Event(event) => &event.renders,
            Origin::Typing(signal) => &signal.renders,
        }
    }
}

/// One subscriber's events, built; a failure to build one ends the subscription with it
/// (the subscriber resumes from its last cursor).
pub(super) fn built(
    db: Db,
    items: impl futures::Stream<Item = Result<Delivered, async_graphql::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<ConversationEvent, async_graphql::Error>> + Send + 'static {
    use futures::StreamExt as _;
    items
        .then(move |item| {
            let db = db.clone();
            Box::pin(async move {
                match item {
                    Ok(delivered) => delivered.event(&db).await.map_err(Into::into),
                    Err(error) => Err(error),
                }
            })
        })
        .scan(false, |ended, item| {
            let next = (!*ended).then(|| {
                *ended = item.is_err();
                item
            });
            std::future::ready(next)
        })
}

type Out = super::follow::Out<Delivered>;

/// One subscriber's view of a conversation.
pub(super) struct ConversationFeed {
    pub conversation: Uuid,
    pub viewer: Uuid,
    pub public: bool,
}

#[async_trait::async_trait]
impl Follower for ConversationFeed {
    type Item = Delivered;

    async fn event(&mut self, event: &Arc<LiveEvent>, out: &Out) -> Result<Flow, ApiError> {
        // Most events on a busy node are other conversations': skip them undecoded.
        let conversation = event
            .conversation_id()
            .and_then(|id| Uuid::parse_str(id).ok());
        if conversation != Some(self.conversation) {
            return Ok(Flow::Continue);
        }
        let delivered = || Delivered {
            origin: Origin::Event(event.clone()),
        };
        Ok(
            match decide(self.conversation, self.viewer, self.public, event)? {
                Delivery::Skip => Flow::Continue,
                Delivery::Send => out.send(delivered()).await,
                Delivery::SendAndEnd => {
                    if let Flow::Continue = out.send(delivered()).await {
                        let denied = ApiError::Forbidden(
                            "you no longer have access to this conversation".to_owned(),
                        );
                        out.fail(denied).await;
                    }
                    Flow::Stop
                }
            },
        )
    }

    /// Typing in this conversation by someone other than the subscriber.
    async fn signal(&mut self, announced: Arc<Announced>, out: &Out) -> Result<Flow, ApiError> {
        let Signal::Typing {
            conversation_id,
            user_id,
            ..
        } = announced.signal
        else {
            return Ok(Flow::Continue);
        };
        if conversation_id != self.conversation || user_id == self.viewer {
            return Ok(Flow::Continue);
        }
        Ok(out
            .send(Delivered {
                origin: Origin::Typing(announced),
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
