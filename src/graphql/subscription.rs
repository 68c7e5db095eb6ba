//! Subscription resolvers: `conversationEvents` and `myEvents`, resumable from any
//! cursor, and `presenceChanged`.

use std::sync::Arc;

use async_graphql::{
    Context, ErrorExtensions as _, Result, SimpleObject, Subscription as SubscriptionRoot, Union,
    ID,
};
use futures::Stream;
use parley_aggregates::conversation::ConversationEvent as Domain;
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use parley_projections::{log, presence, users, Db, LogPosition};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::error::{code, ApiError};
use super::my_events::{self, UserEvent};
use super::types::{readable_conversation, Message, ModerationKind, Presence, User};
use super::{state, viewer};
use crate::chat::parse_id;
use crate::live::{LiveEvent, LiveReceiver, Signal};

/// Longest a replay waits for read models to include what it replays.
pub(super) const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
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

pub(super) fn resume_required(cursor: LogPosition) -> async_graphql::Error {
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
    projections: Arc<parley_projections::Projections>,
    conversation: Uuid,
    viewer: Uuid,
    public: bool,
    /// The last event handled; anything at or before it is a duplicate.
    last: LogPosition,
    out: mpsc::Sender<Item>,
}

impl Feed {
    /// Typing in this conversation by someone other than the subscriber.
    async fn typing(&mut self, signal: Signal) -> bool {
        let Signal::Typing {
            conversation_id,
            user_id,
            typing,
        } = signal
        else {
            return true;
        };
        if conversation_id != self.conversation || user_id == self.viewer {
            return true;
        }
        match user(&self.db, user_id).await {
            Ok(user) => {
                let event = ConversationEvent::TypingChanged(TypingChanged { user, typing });
                self.out.send(Ok(event)).await.is_ok()
            }
            Err(error) => {
                let _ = self.out.send(Err(error.into())).await;
                false
            }
        }
    }
}

impl Feed {
    /// Handles one event; false once the stream is over.
    async fn deliver(&mut self, event: &LiveEvent) -> bool {
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
    async fn run(mut self, mut live: LiveReceiver, mut signals: broadcast::Receiver<Signal>) {
        loop {
            let batch = match log::read_after(&self.db, self.last, 500).await {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = self.out.send(Err(ApiError::from(error).into())).await;
                    return;
                }
            };
            let Some(newest) = batch.last() else {
                break;
            };
            // Committed is not yet projected: look events up only once they are.
            self.projections
                .wait_for(newest.position, REPLAY_WAIT)
                .await;
            for event in batch {
                if !self.deliver(&LiveEvent::new(event)).await {
                    return;
                }
            }
        }
        loop {
            let out = self.out.clone();
            tokio::select! {
                event = live.recv() => match event {
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
                },
                signal = signals.recv() => match signal {
                    Ok(signal) => {
                        if !self.typing(signal).await {
                            return;
                        }
                    }
                    // Typing is ephemeral: a missed change is superseded by the next.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                () = out.closed() => return,
            }
        }
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
    ) -> Result<impl Stream<Item = Item>> {
        let me = viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?;
        let state = state(ctx);
        let after = after
            .map(|cursor| LogPosition::from_cursor(&cursor).map_err(|_| invalid_cursor()))
            .transpose()?;
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
        let public = row.kind == "CHANNEL" && row.visibility == "PUBLIC";
        let live = state.live.subscribe();
        let signals = state.signals.subscribe();
        let start = match after {
            Some(cursor) => cursor,
            None => log::head(&state.db).await.map_err(ApiError::from)?,
        };
        let (sender, receiver) = mpsc::channel(state.config.subscriber_buffer as usize);
        let feed = Feed {
            db: state.db.clone(),
            projections: state.projections.clone(),
            conversation: id,
            viewer: me,
            public,
            last: start,
            out: sender,
        };
        tokio::spawn(feed.run(live, signals));
        Ok(stream(receiver))
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
        let live = state.live.subscribe();
        let (sender, receiver) = mpsc::channel(state.config.subscriber_buffer as usize);
        let feed = my_events::UserFeed::new(
            state.db.clone(),
            state.projections.clone(),
            me,
            after,
            sender,
        )
        .await?;
        tokio::spawn(feed.run(live));
        Ok(stream(receiver))
    }

    /// `presenceChanged`: first each watched user's presence as it is, then every change.
    async fn presence_changed(
        &self,
        ctx: &Context<'_>,
        user_ids: Vec<ID>,
    ) -> Result<impl Stream<Item = PresenceUpdate>> {
        viewer(ctx)?;
        if user_ids.is_empty() || user_ids.len() > MAX_WATCHED {
            return Err(ApiError::from(parley_aggregates::InputError::new(
                "userIds",
                "must list 1 to 200 users",
            ))
            .into());
        }
        let watched = user_ids
            .iter()
            .map(|id| parse_id(id, "userIds"))
            .collect::<Result<std::collections::HashSet<Uuid>, _>>()?;
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
