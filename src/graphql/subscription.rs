//! The subscription root: `conversationEvents` and `myEvents`, resumable from any
//! cursor, and `presenceChanged`; each feed lives in a module of its own.

use std::sync::Arc;

use async_graphql::{Context, Result, Subscription as SubscriptionRoot, ID};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use parley_projections::users;
use parley_store::{log, LogPosition};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::conversation_events::{built, removed_after, ConversationEvent, ConversationFeed};
use super::error::ApiError;
use super::follow::{following, following_in_task, Source};
use super::my_events::{self, UserEvent};
use super::parse_id;
use super::presence_feed::{watch_presence, PresenceUpdate};
use super::shared::{Handoff, Preloaded};
use super::types::readable_conversation;
use super::{state, viewer};
use crate::live::{Announced, LiveReceiver};

/// Longest a new subscription waits for read models to reach its start.
const READ_MODEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How many users one `presenceChanged` may watch.
const MAX_WATCHED: usize = 200;

pub struct Subscription;

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
    ) -> Result<BoxStream<'static, Result<ConversationEvent, async_graphql::Error>>> {
        // A shared rendering of one event (see `shared`).
        if let Some(preloaded) = ctx.data_opt::<Preloaded>() {
            return Ok(futures::stream::iter(preloaded.take()).boxed());
        }
        let me = viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?;
        let state = state(ctx);
        let after = after
            .map(|cursor| LogPosition::from_cursor(&cursor).map_err(|_| invalid_cursor()))
            .transpose()?;
        let live = state.live.subscribe_to(&id.to_string());
        let source = open_source(state, live, after, Some(state.signals.subscribe())).await?;
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
            conversation: id,
            viewer: me,
            public: row.kind == "CHANNEL" && row.visibility == "PUBLIC",
        };
        let items = following(feed, source);
        // A subscription whose payloads are shared: its events go to the session.
        if let Some(handoff) = ctx.data_opt::<Arc<Handoff>>() {
            handoff.put(items.boxed());
            return Ok(futures::stream::empty().boxed());
        }
        Ok(built(state.db.clone(), items).boxed())
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
        let live = LiveReceiver::All(state.live.subscribe());
        let source = open_source(state, live, after, None).await?;
        // Memberships as of the start at least; later changes arrive as events.
        let feed = my_events::UserFeed::new(state.db.clone(), me, after.is_some()).await?;
        // Its follower reads the database for every event (notifications, counts).
        Ok(following_in_task(feed, source))
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

/// Where a subscription starts: the live tail is subscribed first (`live`), then the
/// start is fixed (the cursor, or the head of the log), then the read models are awaited up
/// to it. Access checks and state loaded after this see at least everything before the
/// start, and everything after it reaches the follower: a member removed while
/// subscribing is either refused or sees the removal.
async fn open_source(
    state: &crate::app::AppState,
    live: LiveReceiver,
    after: Option<LogPosition>,
    signals: Option<broadcast::Receiver<Arc<Announced>>>,
) -> Result<Source, ApiError> {
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

fn invalid_cursor() -> ApiError {
    parley_aggregates::InputError::new("after", "is not a cursor this server issued").into()
}
