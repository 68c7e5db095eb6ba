//! Following the global log for one subscription: replay from a cursor, then the live
//! tail, with no gap and no duplicate at the seam, and an end with `RESUME_REQUIRED`
//! for a subscriber that falls behind. What the subscription makes of each event is its
//! [`Follower`]'s business.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::ErrorExtensions as _;
use parley_projections::Projections;
use parley_store::{log, Db, LogPosition};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::error::{code, ApiError};
use crate::live::{Announced, LiveEvent, LiveReceiver};

/// Longest a replay waits for read models to include what it replays.
const REPLAY_WAIT: Duration = Duration::from_secs(5);
/// Events a replay reads at a time. A replay never reads ahead of its subscriber (it
/// waits on the hand-off below), so one costs a page and a hand-off of memory however
/// far back its cursor lies.
const REPLAY_BATCH: i64 = 100;
/// Items between a follower and the socket that writes them. The slack for a slow
/// subscriber is its live tail queue (`PARLEY_SUBSCRIBER_BUFFER`).
const HAND_OFF: usize = 16;

/// Whether the subscription goes on after an event.
pub(super) enum Flow {
    Continue,
    /// The subscriber is gone, or the subscription ended (its last items are sent).
    Stop,
}

/// An item on its way to the subscriber. Boxed, because a channel allocates its first
/// block of slots when it is made, and an event is a few hundred bytes: unboxed, every
/// subscription would hold kilobytes of empty slots.
type Handed<T> = Result<Box<T>, Box<async_graphql::Error>>;

/// A follower's way to its subscriber.
pub(super) struct Out<T>(mpsc::Sender<Handed<T>>);

impl<T> Out<T> {
    /// Sends one item; `Stop` when the subscriber is gone.
    pub(super) async fn send(&self, item: T) -> Flow {
        match self.0.send(Ok(Box::new(item))).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    /// Ends the subscription with `error`.
    pub(super) async fn fail(&self, error: impl Into<async_graphql::Error>) {
        let _ = self.0.send(Err(Box::new(error.into()))).await;
    }

    async fn closed(&self) {
        self.0.closed().await;
    }
}

/// The subscriber's stream of `follower`'s items. The follower runs inside it, when
/// the socket's task polls it, rather than as a task of its own: a delivery wakes one
/// task instead of two, and a subscription costs no task. Only for followers that read
/// nothing from the database per event (see [`following_in_task`]).
pub(super) fn following<F: Follower + 'static>(
    follower: F,
    source: Source,
) -> impl futures::Stream<Item = Result<F::Item, async_graphql::Error>> + Send {
    use futures::{FutureExt as _, StreamExt as _};
    let (sender, receiver) = mpsc::channel(HAND_OFF);
    // Ends with the follower; the items it handed over are still read to the end.
    let follower = follow(follower, source, Out(sender))
        .into_stream()
        .filter_map(|()| std::future::ready(None));
    futures::stream::select(handed(receiver), follower)
}

/// As [`following`], with the follower on a task of its own: for followers that read
/// the database for each event. A follower inside its subscriber's stream is polled only
/// while the subscriber asks for more, so a query it started meanwhile keeps its pooled
/// connection while the subscriber waits for one to resolve what it received; with as
/// many such subscriptions as connections, they wait on each other for good. The task
/// ends with the subscription: its sends fail once the subscriber is gone.
pub(super) fn following_in_task<F: Follower + 'static>(
    follower: F,
    source: Source,
) -> impl futures::Stream<Item = Result<F::Item, async_graphql::Error>> + Send {
    let (sender, receiver) = mpsc::channel(HAND_OFF);
    tokio::spawn(follow(follower, source, Out(sender)));
    handed(receiver)
}

/// The items a follower handed over, unboxed.
fn handed<T: Send + 'static>(
    receiver: mpsc::Receiver<Handed<T>>,
) -> impl futures::Stream<Item = Result<T, async_graphql::Error>> + Send {
    use futures::StreamExt as _;
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .map(|item| item.map(|item| *item).map_err(|error| *error))
}

/// What one subscription does with the log and with ephemeral signals. Its items go to
/// the subscriber through the channel `follow` was given.
#[async_trait::async_trait]
pub(super) trait Follower: Send {
    type Item: Send + 'static;

    /// Handles one event, each exactly once and in log order.
    async fn event(
        &mut self,
        event: &Arc<LiveEvent>,
        out: &Out<Self::Item>,
    ) -> Result<Flow, ApiError>;

