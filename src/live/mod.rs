//! Live delivery: one tail over the global log per node, typing and presence signals,
//! and presence leases. The WebSocket sessions that carry it live in `http::ws`.
//!
//! The tail reads committed events in global order and broadcasts each once every
//! projector has applied it, so a subscriber that looks a message up finds it. Each
//! subscription filters that one stream; a subscriber too slow to keep up falls off the
//! bounded channel and is told to resume from its last cursor.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parley_projections::messages::{self, MessageRow};
use parley_projections::{ProjectionError, Projections};
use parley_store::{log, Db, LogPosition, StoredEvent};
use tokio::sync::{broadcast, Notify};

mod presence;
mod signals;

pub use presence::{Presence, HEARTBEAT_TTL};
pub use signals::{Signal, Signals, TYPING_TTL};

/// Delivery of one event to many subscribers.
pub type LiveReceiver = broadcast::Receiver<Arc<LiveEvent>>;

const POLL: Duration = Duration::from_millis(100);
/// One committed event as this node's subscribers get it, with the lookup they share:
/// a thousand subscribers of a conversation read a new message's row once, not a
/// thousand times.
pub struct LiveEvent {
    pub event: StoredEvent,
    message: tokio::sync::OnceCell<Option<MessageRow>>,
}

impl LiveEvent {
    pub fn new(event: StoredEvent) -> Self {
        Self {
            event,
            message: tokio::sync::OnceCell::new(),
        }
    }

    /// The message row this event is about (an event concerns at most one message).
    pub async fn message(&self, db: &Db, id: &str) -> Result<Option<MessageRow>, ProjectionError> {
        self.message
            .get_or_try_init(|| messages::by_id(db, id))
            .await
            .cloned()
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
        let (sender, _) = broadcast::channel(buffer.max(1));
        let tail = Arc::new(Self {
            sender,
            wake: Arc::new(Notify::new()),
            replaying: Arc::default(),
        });
        let head = log::head(&db).await?;
        tokio::spawn(run(db, projections, tail.clone(), head));
        Ok(tail)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }
}

async fn run(
    db: Db,
    projections: Arc<Projections>,
    tail: Arc<LiveTail>,
    mut position: LogPosition,
) {
    let commits = projections.commits();
    loop {
        match log::read_after(&db, position, 500).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    // Deliver only what every read model already shows.
                    projections
                        .wait_for(event.position, Duration::from_secs(5))
                        .await;
                    position = event.position;
                    let _ = tail.sender.send(Arc::new(LiveEvent::new(event)));
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
