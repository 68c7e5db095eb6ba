//! Which sign-in sessions have ended, held in memory on every node so that checking an
//! access token costs no database read.
//!
//! A session ends by logout, by reuse of a rotated refresh token, or by a password
//! change (which ends all of the user's sessions). The node that ends it records it at
//! once; every other node learns it from the event log (its live tail, woken by
//! `NOTIFY` on PostgreSQL). Only ends younger than the access-token lifetime are kept:
//! tokens of older sessions have expired anyway, so the set stays bounded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::user::UserEvent;
use parley_projections::access::unix_ms;
use parley_projections::{sessions, ProjectionError};
use parley_store::Db;
use tokio::sync::broadcast;
use uuid::Uuid;

use parley_store::StoredEvent;

use super::tokens::Grant;
use crate::clock::Clock;

/// How often forgotten ends are pruned.
const PRUNE: Duration = Duration::from_secs(60);

pub struct Revocations {
    /// Ended sessions and when they ended (Unix ms).
    ended: RwLock<HashMap<Uuid, i64>>,
    /// Tells open WebSockets to look at their session again.
    changed: broadcast::Sender<Uuid>,
    /// How long an access token lives, in ms: an end older than that matters no more.
    keep_ms: i64,
    clock: Arc<dyn Clock>,
    db: Db,
}

impl Revocations {
    /// Loads the ends that still matter and follows the log for new ones. `events` is
    /// the node's live tail, subscribed to before this loads so nothing falls between.
    pub async fn start<E>(
        db: Db,
        events: broadcast::Receiver<Arc<E>>,
        projections: &parley_projections::Projections,
        clock: Arc<dyn Clock>,
        access_ttl: Duration,
    ) -> Result<Arc<Self>, ProjectionError>
    where
        E: std::ops::Deref<Target = StoredEvent> + Send + Sync + 'static,
    {
        let revocations = Arc::new(Self {
            ended: RwLock::new(HashMap::new()),
            changed: broadcast::channel(64).0,
            // A little longer than a token lives, for clock skew between nodes.
            keep_ms: i64::try_from(access_ttl.as_millis()).unwrap_or(i64::MAX) + 60_000,
            clock,
            db,
        });
        // Ends committed before the tail's start reach the read model first.
        let head = parley_store::log::head(&revocations.db).await?;
        projections.wait_for(head, Duration::from_secs(10)).await;
        revocations.reload().await?;
        tokio::spawn(follow(Arc::downgrade(&revocations), events));
        Ok(revocations)
    }

    fn now_ms(&self) -> i64 {
        unix_ms(self.clock.now())
    }

    /// Takes in every end the read model holds that still matters.
    async fn reload(&self) -> Result<(), ProjectionError> {
        let since = self.now_ms() - self.keep_ms;
        let rows = sessions::ended_since(&self.db, since).await?;
        self.record(
            rows.into_iter()
                .filter_map(|(family, at)| Uuid::parse_str(&family).ok().map(|id| (id, at))),
        );
        Ok(())
    }

    /// Whether the grant's session is still open.
    pub fn allows(&self, grant: &Grant) -> bool {
        !self
            .ended
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(&grant.session_id)
    }

    /// Records that `sessions` ended now, and tells open sockets.
    pub fn end(&self, sessions: impl IntoIterator<Item = Uuid>) {
        let now = self.now_ms();
        self.record(sessions.into_iter().map(|session| (session, now)));
    }

    fn record(&self, ends: impl IntoIterator<Item = (Uuid, i64)>) {
        let mut fresh = Vec::new();
        {
            let mut ended = self
                .ended
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (session, at) in ends {
                if ended.insert(session, at).is_none() {
                    fresh.push(session);
                }
            }
        }
        for session in fresh {
            let _ = self.changed.send(session);
        }
    }

    /// Ended sessions, as they end.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.changed.subscribe()
    }

    fn prune(&self) {
        let horizon = self.now_ms() - self.keep_ms;
        self.ended
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, at| *at >= horizon);
    }

    /// The sessions a logged event ended, if any.
    async fn ended_by(&self, event: &StoredEvent) -> Result<Vec<Uuid>, ProjectionError> {
        let Some(Event::User(decoded)) = event.event_of(&[EventKind::User])? else {
            return Ok(Vec::new());
        };
        Ok(match decoded.clone() {
            UserEvent::SessionEnded { family_id, .. }
            | UserEvent::RefreshTokenReused { family_id, .. } => vec![family_id],
            // The read model already holds which sessions it ended: the tail delivers
            // an event only once every projector has applied it.
            UserEvent::PasswordChanged { changed_at, .. }
            | UserEvent::AccountErased {
                erased_at: changed_at,
                ..
            } => sessions::ended_at(&self.db, &event.aggregate_id, unix_ms(changed_at))
                .await?
                .iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect(),
            _ => Vec::new(),
        })
    }
}

async fn follow<E>(
    revocations: std::sync::Weak<Revocations>,
    mut events: broadcast::Receiver<Arc<E>>,
) where
    E: std::ops::Deref<Target = StoredEvent> + Send + Sync + 'static,
{
    let mut prune = tokio::time::interval(PRUNE);
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = prune.tick() => {
                match revocations.upgrade() {
                    Some(revocations) => revocations.prune(),
                    None => return,
                }
                continue;
            }
        };
        let Some(revocations) = revocations.upgrade() else {
            return;
        };
        match received {
            Ok(event) => match revocations.ended_by(&event).await {
                Ok(ended) if !ended.is_empty() => revocations.end(ended),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "cannot read which sessions ended"),
            },
            // Missed events: what the read model holds supersedes them.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if let Err(error) = revocations.reload().await {
                    tracing::error!(%error, "cannot reload ended sessions");
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
