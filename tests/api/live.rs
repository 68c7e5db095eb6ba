//! Subscriptions over WebSocket with a real client, on every backend.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(30);

async fn open(app: &TestApp, protocol: &str) -> Socket {
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

async fn next_frame(socket: &mut Socket) -> Message {
    tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("frame")
}

async fn next_json(socket: &mut Socket) -> Value {
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

async fn connect(app: &TestApp, token: &str) -> Socket {
    let mut socket = open(app, "graphql-transport-ws").await;
    socket
        .send(Message::Text(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }).to_string().into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

const EVENTS: &str =
    "subscription($c: ID!, $a: String) { conversationEvents(conversationId: $c, after: $a) { \
    __typename \
    ... on MessagePosted { cursor message { seq body } } \
    ... on MessageEdited { cursor message { seq body } } \
    ... on MessageDeleted { cursor messageId } \
    ... on ReactionAdded { cursor messageId emoji user { username } } \
    ... on MemberJoined { cursor user { username } } \
    ... on MemberRemoved { cursor user { username } action } \
    ... on ReadReceiptUpdated { cursor user { username } } } }";

async fn subscribe(socket: &mut Socket, conversation: &str, after: Option<&str>) {
    socket
        .send(Message::Text(json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS, "variables": { "c": conversation, "a": after } } }).to_string().into()))
        .await
        .expect("send");
}

/// The next `next` payload's event.
async fn event(socket: &mut Socket) -> Value {
    let message = next_json(socket).await;
    assert_eq!(message["type"], "next", "{message}");
    message["payload"].clone()
}

/// Posts probes until one arrives: only then is the subscription known to be live (a
/// subscription without a cursor starts at whatever is newest when it is set up).
async fn until_live(app: &TestApp, who: &Client, conversation: &str, socket: &mut Socket) {
    for attempt in 0..50 {
        post(app, who, conversation, &format!("probe {attempt}")).await;
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(1), socket.next()).await
        {
            let value: Value = serde_json::from_str(&text).expect("json");
            if value["type"] == "next" {
                return;
            }
        }
    }
    panic!("the subscription never went live");
}

struct Client {
    id: String,
    token: String,
}

async fn user(app: &TestApp, name: &str) -> Client {
    let registered = app.register(name, "correct horse battery").await;
    Client {
        id: text(&registered, "/data/register/user/id").to_owned(),
        token: text(&registered, "/data/register/accessToken").to_owned(),
    }
}

async fn group(app: &TestApp, owner: &Client, members: &[&Client]) -> String {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let response = app
        .graphql(
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }",
            json!({ "i": { "title": "Live", "memberIds": ids } }),
            Some(&owner.token),
        )
        .await;
    text(&response, "/data/createGroup/id").to_owned()
}

async fn post(app: &TestApp, who: &Client, conversation: &str, body: &str) -> String {
    let response = app
        .graphql(
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
            json!({ "i": { "conversationId": conversation, "body": body } }),
            Some(&who.token),
        )
        .await;
    text(&response, "/data/sendMessage/id").to_owned()
}