    /// The replay is over; `at` is the last event it handled.
    async fn caught_up(
        &mut self,
        _at: LogPosition,
        _out: &Out<Self::Item>,
    ) -> Result<Flow, ApiError> {
        Ok(Flow::Continue)
    }

    /// Handles an ephemeral signal (live only, never replayed).
    async fn signal(
        &mut self,
        _signal: Arc<Announced>,
        _out: &Out<Self::Item>,
    ) -> Result<Flow, ApiError> {
        Ok(Flow::Continue)
    }
}

fn resume_required(cursor: LogPosition) -> async_graphql::Error {
    async_graphql::Error::new("the subscriber fell too far behind; resume from the cursor")
        .extend_with(|_, extensions| {
            extensions.set("code", code::RESUME_REQUIRED);
            extensions.set("cursor", cursor.to_cursor());
        })
}

/// Where a follower reads from. `live` (and `signals`) must be subscribed before the
/// replay starts, so nothing committed meanwhile falls between the two.
pub(super) struct Source {
    pub db: Db,
    pub projections: Arc<Projections>,
    pub after: LogPosition,
    pub live: LiveReceiver,
    pub signals: Option<broadcast::Receiver<Arc<Announced>>>,
    pub replaying: Arc<crate::live::ReplayGauge>,
}

/// Runs `follower` until the subscriber leaves or the subscription ends; an error
/// ends it with that error.
async fn follow<F: Follower>(mut follower: F, source: Source, out: Out<F::Item>) {
    let mut last = source.after;
    let result = run(&mut follower, source, &mut last, &out).await;
    match result {
        Ok(()) => {}
        Err(Ended::Lagged) => out.fail(resume_required(last)).await,
        Err(Ended::Failed(error)) => out.fail(error).await,
    }
}

enum Ended {
    Lagged,
    Failed(ApiError),
}

impl From<ApiError> for Ended {
    fn from(error: ApiError) -> Self {
        Self::Failed(error)
    }
}

async fn run<F: Follower>(
    follower: &mut F,
    source: Source,
    last: &mut LogPosition,
    out: &Out<F::Item>,
) -> Result<(), Ended> {
    let Source {
        db,
        projections,
        mut live,
        mut signals,
        replaying,
        ..
    } = source;
    loop {
        // Read by a task of its own: a follower is polled only while its subscriber
        // asks for more, and a query left half-done meanwhile would keep a pooled
        // connection from the subscribers whose events need one (a pool of them, all
        // waiting, would wait forever).
        let page = {
            let (db, after) = (db.clone(), *last);
            tokio::spawn(async move { log::read_after(&db, after, REPLAY_BATCH).await })
        };
        let batch = page
            .await
            .map_err(|error| ApiError::internal(error.to_string()))?
            .map_err(ApiError::from)?;
        let Some(newest) = batch.last() else { break };
        let _held = replaying.hold(batch.len());
        // Committed is not yet projected: look events up only once they are.
        projections.wait_for(newest.position, REPLAY_WAIT).await;
        for event in batch {
            *last = event.position;
            if let Flow::Stop = follower
                .event(&Arc::new(LiveEvent::new(event)), out)
                .await?
            {
                return Ok(());
            }
        }
    }
    if let Flow::Stop = follower.caught_up(*last, out).await? {
        return Ok(());
    }
    loop {
        let signal = async {
            match signals.as_mut() {
                Some(signals) => signals.recv().await,
                None => std::future::pending().await,
            }
        };
        let flow = tokio::select! {
            event = live.recv() => match event {
                // The replay may already have handled it.
                Ok(event) if event.position <= *last => Flow::Continue,
                Ok(event) => {
                    *last = event.position;
                    follower.event(&event, out).await?
                }
                Err(RecvError::Lagged(_)) => return Err(Ended::Lagged),
                Err(RecvError::Closed) => Flow::Stop,
            },
            signal = signal => match signal {
                Ok(signal) => follower.signal(signal, out).await?,
                // Signals are ephemeral: a missed one is superseded by the next.
                Err(RecvError::Lagged(_)) => Flow::Continue,
                Err(RecvError::Closed) => Flow::Stop,
            },
            () = out.closed() => Flow::Stop,
        };
        if let Flow::Stop = flow {
            return Ok(());
        }
    }
}
