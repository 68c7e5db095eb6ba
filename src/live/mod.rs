//! Live delivery: one tail over the global log per node, and the WebSocket endpoint.
//!
//! The tail reads committed events in global order and broadcasts each once every
//! projector has applied it, so a subscriber that looks a message up finds it. Each
//! subscription filters that one stream; a subscriber too slow to keep up falls off the
//! bounded channel and is told to resume from its last cursor.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use parley_projections::messages::{self, MessageRow};
use parley_projections::{log, Db, LogPosition, ProjectionError, Projections, StoredEvent};
use tokio::sync::{broadcast, Notify};

use crate::graphql::{Loaders, ParleySchema, Viewer};

mod presence;
mod signals;

pub use presence::{Presence, HEARTBEAT_TTL};
pub use signals::{Signal, Signals, TYPING_TTL};

/// Delivery of one event to many subscribers.
pub type LiveReceiver = broadcast::Receiver<Arc<LiveEvent>>;

const POLL: Duration = Duration::from_millis(100);
/// The close code for a bad or expired token (graphql-transport-ws's "Forbidden").
pub const CLOSE_FORBIDDEN: u16 = 4403;
const AUTH_FAILED: &str = "Forbidden: a valid access token is required in connection_init";

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

/// Accepts a WebSocket upgrade on `/graphql` (graphql-transport-ws or graphql-ws).
pub fn upgrade(
    upgrade: WebSocketUpgrade,
    schema: ParleySchema,
    state: Arc<crate::app::AppState>,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(socket, schema, state))
}

fn token(payload: &serde_json::Value) -> Option<&str> {
    payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"))
        .and_then(serde_json::Value::as_str)
}

/// Runs one WebSocket session; while it is signed in, its user counts as present.
async fn serve(
    socket: axum::extract::ws::WebSocket,
    schema: ParleySchema,
    state: Arc<crate::app::AppState>,
) {
    let signed_in = Arc::new(std::sync::OnceLock::new());
    session(socket, schema, state.clone(), signed_in.clone()).await;
    // A stopping node releases all its connections at once (`Presence::release`).
    if *state.stopping.borrow() {
        return;
    }
    if let Some(user) = signed_in.get() {
        if let Err(error) = state.presence.disconnected(*user).await {
            tracing::warn!(%error, "cannot record a closed connection's presence");
        }
    }
}

async fn session(
    socket: axum::extract::ws::WebSocket,
    schema: ParleySchema,
    state: Arc<crate::app::AppState>,
    signed_in: Arc<std::sync::OnceLock<uuid::Uuid>>,
) {
    let protocol = socket
        .protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| p.parse::<WebSocketProtocols>().ok())
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| async move {
            match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            }
        });
    let mut stopping = state.stopping.subscribe();
    let keepalive = Duration::from_secs(state.config.ws_keepalive_secs.into());
    let rejected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = rejected.clone();
    let messages = WebSocket::new(schema, input, protocol)
        .on_connection_init(move |payload| {
            let state = state.clone();
            let flag = flag.clone();
            let signed_in = signed_in.clone();
            async move {
                let viewer = token(&payload).map(|value| {
                    crate::http::viewer_from_header(Some(value), state.accounts.keys())
                });
                match viewer {
                    Some(Viewer::User(id)) => {
                        // `connection_init` comes once per connection (the protocol
                        // closes a second one), so the connection counts once.
                        if signed_in.set(id).is_ok() {
                            if let Err(error) = state.presence.connected(id).await {
                                tracing::warn!(%error, "cannot record a connection's presence");
                            }
                        }
                        let mut data = Data::default();
                        data.insert(Viewer::User(id));
                        data.insert(Loaders::new(&state.db, Some(id), state.clock.clone()));
                        Ok(data)
                    }
                    _ => {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        Err(async_graphql::Error::new(AUTH_FAILED))
                    }
                }
            }
        })
        // graphql-transport-ws clients answer the server's pings, so a peer that stays
        // silent for three of them is gone; legacy clients never answer (`ka` is
        // one-way), so for them only a failed write ends the session.
        .keepalive_timeout(match protocol {
            WebSocketProtocols::GraphQLWS => Some(keepalive * 3),
            WebSocketProtocols::SubscriptionsTransportWS => None,
        });
    let ping = match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    };
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    futures::pin_mut!(messages);
    loop {
        let next = tokio::select! {
            _ = pings.tick() => Some(Some(WsMessage::Text(ping.to_owned()))),
            message = messages.next() => Some(message),
            stopped = stopping.wait_for(|stopping| *stopping) => {
                drop(stopped);
                None
            }
        };
        let Some(message) = next else {
            let going_away = CloseFrame {
                code: 1001,
                reason: "server shutting down".into(),
            };
            let _ = sink.send(Message::Close(Some(going_away))).await;
            return;
        };
        let Some(message) = message else { break };
        let frame = match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => {
                let code = if reason == AUTH_FAILED {
                    CLOSE_FORBIDDEN
                } else {
                    code
                };
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
            }
        };
        if sink.send(frame).await.is_err() {
            return;
        }
    }
    // The legacy protocol reports a failed init as a message; close like the new one.
    if rejected.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CLOSE_FORBIDDEN,
                reason: "Forbidden".into(),
            })))
            .await;
    }
}
