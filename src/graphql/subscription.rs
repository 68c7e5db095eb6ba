//! Subscription resolvers: `conversationEvents`, resumable from any cursor.

use std::sync::Arc;

use async_graphql::{
    Context, ErrorExtensions as _, Result, SimpleObject, Subscription as SubscriptionRoot, Union,
    ID,
};
use futures::channel::mpsc;
use futures::{SinkExt as _, Stream};
use parley_aggregates::conversation::ConversationEvent as Domain;
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use parley_projections::{log, messages, users, Db, LogPosition, StoredEvent};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::error::{code, ApiError};
use super::types::{readable_conversation, Message, ModerationKind, User};
use super::{state, viewer};
use crate::chat::parse_id;

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
}

pub struct Subscription;

/// What one stored event means to a subscriber of one conversation.
enum Delivery {
    Skip,
    Send(ConversationEvent),
    /// Send, then end: the subscriber lost access here.
    SendAndEnd(ConversationEvent),
}

async fn user(db: &Db, id: Uuid) -> Result<User, ApiError> {
    users::by_ids(db, &[id.to_string()])
        .await?
        .into_iter()
        .next()
        .map(User::from)
        .ok_or_else(|| ApiError::internal("user missing from the read model"))
}

async fn message(db: &Db, id: Uuid) -> Result<Message, ApiError> {
    messages::by_id(db, &id.to_string())
        .await?
        .map(Message)
        .ok_or_else(|| ApiError::internal("message missing from the read model"))
}

async fn interpret(
    db: &Db,
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
    event: &StoredEvent,
) -> Result<Delivery, ApiError> {
    let cursor = event.position.to_cursor();
    let ours = conversation.to_string();
    Ok(match event.aggregate_type.as_str() {
        "Conversation" if event.aggregate_id == ours => match event.decode::<Domain>()? {
            Domain::MessagePosted { message_id, .. } => {
                Delivery::Send(ConversationEvent::MessagePosted(MessagePosted {
                    cursor,
                    message: message(db, message_id).await?,
                }))
            }
            Domain::MemberJoined { user_id, .. } => {
                Delivery::Send(ConversationEvent::MemberJoined(MemberJoined {
                    cursor,
                    user: user(db, user_id).await?,
                }))
            }
            Domain::MemberLeft { user_id, .. } => {
                let left = ConversationEvent::MemberLeft(MemberLeft {
                    cursor,
                    user: user(db, user_id).await?,
                });
                if user_id == viewer && !public {
                    Delivery::SendAndEnd(left)
                } else {
                    Delivery::Send(left)
                }
            }
            Domain::MemberKicked { user_id, .. } | Domain::MemberBanned { user_id, .. } => {
                let action = if event.event_type == "MemberKicked" {
                    ModerationKind::Kick
                } else {
                    ModerationKind::Ban
                };
                let removed = ConversationEvent::MemberRemoved(MemberRemoved {
                    cursor,
                    user: user(db, user_id).await?,
                    action,
                });
                if user_id == viewer {
                    Delivery::SendAndEnd(removed)
                } else {
                    Delivery::Send(removed)
                }
            }
            _ => Delivery::Skip,
        },
        "Message" => match event.decode::<MessageEvent>()? {
            MessageEvent::MessageEdited {
                conversation_id,
                message_id,
                ..
            } if conversation_id == conversation => {
                Delivery::Send(ConversationEvent::MessageEdited(MessageEdited {
                    cursor,
                    message: message(db, message_id).await?,
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
                    user: user(db, user_id).await?,
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
                    user: user(db, user_id).await?,
                }))
            }
            _ => Delivery::Skip,
        },
        "MemberState" => match event.decode::<MemberEvent>()? {
            MemberEvent::ReadMarkerMoved {
                conversation_id,
                user_id,
                message_id,
                ..
            } if conversation_id == conversation => {
                Delivery::Send(ConversationEvent::ReadReceiptUpdated(ReadReceiptUpdated {
                    cursor,
                    user: user(db, user_id).await?,
                    message_id: ID(message_id.to_string()),
                }))
            }
            _ => Delivery::Skip,
        },
        _ => Delivery::Skip,
    })
}

fn resume_required(cursor: LogPosition) -> async_graphql::Error {
    async_graphql::Error::new("the subscriber fell too far behind; resume from the cursor")
        .extend_with(|_, extensions| {
            extensions.set("code", code::RESUME_REQUIRED);
            extensions.set("cursor", cursor.to_cursor());
        })
}

type Item = Result<ConversationEvent, async_graphql::Error>;

/// What the subscriber's stream shares between the replay and the live phase.
struct Feed {
    db: Db,
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
    /// The last event handled; anything at or before it is a duplicate.
    last: LogPosition,
    out: mpsc::Sender<Item>,
}

impl Feed {
    /// Handles one event; false once the stream is over.
    async fn deliver(&mut self, event: &StoredEvent) -> bool {
        if event.position <= self.last {
            return true;
        }
        self.last = event.position;
        match interpret(&self.db, self.conversation, self.viewer, self.public, event).await {
            Ok(Delivery::Skip) => true,
            Ok(Delivery::Send(item)) => self.out.send(Ok(item)).await.is_ok(),
            Ok(Delivery::SendAndEnd(item)) => {
                let _ = self.out.send(Ok(item)).await;
                let denied = ApiError::Forbidden(
                    "you no longer have access to this conversation".to_owned(),
                );
                let _ = self.out.send(Err(denied.into())).await;
                false
            }
            Err(error) => {
                let _ = self.out.send(Err(error.into())).await;
                false
            }
        }
    }

    /// Replays the log after the cursor, then follows the live tail, with no gap and
    /// no duplicate at the seam: the live subscription is taken before the replay
    /// starts, and anything at or before the last event handled is skipped.
    async fn run(mut self, mut live: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>) {
        loop {
            let batch = match log::read_after(&self.db, self.last, 500).await {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = self.out.send(Err(ApiError::from(error).into())).await;
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for event in &batch {
                if !self.deliver(event).await {
                    return;
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    if !self.deliver(&event).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let _ = self.out.send(Err(resume_required(self.last))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[SubscriptionRoot]
impl Subscription {
    /// `conversationEvents`: what happens in a conversation; pass the last `cursor`
    /// received as `after` to resume with nothing lost or repeated.
    async fn conversation_events(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Item>> {
        let me = viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?;
        let row = readable_conversation(ctx, &id.to_string()).await?;
        let public = row.kind == "CHANNEL" && row.visibility == "PUBLIC";
        let state = state(ctx);
        let live = state.live.subscribe();
        let start = match after {
            Some(cursor) => LogPosition::from_cursor(&cursor).map_err(ApiError::from)?,
            None => log::head(&state.db).await.map_err(ApiError::from)?,
        };
        let (sender, receiver) = mpsc::channel(crate::live::SUBSCRIBER_BUFFER);
        let feed = Feed {
            db: state.db.clone(),
            conversation: id,
            viewer: me,
            public,
            last: start,
            out: sender,
        };
        tokio::spawn(feed.run(live));
        Ok(receiver)
    }
}
