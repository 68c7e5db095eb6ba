//! Subscription resolvers: `conversationEvents` and `myEvents`, resumable from any
//! cursor, and `presenceChanged`.

use async_graphql::{Context, Result, SimpleObject, Subscription as SubscriptionRoot, Union, ID};
use futures::Stream;
use parley_aggregates::conversation::ConversationEvent as Domain;
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use parley_projections::{log, presence, users, Db, LogPosition};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::error::ApiError;
use super::follow::{follow, send, Flow, Follower, Source};
use super::my_events::{self, UserEvent};
use super::types::{readable_conversation, Message, ModerationKind, Presence, User};
use super::{state, viewer};
use crate::chat::parse_id;
use crate::live::{LiveEvent, Signal};

/// Longest a new subscription waits for read models to reach its start.
const READ_MODEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How many users one `presenceChanged` may watch.
const MAX_WATCHED: usize = 200;

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

/// A user's presence changed (or, first, what it is when the subscription starts).
#[derive(SimpleObject)]
pub struct PresenceUpdate {
    pub user: User,
    pub status: super::types::PresenceStatus,
    pub last_seen_at: Option<time::OffsetDateTime>,
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

pub struct Subscription;

/// What one stored event means to a subscriber of one conversation.
enum Delivery {
    Skip,
    Send(ConversationEvent),
    /// Send, then end: the subscriber lost access here.
    SendAndEnd(ConversationEvent),
}

pub(super) async fn user(db: &Db, id: Uuid) -> Result<User, ApiError> {
    users::by_ids(db, &[id.to_string()])
        .await?
        .into_iter()
        .next()
        .map(User::from)
        .ok_or_else(|| ApiError::internal("user missing from the read model"))
}

async fn message(db: &Db, event: &LiveEvent, id: Uuid) -> Result<Message, ApiError> {
    event
        .message(db, &id.to_string())
        .await?
        .map(Message)
        .ok_or_else(|| ApiError::internal("message missing from the read model"))
}

async fn interpret(
    db: &Db,
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
    event: &LiveEvent,
) -> Result<Delivery, ApiError> {
    let cursor = event.position.to_cursor();
    let ours = conversation.to_string();
    Ok(match event.aggregate_type.as_str() {
        "Conversation" if event.aggregate_id == ours => match event.decode::<Domain>()? {
            Domain::MessagePosted { message_id, .. } => {
                Delivery::Send(ConversationEvent::MessagePosted(MessagePosted {
                    cursor,
                    message: message(db, event, message_id).await?,
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

type Out = mpsc::Sender<Result<ConversationEvent, async_graphql::Error>>;

/// One subscriber's view of a conversation.
struct ConversationFeed {
    db: Db,
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
}

#[async_trait::async_trait]
impl Follower for ConversationFeed {
    type Item = ConversationEvent;

    async fn event(&mut self, event: &LiveEvent, out: &Out) -> Result<Flow, ApiError> {
        // Most events on a busy node are other conversations': skip them undecoded.
        if event.conversation_id() != Some(self.conversation.to_string().as_str()) {
            return Ok(Flow::Continue);
        }
        let delivery = interpret(&self.db, self.conversation, self.viewer, self.public, event);
        Ok(match delivery.await? {
            Delivery::Skip => Flow::Continue,
            Delivery::Send(item) => send(out, item).await,
            Delivery::SendAndEnd(item) => {
                if let Flow::Continue = send(out, item).await {
                    let denied = ApiError::Forbidden(
                        "you no longer have access to this conversation".to_owned(),
                    );
                    let _ = out.send(Err(denied.into())).await;
                }
                Flow::Stop
            }
        })
    }

    /// Typing in this conversation by someone other than the subscriber.
    async fn signal(&mut self, signal: Signal, out: &Out) -> Result<Flow, ApiError> {
        let Signal::Typing {
            conversation_id,
            user_id,
            typing,
        } = signal
        else {
            return Ok(Flow::Continue);
        };
        if conversation_id != self.conversation || user_id == self.viewer {
            return Ok(Flow::Continue);
        }
        let user = user(&self.db, user_id).await?;
        Ok(send(
            out,
            ConversationEvent::TypingChanged(TypingChanged { user, typing }),
        )
        .await)
    }
}

/// Whether `viewer` was a member of the conversation at `cursor` and was removed
/// after it: such a subscriber may resume, and gets the events up to the removal.
async fn removed_after(
    db: &Db,
    conversation: Uuid,
    viewer: Uuid,
    cursor: LogPosition,
) -> Result<bool, ApiError> {
    let events = log::stream_of_types(
        db,
        "Conversation",
        &conversation.to_string(),
        &[
            "ConversationCreated",
            "MemberJoined",
            "MemberLeft",
            "MemberKicked",
            "MemberBanned",
        ],
    )
    .await?;
    let mut member = false;
    for event in &events {
        let (joined, user) = match event.decode::<Domain>()? {
            Domain::ConversationCreated { members, .. } => {
                (members.iter().any(|m| m.user_id == viewer), viewer)
            }
            Domain::MemberJoined { user_id, .. } => (true, user_id),
            Domain::MemberLeft { user_id, .. }
            | Domain::MemberKicked { user_id, .. }
            | Domain::MemberBanned { user_id, .. } => (false, user_id),
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

fn stream<T: Send + 'static>(receiver: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
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
    ) -> Result<impl Stream<Item = Result<ConversationEvent, async_graphql::Error>>> {
        let me = viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?;
        let state = state(ctx);
        let after = after
            .map(|cursor| LogPosition::from_cursor(&cursor).map_err(|_| invalid_cursor()))
            .transpose()?;
        let source = open_source(state, after, Some(state.signals.subscribe())).await?;
        let row = match (readable_conversation(ctx, &id.to_string()).await, after) {
            (Ok(row), _) => row,
            // A removed member may still collect what happened before the removal.
            (Err(ApiError::Forbidden(reason)), Some(cursor)) => {
                if !removed_after(&state.db, id, me, cursor).await? {
                    return Err(ApiError::Forbidden(reason).into());
                }
                parley_projections::conversations::by_id(&state.db, &id.to_string())
                    .await?
                    .ok_or_else(|| ApiError::NotFound("conversation not found".to_owned()))?
            }
            (Err(error), _) => return Err(error.into()),
        };
        let feed = ConversationFeed {
            db: state.db.clone(),
            conversation: id,
            viewer: me,
            public: row.kind == "CHANNEL" && row.visibility == "PUBLIC",
        };
        Ok(spawn(source, feed))
    }

    /// `myEvents`: notifications, unread counts, and conversations added or removed.
    /// Resuming replays missed notifications and membership changes, then sends the
    /// current counts of the conversations that changed meanwhile.
    async fn my_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<UserEvent, async_graphql::Error>>> {
        let me = viewer(ctx)?;
        let state = state(ctx);
        let after = after
            .map(|cursor| LogPosition::from_cursor(&cursor).map_err(|_| invalid_cursor()))
            .transpose()?;
        let source = open_source(state, after, None).await?;
        // Memberships as of the start at least; later changes arrive as events.
        let feed = my_events::UserFeed::new(state.db.clone(), me, after.is_some()).await?;
        Ok(spawn(source, feed))
    }

    /// `presenceChanged`: first each watched user's presence as it is, then every change.
    async fn presence_changed(
        &self,
        ctx: &Context<'_>,
        user_ids: Vec<ID>,
    ) -> Result<impl Stream<Item = PresenceUpdate>> {
        viewer(ctx)?;
        let raw: Vec<&str> = user_ids.iter().map(|id| id.as_str()).collect();
        let watched: std::collections::HashSet<Uuid> =
            parley_aggregates::values::parse_id_list(&raw, "userIds", MAX_WATCHED)
                .map_err(ApiError::from)?
                .into_iter()
                .collect();
        if watched.is_empty() {
            return Err(ApiError::from(parley_aggregates::InputError::new(
                "userIds",
                "must list 1 to 200 users",
            ))
            .into());
        }
        let state = state(ctx);
        let ids: Vec<String> = watched.iter().map(Uuid::to_string).collect();
        let found = users::by_ids(&state.db, &ids).await?;
        if found.len() != ids.len() {
            return Err(ApiError::NotFound("user not found".to_owned()).into());
        }
        let signals = state.signals.subscribe();
        let (sender, receiver) = mpsc::channel(state.config.subscriber_buffer as usize);
        tokio::spawn(watch_presence(state.db.clone(), watched, signals, sender));
        Ok(stream(receiver))
    }
}

/// Where a subscription starts: the live tail is subscribed first, then the start
/// is fixed (the cursor, or the head of the log), then the read models are awaited up
/// to it. Access checks and state loaded after this see at least everything before the
/// start, and everything after it reaches the follower: a member removed while
/// subscribing is either refused or sees the removal.
async fn open_source(
    state: &crate::app::AppState,
    after: Option<LogPosition>,
    signals: Option<broadcast::Receiver<Signal>>,
) -> Result<Source, ApiError> {
    let live = state.live.subscribe();
    let after = match after {
        Some(cursor) => cursor,
        None => log::head(&state.db).await?,
    };
    state.projections.wait_for(after, READ_MODEL_WAIT).await;
    Ok(Source {
        db: state.db.clone(),
        projections: state.projections.clone(),
        after,
        live,
        signals,
        replaying: state.live.replaying.clone(),
    })
}

/// Follows the log for `follower` and returns the subscriber's end of its channel.
fn spawn<F: Follower + 'static>(
    source: Source,
    follower: F,
) -> impl Stream<Item = Result<F::Item, async_graphql::Error>> {
    let (sender, receiver) = mpsc::channel(super::follow::HAND_OFF);
    tokio::spawn(follow(follower, source, sender));
    stream(receiver)
}

fn invalid_cursor() -> ApiError {
    parley_aggregates::InputError::new("after", "is not a cursor this server issued").into()
}

async fn presence_update(
    db: &Db,
    user_id: Uuid,
    status: &str,
    last_seen_at: Option<i64>,
) -> Result<PresenceUpdate, ApiError> {
    let presence = Presence::new(status, last_seen_at)?;
    Ok(PresenceUpdate {
        user: user(db, user_id).await?,
        status: presence.status,
        last_seen_at: presence.last_seen_at,
    })
}

/// Sends every watched user's presence as stored now.
async fn send_current(
    db: &Db,
    watched: &std::collections::HashSet<Uuid>,
    out: &mpsc::Sender<PresenceUpdate>,
) -> Result<bool, ApiError> {
    let ids: Vec<String> = watched.iter().map(Uuid::to_string).collect();
    let rows = presence::by_ids(db, &ids).await?;
    for id in watched {
        let (status, seen) = rows.get(&id.to_string()).map_or(("OFFLINE", None), |row| {
            (row.status.as_str(), row.last_seen_at)
        });
        if out
            .send(presence_update(db, *id, status, seen).await?)
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn watch_presence(
    db: Db,
    watched: std::collections::HashSet<Uuid>,
    mut signals: broadcast::Receiver<Signal>,
    out: mpsc::Sender<PresenceUpdate>,
) {
    let run = async {
        if !send_current(&db, &watched, &out).await? {
            return Ok(());
        }
        loop {
            let signal = tokio::select! {
                signal = signals.recv() => signal,
                () = out.closed() => return Ok(()),
            };
            match signal {
                Ok(Signal::Presence {
                    user_id,
                    status,
                    last_seen_at,
                }) if watched.contains(&user_id) => {
                    let update = presence_update(&db, user_id, &status, last_seen_at).await?;
                    if out.send(update).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                // Missed changes: what is stored now supersedes them.
                Err(RecvError::Lagged(_)) => {
                    if !send_current(&db, &watched, &out).await? {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    };
    let result: Result<(), ApiError> = run.await;
    if let Err(error) = result {
        tracing::warn!(?error, "presence subscription ended");
    }
}
