//! The application state every request shares, and the read-your-writes wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parley_projections::Projections;
use parley_store::{Db, LogPosition};
use uuid::Uuid;

use crate::auth::Accounts;
use crate::chat::Chat;
use crate::clock::Clock;
use crate::config::Config;
use parley_store::CommandMeta;

pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub projections: Arc<Projections>,
    pub accounts: Accounts,
    pub chat: Chat,
    pub uploads: Arc<crate::uploads::Uploads>,
    /// Erasure of accounts.
    pub privacy: Arc<crate::privacy::Privacy>,
    /// The embedded blob store, whose uploads and downloads this server answers;
    /// `None` when blobs are in S3.
    pub embedded_blobs: Option<Arc<crate::blob::EmbeddedBlobs>>,
    pub live: Arc<crate::live::LiveTail>,
    /// Typing and presence, between connections and nodes.
    pub signals: Arc<crate::live::Signals>,
    pub presence: Arc<crate::live::Presence>,
    pub rate: Arc<crate::rate::RateLimits>,
    /// Set when the server starts shutting down; WebSocket sessions close on it.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pub clock: Arc<dyn Clock>,
    /// Subscriptions starting at once on this node, one per database connection. A
    /// start parses and executes its document (a few kilobytes) and waits for the
    /// database; a thousand sockets subscribing together would otherwise hold a
    /// thousand of those at once, memory the allocator then keeps. Past one per
    /// connection, starts would only queue for the database anyway.
    pub subscription_starts: tokio::sync::Semaphore,
    /// Mutations whose read models did not catch up within the wait; see `settle`.
    pub consistency_timeouts: AtomicU64,
}

impl AppState {
    /// Metadata for a command issued on behalf of `actor`, stamped with the clock.
    pub fn meta(&self, actor: Option<Uuid>) -> CommandMeta {
        CommandMeta::new(actor, self.clock.now())
    }

    /// Waits until every projector has applied `position`, so the mutation's effect is
    /// visible to any query that follows. Past the bound the mutation still succeeds
    /// (its events are committed); the lag is logged and counted.
    pub async fn settle(&self, position: Option<LogPosition>) {
        let Some(position) = position else { return };
        self.live.wake.notify_one();
        let wait = Duration::from_millis(self.config.consistency_wait_ms);
        if !self.projections.wait_for(position, wait).await {
            self.consistency_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%position, ?wait, "read models lag behind a mutation");
        }
    }
}
