//! A WebSocket client for the API tests: graphql-transport-ws (and legacy graphql-ws)
//! against the test server.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(30);

pub async fn open(app: &TestApp, protocol: &str) -> Socket {
    let url = app.address.replace("http://", "ws://") + "/graphql";
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connects");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    socket
}

pub async fn next_frame(socket: &mut Socket) -> Message {
    tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("frame")
}

pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match next_frame(socket).await {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "ping" || value["type"] == "ka" {
                    continue;
                }
                return value;
            }
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub async fn connect(app: &TestApp, token: &str) -> Socket {
    let mut socket = open(app, "graphql-transport-ws").await;
    socket
        .send(Message::Text(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }).to_string().into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

pub async fn start(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    socket
        .send(Message::Text(
            json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
}

/// Reads frames until the server closes the socket; the close code.
pub async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match next_frame(socket).await {
            Message::Close(Some(frame)) => return u16::from(frame.code),
            Message::Close(None) => panic!("closed without a code"),
            _ => {}
        }
    }
}

/// Sends `connection_init` with the token on a socket of either protocol.
pub async fn init(socket: &mut Socket, token: &str) {
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .expect("send");
}
