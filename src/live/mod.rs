//! Live delivery: one tail over the global log per node, typing and presence signals,
//! and presence leases. The WebSocket sessions that carry it live in `http::ws`.
//!
//! The tail reads committed events in global order and hands each on once every
//! projector has applied it, so a subscriber that looks a message up finds it.
//! Subscribers of one conversation get that conversation's events only, through a queue
//! of their own filled by the tail: an event wakes its conversation's subscribers and no
//! one else's. Feeds that span conversations (`myEvents`) filter the broadcast of every
//! event. Either way a subscriber too slow to keep up falls off its bounded queue and is
//! told to resume from its last cursor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_aggregates::event::Event;
use parley_projections::attachments::{self, AttachmentRow};
use parley_projections::messages::{self, MessageRow};
use parley_projections::users::{self, UserRow};
use parley_projections::{ProjectionError, Projections};
use parley_store::{log, Db, LogPosition, StoredEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, Notify};

mod presence;
mod signals;

pub use presence::{Presence, HEARTBEAT_TTL};
pub use signals::{Announced, Signal, Signals, TYPING_TTL};

/// What an event or signal looked like to its subscribers, serialized once per kind of
/// subscription (a shape id, see `graphql::shared`) and sent as is to every subscriber
/// of that kind. It ends with the event, as the shared lookups do.
#[derive(Debug, Default)]
pub struct Renders(Mutex<Vec<(u64, Rendered)>>);

/// One rendering, once made.
type Rendered = Arc<tokio::sync::OnceCell<Arc<str>>>;

impl Renders {
    /// The payload rendered for `shape`, rendered by `render` if no one has yet; those
    /// asking meanwhile wait for that one rendering. A failed rendering is not kept.
    pub async fn get_or_try_render<F, Fut, E>(&self, shape: u64, render: F) -> Result<Arc<str>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<str>, E>>,
    {
        let cell = {
            let mut renders = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match renders.iter().find(|(id, _)| *id == shape) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::default();
                    renders.push((shape, Arc::clone(&cell)));
                    cell
                }
            }
        };
        cell.get_or_try_init(render).await.cloned()
    }
}

/// A subscriber's end of the live tail: every event, or one conversation's.
pub enum LiveReceiver {
    All(broadcast::Receiver<Arc<LiveEvent>>),
    Conversation(ConversationReceiver),
}

impl LiveReceiver {
    /// The next event; `Lagged` once the subscriber fell further behind than its
    /// buffer allows (after the events it still holds), `Closed` when the tail stops.
    pub async fn recv(&mut self) -> Result<Arc<LiveEvent>, RecvError> {
        match self {
            Self::All(receiver) => receiver.recv().await,
            Self::Conversation(receiver) => match receiver.events.recv().await {
                Some(event) => Ok(event),
                None if receiver.lagged.load(Ordering::Acquire) => Err(RecvError::Lagged(1)),
                None => Err(RecvError::Closed),
            },
        }
    }
}

/// One conversation's events for one subscriber. The queue is bounded by the
/// subscriber buffer but allocates as it fills, so an idle subscriber costs a few
/// hundred bytes whatever the bound.
pub struct ConversationReceiver {
    events: mpsc::Receiver<Arc<LiveEvent>>,
    lagged: Arc<AtomicBool>,
}

/// The tail's end of a [`ConversationReceiver`].
struct Route {
    events: mpsc::Sender<Arc<LiveEvent>>,
    lagged: Arc<AtomicBool>,
}

const POLL: Duration = Duration::from_millis(100);
/// How often routes of subscribers gone from quiet conversations are swept.
const SWEEP: Duration = Duration::from_secs(30);
/// One committed event as this node's subscribers get it, with the lookups they share:
/// a thousand subscribers of a conversation read a new message's row, and its author's,
/// once, not a thousand times.
pub struct LiveEvent {
    pub event: StoredEvent,
    message: tokio::sync::OnceCell<Option<MessageRow>>,
    /// The files sent with that message, by its id.
    attachments: tokio::sync::OnceCell<(String, Vec<AttachmentRow>)>,
    /// The users the event's deliveries name (its author or subject, mentions), each
    /// looked up by the first subscriber that needs it.
    users: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<UserRow>>>>>,
    pub renders: Renders,
}

