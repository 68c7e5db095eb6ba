//! The WebSocket endpoint: graphql-transport-ws (and legacy graphql-ws) sessions on
//! `/graphql` — authentication in `connection_init`, keep-alive, the limits on what one
//! socket holds, closing when the session or its token ends, and running the
//! subscriptions whose payloads are shared (`graphql::shared`) itself. What a
//! subscription delivers is the GraphQL layer's business; the live tail feeding it is
//! `live`'s.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::{Data, Request};
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::response::Response;
use futures::future::{AbortHandle, AbortRegistration, Abortable};
use futures::stream::{BoxStream, SelectAll};
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::{broadcast, mpsc};

use crate::auth::Grant;
use crate::graphql::shared::{self, Shape};
use crate::graphql::{ClientIp, Loaders, ParleySchema, Viewer};

/// The close code for a bad or expired token or an ended session
/// (graphql-transport-ws's "Forbidden").
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// No `connection_init` in time (graphql-transport-ws's "Connection initialisation timeout").
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;
/// A subscription id already in use (graphql-transport-ws's "Subscriber already exists").
pub const CLOSE_DUPLICATE: u16 = 4409;
/// The user holds as many sockets on this node as allowed.
pub const CLOSE_TOO_MANY: u16 = 4429;
/// A socket's read buffer: room for most client frames (a `subscribe` is a few hundred
/// bytes; a `connection_init` with its token may take two reads). A larger frame grows
/// it for as long as it needs to. Every socket holds one for its whole life.
const READ_BUFFER: usize = 512;
const AUTH_FAILED: &str = "Forbidden: a valid access token is required in connection_init";
const TOO_MANY_CONNECTIONS: &str =
    "Too many connections: this user holds as many sockets as one node allows";

/// Accepts a WebSocket upgrade on `/graphql` (graphql-transport-ws or graphql-ws).
pub fn upgrade(
    upgrade: WebSocketUpgrade,
    schema: ParleySchema,
    state: Arc<crate::app::AppState>,
    ip: ClientIp,
) -> Response {
    // A frame or message larger than an HTTP request may be is refused alike.
    let limit = state.config.max_request_bytes as usize;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite's defaults reserve 128 KiB per direction and socket, sized for
        // bulk transfer; chat frames are a few hundred bytes, and a larger frame still
        // grows the buffer for as long as it needs to. Writes go out eagerly: each
        // event is one frame, flushed as it is sent.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(socket, schema, state, ip))
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
    ip: ClientIp,
) {
    let _open = crate::metrics::Connection::open();
    let granted = Arc::new(OnceLock::new());
    session(socket, schema, state.clone(), granted.clone(), ip).await;
    // A stopping node releases all its connections at once (`Presence::release`).
    if *state.stopping.borrow() {
        return;
    }
    if let Some(grant) = granted.get() {
        if let Err(error) = state.presence.disconnected(grant.user_id).await {
            tracing::warn!(%error, "cannot record a closed connection's presence");
        }
    }
}

/// Something the session sends on its own account, not a subscription's.
enum Injected {
    Text(String),
    Close(u16, String),
}

/// The few fields of a client message the session looks at.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

/// Keeps count of a connection's live subscriptions: admits a new one while under the
/// limit, refuses the one more (the others go on), and closes on a reused id as
/// graphql-transport-ws requires.
struct Admission {
    live: std::sync::Mutex<HashSet<String>>,
    max: usize,
    protocol: WebSocketProtocols,
    /// Boxed: a channel allocates its first block of slots when it is made.
    inject: mpsc::Sender<Box<Injected>>,
}