#[tokio::test]
async fn events_arrive_live_and_a_reconnect_with_the_last_cursor_gets_exactly_what_was_missed() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let conv = group(&app, &alice, &[&bob]).await;
        let mut socket = connect(&app, &bob.token).await;
        subscribe(&mut socket, &conv, None).await;
        until_live(&app, &alice, &conv, &mut socket).await;
        for i in 1..=3 {
            post(&app, &alice, &conv, &format!("live {i}")).await;
            let payload = event(&mut socket).await;
            let data = &payload["data"]["conversationEvents"];
            assert_eq!(data["__typename"], "MessagePosted", "{payload}");
            assert_eq!(data["message"]["body"], format!("live {i}"));
        }
        let message = post(&app, &alice, &conv, "react to me").await;
        assert_eq!(
            event(&mut socket).await["data"]["conversationEvents"]["message"]["body"],
            "react to me"
        );
        app.graphql(
            "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"🎉\") { id } }",
            json!({ "m": message }),
            Some(&alice.token),
        )
        .await;
        let reaction = event(&mut socket).await;
        assert_eq!(
            reaction["data"]["conversationEvents"]["__typename"], "ReactionAdded",
            "{reaction}"
        );
        assert_eq!(reaction["data"]["conversationEvents"]["emoji"], "🎉");
        let last_cursor = reaction["data"]["conversationEvents"]["cursor"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        socket.close(None).await.ok();

        for i in 1..=100 {
            post(&app, &alice, &conv, &format!("missed {i}")).await;
        }
        let mut socket = connect(&app, &bob.token).await;
        subscribe(&mut socket, &conv, Some(&last_cursor)).await;
        for i in 1..=100 {
            let payload = event(&mut socket).await;
            let data = &payload["data"]["conversationEvents"];
            assert_eq!(data["message"]["body"], format!("missed {i}"), "{payload}");
        }
        // And then live again, with nothing repeated at the seam.
        post(&app, &alice, &conv, "after the seam").await;
        assert_eq!(
            event(&mut socket).await["data"]["conversationEvents"]["message"]["body"],
            "after the seam"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_bad_token_closes_the_socket_with_4403_on_both_protocols() {
    let app = spawn_app(Backend::Sqlite).await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for payload in [json!({ "authorization": "Bearer forged" }), json!({})] {
            let mut socket = open(&app, protocol).await;
            let init = json!({ "type": "connection_init", "payload": payload });
            socket
                .send(Message::Text(init.to_string().into()))
                .await
                .expect("send");
            let code = loop {
                match next_frame(&mut socket).await {
                    Message::Close(Some(frame)) => break u16::from(frame.code),
                    Message::Close(None) => panic!("closed without a code"),
                    _ => {}
                }
            };
            assert_eq!(code, 4403, "{protocol}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_kicked_member_stops_receiving_the_conversation() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let conv = group(&app, &alice, &[&bob]).await;
        let mut socket = connect(&app, &bob.token).await;
        subscribe(&mut socket, &conv, None).await;
        until_live(&app, &alice, &conv, &mut socket).await;
        app.graphql("mutation($c: ID!, $u: ID!) { kickMember(conversationId: $c, userId: $u, reason: \"bye\") { id } }", json!({ "c": conv, "u": bob.id }), Some(&alice.token)).await;
        let removed = event(&mut socket).await;
        assert_eq!(
            removed["data"]["conversationEvents"]["__typename"], "MemberRemoved",
            "{removed}"
        );
        assert_eq!(removed["data"]["conversationEvents"]["action"], "KICK");
        let forbidden = event(&mut socket).await;
        assert_eq!(
            forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{forbidden}"
        );
        assert_eq!(next_json(&mut socket).await["type"], "complete");
        // Subscribing again is refused outright.
        subscribe(&mut socket, &conv, None).await;
        let refused = next_json(&mut socket).await;
        assert_eq!(
            refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{refused}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_subscriber_on_one_node_receives_a_message_posted_on_another() {
    if !backends().contains(&Backend::Postgres) {
        eprintln!("PostgreSQL not configured; several nodes need it");
        return;
    }
    let first = spawn_app(Backend::Postgres).await;
    let second = spawn_app_on(first.database.shared(), |_| {}).await;
    let (alice, bob) = (user(&first, "alice").await, user(&second, "bob").await);
    let conv = group(&first, &alice, &[&bob]).await;
    let mut socket = connect(&second, &bob.token).await;
    subscribe(&mut socket, &conv, None).await;
    until_live(&first, &alice, &conv, &mut socket).await;
    post(&first, &alice, &conv, "across nodes").await;
    let payload = event(&mut socket).await;
    assert_eq!(
        payload["data"]["conversationEvents"]["message"]["body"], "across nodes",
        "{payload}"
    );
    second.stop().await;
    first.stop().await;
}
