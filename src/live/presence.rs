//! Presence: `ONLINE` while a user has an open WebSocket connection on any node or sent
//! a heartbeat within the last minute, `AWAY` when the client says so, else `OFFLINE`.
//!
//! Each node leases its users' connections in the database and renews the leases
//! while it lives, so a node that dies stops keeping its users online within one lease.
//! Transitions are announced as signals by whichever node records them first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parley_projections::ProjectionError;
use parley_store::presence::{self, PresenceRow};
use parley_store::Db;
use tokio::sync::Mutex;
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
    /// Open connections per user on this node: only a user's first and last one here
    /// write to the database (a user with many tabs costs one lease, not one per tab).
    open: Mutex<HashMap<Uuid, usize>>,
    /// A lease write failed: the next renewal writes every lease again.
    stale: AtomicBool,
}

impl Presence {
    /// Starts renewing this node's leases and looking for users whose presence lapsed.
    pub fn start(db: Db, clock: Arc<dyn Clock>, signals: Arc<Signals>) -> Arc<Self> {
        let presence = Arc::new(Self {
            db,
            clock,
            signals,
            open: Mutex::new(HashMap::new()),
            stale: AtomicBool::new(false),
        });
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

    /// A WebSocket connection of the user opened on this node, if the user holds fewer
    /// than `max` here already; `Ok(false)` (and nothing recorded) otherwise.
    pub async fn connected(&self, user: Uuid, max: usize) -> Result<bool, ProjectionError> {
        let mut open = self.open.lock().await;
        let count = open.entry(user).or_insert(0);
        if *count >= max {
            return Ok(false);
        }
        *count += 1;
        if *count > 1 {
            return Ok(true);
        }
        // Held across the write, so a close cannot overtake the open it follows.
        let held =
            presence::hold(&self.db, &self.node(), &user.to_string(), self.lease_end()).await;
        drop(open);
        if held.is_err() {
            // The sweep writes every lease again, so the user is not lost for good.
            self.stale.store(true, Ordering::Relaxed);
        }
        held?;
        self.settle(user).await?;
        Ok(true)
    }

    /// A WebSocket connection of the user on this node closed.
    pub async fn disconnected(&self, user: Uuid) -> Result<(), ProjectionError> {
        let mut open = self.open.lock().await;
        let Some(count) = open.get_mut(&user) else {
            return Ok(());
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        open.remove(&user);
        let gone = presence::let_go(&self.db, &self.node(), &user.to_string()).await;
        drop(open);
        if gone.is_err() {
            self.stale.store(true, Ordering::Relaxed);
        }
        gone?;
        self.settle(user).await
    }

    /// The user's open connections on this node.
    pub async fn connections_here(&self, user: Uuid) -> usize {
        self.open.lock().await.get(&user).copied().unwrap_or(0)
    }

    fn lease_end(&self) -> i64 {
        self.now() + millis(LEASE)
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
        if self.stale.swap(false, Ordering::Relaxed) {
            if let Err(error) = self.rewrite_leases().await {
                self.stale.store(true, Ordering::Relaxed);
                return Err(error);
            }
        }
        for id in presence::lapsed(&self.db, now, now - millis(HEARTBEAT_TTL)).await? {
            if let Ok(user) = Uuid::parse_str(&id) {
                self.settle(user).await?;
            }
        }
        Ok(())
    }

    /// Rewrites this node's leases from its open connections, after a write failed.
    async fn rewrite_leases(&self) -> Result<(), ProjectionError> {
        let open = self.open.lock().await;
        let held = presence::release_node(&self.db, &self.node()).await?;
        let mut users: std::collections::HashSet<Uuid> = held
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        for user in open.keys() {
            presence::hold(&self.db, &self.node(), &user.to_string(), self.lease_end()).await?;
            users.insert(*user);
        }
        drop(open);
        for user in users {
            self.settle(user).await?;
        }
        Ok(())
    }

    /// Gives up this node's connections at shutdown, so its users go offline now
    /// rather than when the leases lapse.
    pub async fn release(&self) {
        self.open.lock().await.clear();
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
