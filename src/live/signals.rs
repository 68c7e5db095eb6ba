//! Ephemeral signals: typing and presence changes.
//!
//! They are never stored as events. Within a node they travel over one broadcast
//! channel; between nodes over PostgreSQL NOTIFY on `parley_signals`, each node
//! ignoring its own. Every node keeps the same view of who is typing (every `true`
//! reaches every node), so each expires typing by itself without a second message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_projections::users::{self, UserRow};
use parley_projections::ProjectionError;
use parley_store::Db;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

/// Typing ends by itself this long after the last `setTyping(true)`.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
const SWEEP: Duration = Duration::from_millis(250);
const CHANNEL: &str = "parley_signals";
/// Signals a subscriber may fall behind by; older ones are dropped for it, which for
/// ephemeral state is harmless (the next change supersedes them).
const BUFFER: usize = 4_096;
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    Typing {
        conversation_id: Uuid,
        user_id: Uuid,
        typing: bool,
    },
    Presence {
        user_id: Uuid,
        status: String,
        /// Unix milliseconds.
        last_seen_at: Option<i64>,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: Uuid,
    signal: Signal,
}

/// A signal as this node's subscribers get it, with the lookup they share: a thousand
/// subscribers read the user it is about (typist or presence) once, not a thousand times.
#[derive(Debug)]
pub struct Announced {
    pub signal: Signal,
    user: tokio::sync::OnceCell<Option<UserRow>>,
    pub renders: super::Renders,
}

impl Announced {
    pub(crate) fn new(signal: Signal) -> Arc<Self> {
        Arc::new(Self {
            signal,
            user: tokio::sync::OnceCell::new(),
            renders: super::Renders::default(),
        })
    }

    /// The user the signal is about, looked up when the first subscriber asks; the
    /// lookup ends with the signal.
    pub async fn user(&self, db: &Db) -> Result<Option<UserRow>, ProjectionError> {
        let id = match &self.signal {
            Signal::Typing { user_id, .. } | Signal::Presence { user_id, .. } => {
                user_id.to_string()
            }
        };
        self.user
            .get_or_try_init(|| users::by_id(db, &id))
            .await
            .cloned()
    }
}

pub struct Signals {
    /// This process's id among the nodes sharing the database.
    pub node: Uuid,
    sender: broadcast::Sender<Arc<Announced>>,
    pg: Option<sqlx::PgPool>,
    /// Who is typing where, until when.
    typing: Mutex<HashMap<(Uuid, Uuid), Instant>>,
}

impl Signals {
    /// Starts the typing sweeper and, on PostgreSQL, the listener for other nodes.
    pub fn start(db: &Db) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BUFFER);
        let signals = Arc::new(Self {
            node: Uuid::now_v7(),
            sender,
            pg: db.pg.clone(),
            typing: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&signals)));
        if let Some(pool) = db.pg.clone() {
            tokio::spawn(listen(pool, Arc::downgrade(&signals)));
        }
        signals
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Announced>> {
        self.sender.subscribe()
    }

    /// Delivers `signal` on this node, then to every other node.
    pub async fn publish(&self, signal: Signal) {
        self.receive(signal.clone());
        let Some(pool) = &self.pg else { return };
        let envelope = Envelope {
            node: self.node,
            signal,
        };
        let payload = match serde_json::to_string(&envelope) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "cannot encode a signal");
                return;
            }
        };
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool)
            .await
        {
            tracing::warn!(%error, "cannot send a signal to other nodes");
        }
    }

    /// Applies a signal from this or another node: typing is announced on changes only
    /// (a client repeats `true` while the user types), presence always.
    fn receive(&self, signal: Signal) {
        if let Signal::Typing {
            conversation_id,
            user_id,
            typing,
        } = signal
        {
            let Ok(mut table) = self.typing.lock() else {
                return;
            };
            let key = (conversation_id, user_id);
            let changed = if typing {
                table.insert(key, Instant::now() + TYPING_TTL).is_none()
            } else {
                table.remove(&key).is_some()
            };
            if !changed {
                return;
            }
        }
        // No subscriber is not an error.
        let _ = self.sender.send(Announced::new(signal));
    }

    /// Ends typing that was not renewed in time.
    fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<(Uuid, Uuid)> = match self.typing.lock() {
            Ok(mut table) => {
                let expired = table
                    .iter()
                    .filter(|(_, until)| **until <= now)
                    .map(|(key, _)| *key)
                    .collect::<Vec<_>>();
                for key in &expired {
                    table.remove(key);
                }
                expired
            }
            Err(_) => return,
        };
        for (conversation_id, user_id) in expired {
            let _ = self.sender.send(Announced::new(Signal::Typing {
                conversation_id,
                user_id,
                typing: false,
            }));
        }
    }
}

async fn sweep(signals: std::sync::Weak<Signals>) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tick.tick().await;
        let Some(signals) = signals.upgrade() else {
            return;
        };
        signals.expire();
    }
}

/// Receives other nodes' signals until the node's pool closes. The LISTEN session has a
/// connection of its own, which reconnects by itself when it is lost, so nothing but
/// the pool closing would end it when the node stops.
async fn listen(pool: sqlx::PgPool, signals: std::sync::Weak<Signals>) {
    let closed = pool.close_event();
    tokio::select! {
        () = receive(pool, signals) => {}
        () = closed => {}
    }
}

async fn receive(pool: sqlx::PgPool, signals: std::sync::Weak<Signals>) {
    loop {
        let listener = parley_store::db::listener(&pool).await;
        let listener = match listener {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for signals of other nodes");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for signals of other nodes");
                None
            }
        };
        if let Some(mut listener) = listener {
            while let Ok(notification) = listener.recv().await {
                let Some(signals) = signals.upgrade() else {
                    return;
                };
                match serde_json::from_str::<Envelope>(notification.payload()) {
                    Ok(envelope) if envelope.node != signals.node => {
                        signals.receive(envelope.signal);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "ignoring a malformed signal"),
                }
            }
        }
        if signals.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}