impl Admission {
    /// Whether the client message goes on to the GraphQL session.
    fn incoming(&self, bytes: &[u8]) -> bool {
        let Ok(Envelope { kind, id: Some(id) }) = serde_json::from_slice::<Envelope>(bytes) else {
            return true;
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match kind.as_str() {
            "subscribe" | "start" => {
                if live.contains(&id) {
                    let _ = self.inject.try_send(Box::new(Injected::Close(
                        CLOSE_DUPLICATE,
                        format!("Subscriber for {id} already exists"),
                    )));
                    return false;
                }
                if live.len() >= self.max {
                    let message = format!(
                        "this connection already holds {} subscriptions; complete one first",
                        self.max
                    );
                    let error = serde_json::json!({ "message": message, "extensions": { "code": crate::graphql::error::code::BAD_USER_INPUT } });
                    let payload = match self.protocol {
                        WebSocketProtocols::GraphQLWS => serde_json::json!([error]),
                        WebSocketProtocols::SubscriptionsTransportWS => error,
                    };
                    let frame =
                        serde_json::json!({ "id": id, "type": "error", "payload": payload });
                    let _ = self
                        .inject
                        .try_send(Box::new(Injected::Text(frame.to_string())));
                    return false;
                }
                live.insert(id);
                crate::metrics::subscriptions(1.0);
            }
            "complete" | "stop" if live.remove(&id) => {
                crate::metrics::subscriptions(-1.0);
            }
            _ => {}
        }
        true
    }

    /// Notes a subscription the server ended.
    fn outgoing(&self, text: &str) {
        // Only these two end a subscription; most frames are `next` and are not parsed.
        if !(text.starts_with(r#"{"type":"complete""#) || text.starts_with(r#"{"type":"error""#)) {
            return;
        }
        if let Ok(Envelope { id: Some(id), .. }) = serde_json::from_str::<Envelope>(text) {
            let removed = self
                .live
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
            if removed {
                crate::metrics::subscriptions(-1.0);
            }
        }
    }
}

impl Drop for Admission {
    /// The connection ended: its subscriptions with it.
    fn drop(&mut self) {
        let live = self.live.get_mut().map_or(0, |live| live.len());
        crate::metrics::subscriptions(-(live as f64));
    }
}

/// A `subscribe` with its request.
#[derive(serde::Deserialize)]
struct Subscribe {
    id: String,
    payload: Request,
}

/// What the session takes over from async-graphql's protocol handler.
enum Diverted {
    /// A subscription whose payloads are shared with others of its shape.
    Start {
        id: String,
        request: Box<Request>,
        shape: Arc<Shape>,
        registration: AbortRegistration,
    },
    /// The client completed one of those.
    Stop(String),
}

/// The session's subscriptions whose payloads are shared (`graphql::shared`): the
/// session runs them itself, writing each event's shared payload into a frame of its
/// own, where async-graphql's handler would execute and serialize it for every socket.
/// Only graphql-transport-ws sessions divert; everything else about a session
/// (handshake, pings, other operations, errors) stays with the handler.
struct Sharing {
    /// The diverted subscriptions that are running, by id.
    running: Mutex<HashMap<String, AbortHandle>>,
    /// Boxed: a channel allocates its first block of slots when it is made.
    divert: mpsc::UnboundedSender<Box<Diverted>>,
}

impl Sharing {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the session takes this (admitted) client message over.
    fn divert(&self, bytes: &[u8]) -> bool {
        let Ok(Envelope { kind, id: Some(id) }) = serde_json::from_slice::<Envelope>(bytes) else {
            return false;
        };
        match kind.as_str() {
            "subscribe" => {
                let Ok(Subscribe { id, payload }) = serde_json::from_slice::<Subscribe>(bytes)
                else {
                    return false;
                };
                let Some(shape) = shared::shape_of(&payload) else {
                    return false;
                };
                let (handle, registration) = AbortHandle::new_pair();
                self.running().insert(id.clone(), handle);
                self.divert
                    .send(Box::new(Diverted::Start {
                        id,
                        request: Box::new(payload),
                        shape,
                        registration,
                    }))
                    .is_ok()
            }
            "complete" => {
                let Some(handle) = self.running().remove(&id) else {
                    return false;
                };
                handle.abort();
                let _ = self.divert.send(Box::new(Diverted::Stop(id)));
                true
            }
            _ => false,
        }
    }
}

/// As async-graphql's handler writes it (`Admission::outgoing` reads its start).
fn complete_frame(id: &str) -> String {
    let quoted = serde_json::Value::String(id.to_owned());
    format!(r#"{{"type":"complete","id":{quoted}}}"#)
}

/// A diverted subscription's frames: a `next` per payload, then `complete`.
fn shared_frames(
    sharing: Arc<Sharing>,
    id: String,
    payloads: impl futures::Stream<Item = Arc<str>> + Send + 'static,
) -> BoxStream<'static, String> {
    let quoted = serde_json::Value::String(id.clone()).to_string();
    payloads
        .map(move |payload| format!(r#"{{"type":"next","id":{quoted},"payload":{payload}}}"#))
        .chain(futures::stream::once(async move {
            sharing.running().remove(&id);
            complete_frame(&id)
        }))
        .boxed()
}

/// When an access token expires, as a point on the runtime's clock.
fn expiry(grant: &Grant) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = u64::try_from(grant.expires_at)
        .unwrap_or(0)
        .saturating_sub(now);
    tokio::time::Instant::now() + Duration::from_secs(left)
}

async fn session(
    socket: axum::extract::ws::WebSocket,
    schema: ParleySchema,
    state: Arc<crate::app::AppState>,
    granted: Arc<OnceLock<Grant>>,
    ip: ClientIp,
) {
    let protocol = socket
        .protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| p.parse::<WebSocketProtocols>().ok())
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    let (mut sink, stream) = socket.split();
    let (inject, mut injected) = mpsc::channel(16);
    let admission = Arc::new(Admission {
        live: std::sync::Mutex::new(HashSet::new()),
        max: state.config.max_subscriptions_per_connection as usize,
        protocol,
        inject,
    });
    let admit = admission.clone();
    let (divert, mut diverted) = mpsc::unbounded_channel();
    let sharing = Arc::new(Sharing {
        running: Mutex::default(),
        divert,
    });
    let share = match protocol {
        WebSocketProtocols::GraphQLWS => Some(sharing.clone()),
        WebSocketProtocols::SubscriptionsTransportWS => None,
    };
    let signed_in = granted.clone();
    let input = stream
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(move |message| {
            let bytes = match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            };
            let bytes = bytes.filter(|bytes| admit.incoming(bytes)).filter(|bytes| {
                // Before the handshake the handler answers a subscription (by closing).
                let diverted = signed_in.get().is_some()
                    && share.as_ref().is_some_and(|share| share.divert(bytes));
                !diverted
            });
            futures::future::ready(bytes)
        });
    let mut running: SelectAll<Abortable<BoxStream<'static, String>>> = SelectAll::new();
    let mut stopping = state.stopping.subscribe();
    let mut ended_sessions = state.accounts.ended_sessions();
    let keepalive = Duration::from_secs(state.config.ws_keepalive_secs.into());
    // Why the handshake was refused: the close code to send (0: it was not).
    let refused = Arc::new(AtomicU16::new(0));
    let flag = refused.clone();
    let init_state = state.clone();
    let init_granted = granted.clone();
    let messages = WebSocket::new(schema.clone(), input, protocol)
        .on_connection_init(move |payload| {
            let state = init_state;
            let granted = init_granted;
            async move {
                let (viewer, grant) = match token(&payload) {
                    Some(value) => super::viewer_from_header(Some(value), &state.accounts),
                    None => (Viewer::Anonymous, None),
                };
                let (Viewer::User(id), Some(grant)) = (viewer, grant) else {
                    flag.store(CLOSE_FORBIDDEN, Ordering::SeqCst);
                    return Err(async_graphql::Error::new(AUTH_FAILED));
                };
                // `connection_init` comes once per connection (the protocol closes a
                // second one), so the connection counts once.
                let max = state.config.max_connections_per_user as usize;
                match state.presence.connected(id, max).await {
                    Ok(false) => {
                        flag.store(CLOSE_TOO_MANY, Ordering::SeqCst);
                        return Err(async_graphql::Error::new(TOO_MANY_CONNECTIONS));
                    }
                    Ok(true) => {}
                    // Counted all the same; the presence sweep repairs the lease.
                    Err(error) => tracing::warn!(%error, "cannot record a connection's presence"),
                }
                let _ = granted.set(grant);
                let mut data = Data::default();
                data.insert(Viewer::User(id));
                data.insert(ip);
                data.insert(Loaders::new(&state.db, Some(id), state.clock.clone()));
                Ok(data)
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
    let init_timeout = Duration::from_secs(state.config.ws_init_timeout_secs.into());
    let init_deadline = tokio::time::sleep(init_timeout);
    // Armed once signed in: the token's expiry ends the session.
    let token_expiry = tokio::time::sleep(Duration::ZERO);
    futures::pin_mut!(messages, init_deadline, token_expiry);
    let mut armed = false;
    loop {
        if !armed {
            if let Some(grant) = granted.get() {
                token_expiry.as_mut().reset(expiry(grant));
                armed = true;
            }
        }
        let waiting_for_init = granted.get().is_none() && refused.load(Ordering::SeqCst) == 0;
        let next = tokio::select! {
            _ = pings.tick() => Some(WsMessage::Text(ping.to_owned())),
            message = messages.next() => match message {
                Some(message) => Some(message),
                None => break,
            },
            Some(injected) = injected.recv() => Some(match *injected {
                Injected::Text(text) => WsMessage::Text(text),
                Injected::Close(code, reason) => WsMessage::Close(code, reason),
            }),
            Some(diverted) = diverted.recv() => match *diverted {
                Diverted::Start { id, request, shape, registration } => {
                    // Diverted only once signed in.
                    let Some(grant) = granted.get() else { continue };
                    let payloads = shared::subscribe(
                        schema.clone(),
                        state.clone(),
                        grant.user_id,
                        ip,
                        *request,
                        shape,
                    );
                    let frames = shared_frames(sharing.clone(), id, payloads);
                    running.push(Abortable::new(frames, registration));
                    continue;
                }
                // As the handler answers a completed subscription of its own.
                Diverted::Stop(id) => Some(WsMessage::Text(complete_frame(&id))),
            },
            Some(frame) = running.next(), if !running.is_empty() => Some(WsMessage::Text(frame)),
            () = &mut init_deadline, if waiting_for_init => Some(WsMessage::Close(
                CLOSE_INIT_TIMEOUT,
                "Connection initialisation timeout".to_owned(),
            )),
            () = &mut token_expiry, if armed => Some(WsMessage::Close(
                CLOSE_FORBIDDEN,
                "Forbidden: the access token expired; reconnect with a fresh one".to_owned(),
            )),
            ended = ended_sessions.recv(), if armed => {
                let open = match (ended, granted.get()) {
                    (Ok(session), Some(grant)) => session != grant.session_id,
                    (Err(broadcast::error::RecvError::Lagged(_)), Some(grant)) => {
                        state.accounts.still_open(grant)
                    }
                    _ => true,
                };
                if open {
                    continue;
                }
                Some(WsMessage::Close(
                    CLOSE_FORBIDDEN,
                    "Forbidden: the session ended; sign in again".to_owned(),
                ))
            }
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
        let frame = match message {
            WsMessage::Text(text) => {
                admission.outgoing(&text);
                Message::Text(text.into())
            }
            WsMessage::Close(code, reason) => {
                let code = match reason.as_str() {
                    AUTH_FAILED => CLOSE_FORBIDDEN,
                    TOO_MANY_CONNECTIONS => CLOSE_TOO_MANY,
                    _ => code,
                };
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })))
                    .await;
                return;
            }
        };
        if sink.send(frame).await.is_err() {
            return;
        }
    }
    // The legacy protocol reports a refused handshake as a message; close like the new one.
    let code = refused.load(Ordering::SeqCst);
    if code != 0 {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: "Forbidden".into(),
            })))
            .await;
    }
}