impl LiveEvent {
    pub fn new(event: StoredEvent) -> Self {
        Self {
            event,
            message: tokio::sync::OnceCell::new(),
            attachments: tokio::sync::OnceCell::new(),
            users: Mutex::default(),
            renders: Renders::default(),
        }
    }

    /// The message row this event is about (an event concerns at most one message).
    /// A post the messages read model does not show yet (it lagged past the tail's
    /// wait, or failed) is shown as it was posted: its event stands.
    pub async fn message(&self, db: &Db, id: &str) -> Result<Option<MessageRow>, ProjectionError> {
        self.message
            .get_or_try_init(|| async {
                let stored = messages::by_id(db, id).await?;
                Ok(stored.or_else(|| self.posted(id)))
            })
            .await
            .cloned()
    }

    /// The row this event makes if it posts message `id`.
    fn posted(&self, id: &str) -> Option<MessageRow> {
        let Ok(Some(Event::Conversation(event))) = self.event.event() else {
            return None;
        };
        MessageRow::posted(event).filter(|row| row.id == id)
    }

    /// The files sent with the message this event is about, looked up once for all
    /// its subscribers (any other message's are looked up afresh).
    pub async fn attachments(
        &self,
        db: &Db,
        message_id: &str,
    ) -> Result<Vec<AttachmentRow>, ProjectionError> {
        let (id, rows) = self
            .attachments
            .get_or_try_init(|| async {
                let rows = attachments::of_message(db, message_id).await?;
                Ok::<_, ProjectionError>((message_id.to_owned(), rows))
            })
            .await?;
        if id == message_id {
            Ok(rows.clone())
        } else {
            attachments::of_message(db, message_id).await
        }
    }

    /// A user as this event's subscribers see it. Looked up when the first of them
    /// asks, as each of them would have, so all see the same row; the lookup ends with
    /// the event, so nothing here can outlive a change to the user.
    pub async fn user(&self, db: &Db, id: &str) -> Result<Option<UserRow>, ProjectionError> {
        let cell = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| users::by_id(db, id)).await.cloned()
    }
}

impl std::ops::Deref for LiveEvent {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

pub struct LiveTail {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// Subscribers by conversation id.
    routes: Mutex<HashMap<String, Vec<Route>>>,
    /// Events a subscriber may fall behind by.
    buffer: usize,
    pub wake: Arc<Notify>,
    /// Log events held by subscription replays on this node.
    pub replaying: Arc<ReplayGauge>,
}

/// How many log events replays hold at once, now and at most: replays read the log a
/// page at a time, so this stays within a page per replaying subscription however far
/// back their cursors lie.
#[derive(Debug, Default)]
pub struct ReplayGauge {
    held: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl ReplayGauge {
    /// Counts `events` as held until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, events: usize) -> ReplayHold {
        let held = self.held.fetch_add(events, Ordering::SeqCst) + events;
        self.most.fetch_max(held, Ordering::SeqCst);
        ReplayHold {
            gauge: self.clone(),
            events,
        }
    }

    /// The most events held at once since the node started.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

pub struct ReplayHold {
    gauge: Arc<ReplayGauge>,
    events: usize,
}

impl Drop for ReplayHold {
    fn drop(&mut self) {
        self.gauge.held.fetch_sub(self.events, Ordering::SeqCst);
    }
}

impl LiveTail {
    /// Starts tailing after the current head of the log; a subscriber more than
    /// `buffer` events behind the tail is told to resume.
    pub async fn start(
        db: Db,
        projections: Arc<Projections>,
        buffer: usize,
    ) -> Result<Arc<Self>, parley_projections::ProjectionError> {
        let tail = Arc::new(Self::new(buffer));
        let head = log::head(&db).await?;
        tokio::spawn(run(db, projections, tail.clone(), head));
        Ok(tail)
    }

