//! Presence: `ONLINE` while a user has an open WebSocket connection on any node or sent
//! a heartbeat within the last minute, `AWAY` when the client says so, else `OFFLINE`.
//!
//! Each node leases its users' connections in the database and renews the leases
//! while it lives, so a node that dies stops keeping its users online within one lease.
//! Transitions are announced as signals by whichever node records them first.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parley_projections::presence::{self, PresenceRow};
use parley_projections::{Db, ProjectionError};
use uuid::Uuid;

use super::signals::{Signal, Signals};
use crate::clock::Clock;

/// A heartbeat keeps a user online this long.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(60);
/// How long a node's connection lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);
/// How often lapsed users are looked for.
const SWEEP: Duration = Duration::from_secs(2);
/// Leases are renewed every this many sweeps (10 s), well within a lease: renewal
/// writes a row per connected user, so it runs less often than the cheap sweep.
const RENEW_EVERY: u32 = 5;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub struct Presence {
    db: Db,
    clock: Arc<dyn Clock>,
    signals: Arc<Signals>,
}

impl Presence {
    /// Starts renewing this node's leases and looking for users whose presence lapsed.
    pub fn start(db: Db, clock: Arc<dyn Clock>, signals: Arc<Signals>) -> Arc<Self> {
        let presence = Arc::new(Self { db, clock, signals });
        tokio::spawn(sweep(Arc::downgrade(&presence)));
        presence
    }

    fn node(&self) -> String {
        self.signals.node.to_string()
    }

    fn now(&self) -> i64 {
        let now = self.clock.now();
        i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or_default()
    }

    /// A WebSocket connection of the user opened on this node.
    pub async fn connected(&self, user: Uuid) -> Result<(), ProjectionError> {
        let now = self.now();
        presence::add_connections(
            &self.db,
            &self.node(),
            &user.to_string(),
            1,
            now + millis(LEASE),
        )
        .await?;
        self.settle(user).await
    }

    /// A WebSocket connection of the user on this node closed.
    pub async fn disconnected(&self, user: Uuid) -> Result<(), ProjectionError> {
        let now = self.now();
        presence::add_connections(
            &self.db,
            &self.node(),
            &user.to_string(),
            -1,
            now + millis(LEASE),
        )
        .await?;
        self.settle(user).await
    }

    /// `heartbeat`, or `setPresence` with `away`.
    pub async fn heartbeat(&self, user: Uuid, away: Option<bool>) -> Result<(), ProjectionError> {
        presence::heartbeat(&self.db, &user.to_string(), self.now(), away).await?;
        self.settle(user).await
    }

    /// Records the user's current status and announces it if it changed.
    async fn settle(&self, user: Uuid) -> Result<(), ProjectionError> {
        let id = user.to_string();
        let now = self.now();
        let status =
            presence::current_status(&self.db, &id, now, now - millis(HEARTBEAT_TTL)).await?;
        if let Some(row) = presence::transition(&self.db, &id, status, now).await? {
            self.announce(user, &row).await;
        }
        Ok(())
    }

    async fn announce(&self, user: Uuid, row: &PresenceRow) {
        self.signals
            .publish(Signal::Presence {
                user_id: user,
                status: row.status.clone(),
                last_seen_at: row.last_seen_at,
            })
            .await;
    }

    async fn sweep_once(&self, renew: bool) -> Result<(), ProjectionError> {
        let now = self.now();
        if renew {
            presence::renew_leases(&self.db, &self.node(), now + millis(LEASE)).await?;
        }
        for id in presence::lapsed(&self.db, now, now - millis(HEARTBEAT_TTL)).await? {
            if let Ok(user) = Uuid::parse_str(&id) {
                self.settle(user).await?;
            }
        }
        Ok(())
    }

    /// Gives up this node's connections at shutdown, so its users go offline now
    /// rather than when the leases lapse.
    pub async fn release(&self) {
        match presence::release_node(&self.db, &self.node()).await {
            Ok(users) => {
                for user in users.iter().filter_map(|id| Uuid::parse_str(id).ok()) {
                    if let Err(error) = self.settle(user).await {
                        tracing::warn!(%error, "cannot record presence at shutdown");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot release presence leases"),
        }
    }
}

async fn sweep(presence: Weak<Presence>) {
    let mut tick = tokio::time::interval(SWEEP);
    for round in 0u32.. {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        // The server is stopping.
        if presence.db.write.is_closed() {
            return;
        }
        if let Err(error) = presence.sweep_once(round % RENEW_EVERY == 0).await {
            tracing::warn!(%error, "presence sweep failed");
        }
    }
}