    fn new(buffer: usize) -> Self {
        let buffer = buffer.max(1);
        let (sender, _) = broadcast::channel(buffer);
        Self {
            sender,
            routes: Mutex::default(),
            buffer,
            wake: Arc::new(Notify::new()),
            replaying: Arc::default(),
        }
    }

    /// Every event.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    /// The events of one conversation (those whose payload names it).
    pub fn subscribe_to(&self, conversation_id: &str) -> LiveReceiver {
        let (events, receiver) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        self.routes()
            .entry(conversation_id.to_owned())
            .or_default()
            .push(Route {
                events,
                lagged: lagged.clone(),
            });
        LiveReceiver::Conversation(ConversationReceiver {
            events: receiver,
            lagged,
        })
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Route>>> {
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands `event` to every subscriber, queueing it for its conversation's.
    fn deliver(&self, event: LiveEvent) {
        let event = Arc::new(event);
        if let Some(conversation_id) = event.conversation_id() {
            let mut routes = self.routes();
            if let Some(subscribers) = routes.get_mut(conversation_id) {
                subscribers.retain(|route| match route.events.try_send(event.clone()) {
                    Ok(()) => true,
                    // Dropping the route ends the subscriber's queue after what it holds.
                    Err(TrySendError::Full(_)) => {
                        route.lagged.store(true, Ordering::Release);
                        false
                    }
                    Err(TrySendError::Closed(_)) => false,
                });
                if subscribers.is_empty() {
                    routes.remove(conversation_id);
                }
            }
        }
        // Fails only when nobody follows every event, which is fine.
        let _ = self.sender.send(event);
    }

    /// Forgets the routes of subscribers that left conversations with no event since.
    fn sweep(&self) {
        self.routes().retain(|_, subscribers| {
            subscribers.retain(|route| !route.events.is_closed());
            !subscribers.is_empty()
        });
    }

    /// How many conversation subscribers the tail routes to.
    #[cfg(test)]
    fn routed(&self) -> usize {
        self.routes().values().map(Vec::len).sum()
    }
}

async fn run(
    db: Db,
    projections: Arc<Projections>,
    tail: Arc<LiveTail>,
    mut position: LogPosition,
) {
    let commits = projections.commits();
    let mut swept = Instant::now();
    loop {
        if swept.elapsed() >= SWEEP {
            tail.sweep();
            swept = Instant::now();
        }
        match log::read_after(&db, position, 500).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    // Deliver only what every read model already shows.
                    projections
                        .wait_for(event.position, Duration::from_secs(5))
                        .await;
                    position = event.position;
                    tail.deliver(LiveEvent::new(event));
                }
                continue;
            }
            Ok(_) => {}
            // The server is stopping.
            Err(_) if db.read.is_closed() => return,
            Err(error) => tracing::warn!(%error, "live tail read failed"),
        }
        tokio::select! {
            _ = tail.wake.notified() => {}
            _ = commits.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pos: i64, conversation_id: &str) -> LiveEvent {
        LiveEvent::new(StoredEvent {
            position: LogPosition { tx: 1, pos },
            aggregate_type: "Message".to_owned(),
            sequence: pos,
            event_type: "MessageEdited".to_owned(),
            event_version: "1".to_owned(),
            payload_text:
                serde_json::json!({ "MessageEdited": { "conversation_id": conversation_id } })
                    .to_string(),
            ..StoredEvent::default()
        })
    }

    async fn positions(receiver: &mut LiveReceiver, count: usize) -> Vec<i64> {
        let mut seen = Vec::new();
        for _ in 0..count {
            seen.push(receiver.recv().await.expect("an event").position.pos);
        }
        seen
    }

    #[tokio::test]
    async fn a_conversations_subscriber_gets_only_its_events_and_everything_feeds_get_all() {
        let tail = LiveTail::new(8);
        let mut ours = tail.subscribe_to("c1");
        let mut theirs = tail.subscribe_to("c2");
        let mut everything = LiveReceiver::All(tail.subscribe());
        for (pos, conversation) in [(1, "c2"), (2, "c1"), (3, "c2"), (4, "c1")] {
            tail.deliver(event(pos, conversation));
        }
        assert_eq!(positions(&mut ours, 2).await, [2, 4]);
        assert_eq!(positions(&mut theirs, 2).await, [1, 3]);
        assert_eq!(positions(&mut everything, 4).await, [1, 2, 3, 4]);
        assert_eq!(tail.routed(), 2);
    }

    #[tokio::test]
    async fn a_subscriber_past_its_buffer_gets_what_it_holds_then_lagged() {
        let tail = LiveTail::new(2);
        let mut slow = tail.subscribe_to("c1");
        let mut keeping_up = tail.subscribe_to("c1");
        for pos in 1..=2 {
            tail.deliver(event(pos, "c1"));
        }
        assert_eq!(positions(&mut keeping_up, 2).await, [1, 2]);
        tail.deliver(event(3, "c1"));
        assert_eq!(positions(&mut keeping_up, 1).await, [3]);
        assert_eq!(positions(&mut slow, 2).await, [1, 2]);
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(_))));
        assert_eq!(tail.routed(), 1, "the lagged route is gone");
    }

    /// The subscribers of one event (or typing signal) see one lookup of a user,
    /// whenever they ask; the next event looks again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_events_subscribers_share_one_lookup_of_each_user() {
        let ada = uuid::Uuid::now_v7();
        let id = ada.to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open_sqlite_file(&dir.path().join("parley.db"))
            .await
            .expect("database");
        db.migrate().await.expect("migrations");
        let rename = |name: &'static str| {
            let db = db.clone();
            async move {
                sqlx::query(
                    "INSERT INTO users (id, username, display_name, registered_at) \
                     VALUES ($1, 'ada', $2, '2026-01-01T00:00:00Z') \
                     ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name",
                )
                .bind(ada.to_string())
                .bind(name)
                .execute(&db.write)
                .await
                .expect("user row");
            }
        };
        rename("Ada").await;
        let first = Arc::new(event(1, "c1"));
        let typing = Announced::new(Signal::Typing {
            conversation_id: uuid::Uuid::now_v7(),
            user_id: ada,
            typing: true,
        });
        let lookups = (0..50).map(|i| {
            let (first, typing, db, id) = (first.clone(), typing.clone(), db.clone(), id.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    first.user(&db, &id).await
                } else {
                    typing.user(&db).await
                }
            })
        });
        for found in futures::future::join_all(lookups).await {
            let found = found.expect("task").expect("lookup").expect("user");
            assert_eq!(found.display_name, "Ada");
        }
        rename("Ada L.").await;
        let again = first.user(&db, &id).await.expect("lookup").expect("user");
        assert_eq!(again.display_name, "Ada", "a late subscriber looked again");
        let again = typing.user(&db).await.expect("lookup").expect("user");
        assert_eq!(again.display_name, "Ada", "a late subscriber looked again");
        let next = event(2, "c1");
        let fresh = next.user(&db, &id).await.expect("lookup").expect("user");
        assert_eq!(fresh.display_name, "Ada L.");
        assert_eq!(next.user(&db, "nobody").await.expect("lookup"), None);
    }

    #[tokio::test]
    async fn routes_of_subscribers_that_left_are_swept() {
        let tail = LiveTail::new(4);
        let staying = tail.subscribe_to("c1");
        drop(tail.subscribe_to("c1"));
        drop(tail.subscribe_to("quiet"));
        assert_eq!(tail.routed(), 3);
        tail.sweep();
        assert_eq!(tail.routed(), 1);
        drop(staying);
        tail.deliver(event(1, "c1"));
        assert_eq!(tail.routed(), 0);
    }
}
