//! Subscriptions over WebSocket with a real client, on every backend.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::ws::*;

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

/// Probes posted for later sockets reached the earlier ones too: posts a marker and
/// reads every socket up to it, through probes only.
async fn past_probes(app: &TestApp, who: &Client, conversation: &str, sockets: &mut [Socket]) {
    post(app, who, conversation, "marker").await;
    for socket in sockets {
        loop {
            let payload = event(socket).await;
            let body = &payload["data"]["conversationEvents"]["message"]["body"];
            if body == "marker" {
                break;
            }
            assert!(
                body.as_str().is_some_and(|b| b.starts_with("probe")),
                "{payload}"
            );
        }
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

/// Every subscriber gets a live message with its author and mentions filled in (they
/// share one lookup of each user), and a reaction with its user.
#[tokio::test]
async fn live_messages_name_their_author_and_mentions_for_every_subscriber() {
    const NAMED: &str = "subscription($c: ID!) { conversationEvents(conversationId: $c) { \
        __typename \
        ... on MessagePosted { message { body author { username } mentions { username } \
            attachments { id filename url } } } \
        ... on ReactionAdded { emoji user { username } } } }";
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = user(&app, "alice").await;
        let bob = user(&app, "bob").await;
        let carol = user(&app, "carol").await;
        let conv = group(&app, &alice, &[&bob, &carol]).await;
        let mut sockets = Vec::new();
        for (who, id) in [(&bob, "b"), (&carol, "c"), (&bob, "b2")] {
            let mut socket = connect(&app, &who.token).await;
            socket
                .send(Message::Text(json!({ "id": id, "type": "subscribe", "payload": { "query": NAMED, "variables": { "c": conv } } }).to_string().into()))
                .await
                .expect("send");
            until_live(&app, &alice, &conv, &mut socket).await;
            sockets.push(socket);
        }
        past_probes(&app, &alice, &conv, &mut sockets).await;
        let message = post(&app, &alice, &conv, "hi @bob and @carol").await;
        for socket in &mut sockets {
            let payload = event(socket).await;
            let data = &payload["data"]["conversationEvents"];
            assert_eq!(data["message"]["body"], "hi @bob and @carol", "{payload}");
            assert_eq!(data["message"]["author"]["username"], "alice", "{payload}");
            assert_eq!(
                data["message"]["mentions"],
                json!([{ "username": "bob" }, { "username": "carol" }]),
                "{payload}"
            );
        }
        let completed = crate::attachments::upload(
            &app,
            &alice,
            &conv,
            "cat.png",
            "image/png",
            crate::attachments::png(8, 8),
        )
        .await;
        let file = text(
            completed.pointer("/data").expect("data"),
            "/completeUpload/id",
        )
        .to_owned();
        gql_ok(
            &app,
            &alice,
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
            json!({ "i": { "conversationId": conv, "body": "a cat", "attachmentIds": [file] } }),
        )
        .await;
        for socket in &mut sockets {
            let payload = event(socket).await;
            let attached = &payload["data"]["conversationEvents"]["message"]["attachments"];
            assert_eq!(attached[0]["id"], file.as_str(), "{payload}");
            assert_eq!(attached[0]["filename"], "cat.png", "{payload}");
            assert!(attached[0]["url"].is_string(), "{payload}");
        }
        app.graphql(
            "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { id } }",
            json!({ "m": message }),
            Some(&carol.token),
        )
        .await;
        for socket in &mut sockets {
            let payload = event(socket).await;
            let data = &payload["data"]["conversationEvents"];
            assert_eq!(data["__typename"], "ReactionAdded", "{payload}");
            assert_eq!(data["user"]["username"], "carol", "{payload}");
        }
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
    if !several_nodes() {
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

/// The end of the log now: subscribing from it misses nothing that happens later.
async fn live_cursor(app: &TestApp, who: &Client) -> String {
    let response = app
        .graphql("{ liveCursor }", json!({}), Some(&who.token))
        .await;
    text(&response, "/data/liveCursor").to_owned()
}

const MY_EVENTS: &str = "subscription($a: String) { myEvents(after: $a) { __typename \
    ... on NotificationCreated { cursor notification { kind message { body } } } \
    ... on UnreadCountChanged { cursor conversationId unreadCount mentionCount } \
    ... on ConversationAdded { cursor conversation { id } } \
    ... on ConversationRemoved { cursor conversationId } \
    ... on InvitationReceived { cursor invitation { id status conversation { id } } } } }";

/// The next `myEvents` event.
async fn mine(socket: &mut Socket) -> Value {
    let payload = event(socket).await;
    assert!(payload["errors"].is_null(), "{payload}");
    payload["data"]["myEvents"].clone()
}

#[tokio::test]
async fn my_events_deliver_notifications_counts_and_membership_and_resume_from_a_cursor() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let mut socket = connect(&app, &bob.token).await;
        let from = live_cursor(&app, &bob).await;
        start(&mut socket, "me", MY_EVENTS, json!({ "a": from })).await;

        let conv = group(&app, &alice, &[&bob]).await;
        let added = mine(&mut socket).await;
        assert_eq!(added["__typename"], "ConversationAdded", "{added}");
        assert_eq!(added["conversation"]["id"], conv.as_str());

        post(&app, &alice, &conv, "hello @bob").await;
        let counts = mine(&mut socket).await;
        assert_eq!(counts["__typename"], "UnreadCountChanged", "{counts}");
        assert_eq!(counts["conversationId"], conv.as_str());
        assert_eq!(
            (
                counts["unreadCount"].as_i64(),
                counts["mentionCount"].as_i64()
            ),
            (Some(1), Some(1))
        );
        let mention = mine(&mut socket).await;
        assert_eq!(mention["__typename"], "NotificationCreated", "{mention}");
        assert_eq!(mention["notification"]["kind"], "MENTION");
        assert_eq!(mention["notification"]["message"]["body"], "hello @bob");

        // Reading on another device (plain HTTP) zeroes the counts here too.
        let message = post(&app, &alice, &conv, "second").await;
        assert_eq!(mine(&mut socket).await["unreadCount"], 2);
        gql_ok(
            &app,
            &bob,
            "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { id } }",
            json!({ "c": conv, "m": message }),
        )
        .await;
        let read = mine(&mut socket).await;
        assert_eq!(read["__typename"], "UnreadCountChanged", "{read}");
        assert_eq!(
            (read["unreadCount"].as_i64(), read["mentionCount"].as_i64()),
            (Some(0), Some(0))
        );

        let channel = gql_ok(
            &app,
            &alice,
            "mutation { createChannel(input: { name: \"Secret\", visibility: PRIVATE }) { id } }",
            json!({}),
        )
        .await;
        let channel = text(&channel, "/data/createChannel/id").to_owned();
        let invitation = gql_ok(
            &app,
            &alice,
            "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }",
            json!({ "c": channel, "u": bob.id }),
        )
        .await;
        let invitation = text(&invitation, "/data/inviteMember/id").to_owned();
        let invited = mine(&mut socket).await;
        assert_eq!(invited["__typename"], "InvitationReceived", "{invited}");
        assert_eq!(invited["invitation"]["id"], invitation.as_str());
        assert_eq!(
            invited["invitation"]["conversation"]["id"],
            channel.as_str()
        );
        let notified = mine(&mut socket).await;
        assert_eq!(notified["notification"]["kind"], "INVITATION", "{notified}");

        gql_ok(&app, &alice, "mutation($c: ID!, $u: ID!) { kickMember(conversationId: $c, userId: $u, reason: \"spam\") { id } }", json!({ "c": conv, "u": bob.id })).await;
        let removed = mine(&mut socket).await;
        assert_eq!(removed["__typename"], "ConversationRemoved", "{removed}");
        assert_eq!(removed["conversationId"], conv.as_str());
        let last = removed["cursor"].as_str().expect("cursor").to_owned();
        socket.close(None).await.ok();

        // While disconnected: joins the channel, is mentioned, three messages arrive.
        gql_ok(
            &app,
            &bob,
            "mutation($i: ID!) { acceptInvitation(invitationId: $i) { id } }",
            json!({ "i": invitation }),
        )
        .await;
        post(&app, &alice, &channel, "welcome @bob").await;
        post(&app, &alice, &channel, "two").await;
        post(&app, &alice, &channel, "three").await;

        let mut socket = connect(&app, &bob.token).await;
        start(&mut socket, "me", MY_EVENTS, json!({ "a": last })).await;
        let added = mine(&mut socket).await;
        assert_eq!(added["__typename"], "ConversationAdded", "{added}");
        assert_eq!(added["conversation"]["id"], channel.as_str());
        let mention = mine(&mut socket).await;
        assert_eq!(
            mention["notification"]["message"]["body"], "welcome @bob",
            "{mention}"
        );
        // Then the current counts, once, instead of one change per missed message.
        let counts = mine(&mut socket).await;
        assert_eq!(counts["__typename"], "UnreadCountChanged", "{counts}");
        assert_eq!(counts["conversationId"], channel.as_str());
        assert_eq!(
            (
                counts["unreadCount"].as_i64(),
                counts["mentionCount"].as_i64()
            ),
            (Some(3), Some(1))
        );
        // And live again, with nothing repeated at the seam.
        post(&app, &alice, &channel, "four").await;
        let live = mine(&mut socket).await;
        assert_eq!(live["unreadCount"], 4, "{live}");
        app.stop().await;
    }
}

#[tokio::test]
async fn resuming_from_before_a_removal_replays_up_to_it_then_ends_forbidden() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let conv = group(&app, &alice, &[&bob]).await;
        let before = live_cursor(&app, &bob).await;
        post(&app, &alice, &conv, "one").await;
        post(&app, &alice, &conv, "two").await;
        gql_ok(&app, &alice, "mutation($c: ID!, $u: ID!) { banMember(conversationId: $c, userId: $u, reason: \"spam\") { id } }", json!({ "c": conv, "u": bob.id })).await;
        let after = live_cursor(&app, &bob).await;
        post(&app, &alice, &conv, "after the ban").await;

        let mut socket = connect(&app, &bob.token).await;
        subscribe(&mut socket, &conv, Some(&before)).await;
        for body in ["one", "two"] {
            let payload = event(&mut socket).await;
            assert_eq!(
                payload["data"]["conversationEvents"]["message"]["body"], body,
                "{payload}"
            );
        }
        let removed = event(&mut socket).await;
        assert_eq!(
            removed["data"]["conversationEvents"]["__typename"], "MemberRemoved",
            "{removed}"
        );
        assert_eq!(removed["data"]["conversationEvents"]["action"], "BAN");
        let denied = event(&mut socket).await;
        assert_eq!(
            denied["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{denied}"
        );
        assert_eq!(next_json(&mut socket).await["type"], "complete");

        // From after the removal, or without a cursor, there is nothing to collect.
        for cursor in [Some(after.as_str()), None] {
            subscribe(&mut socket, &conv, cursor).await;
            let refused = next_json(&mut socket).await;
            assert_eq!(
                refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{refused}"
            );
            assert_eq!(next_json(&mut socket).await["type"], "complete");
        }
        app.stop().await;
    }
}

const TYPING: &str =
    "subscription($c: ID!, $a: String) { conversationEvents(conversationId: $c, after: $a) { \
    __typename ... on TypingChanged { user { username } typing } } }";

async fn set_typing(app: &TestApp, who: &Client, conversation: &str, typing: bool) -> Value {
    app.graphql(
        "mutation($c: ID!, $t: Boolean!) { setTyping(conversationId: $c, typing: $t) }",
        json!({ "c": conversation, "t": typing }),
        Some(&who.token),
    )
    .await
}

async fn typing(socket: &mut Socket) -> (String, bool) {
    let payload = event(socket).await;
    let data = &payload["data"]["conversationEvents"];
    assert_eq!(data["__typename"], "TypingChanged", "{payload}");
    (
        data["user"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        data["typing"].as_bool().unwrap_or_default(),
    )
}

#[tokio::test]
async fn typing_is_delivered_to_others_once_per_change_and_expires_by_itself() {
    let app = spawn_app(Backend::Sqlite).await;
    let (alice, bob, eve) = (
        user(&app, "alice").await,
        user(&app, "bob").await,
        user(&app, "eve").await,
    );
    let conv = group(&app, &alice, &[&bob]).await;
    let mut socket = connect(&app, &bob.token).await;
    let from = live_cursor(&app, &bob).await;
    start(&mut socket, "t", TYPING, json!({ "c": conv, "a": from })).await;
    // Bob's own typing is not echoed back to him; Alice's arrives once per change.
    assert_eq!(
        set_typing(&app, &bob, &conv, true).await["data"]["setTyping"],
        true
    );
    assert_eq!(
        set_typing(&app, &alice, &conv, true).await["data"]["setTyping"],
        true
    );
    set_typing(&app, &alice, &conv, true).await;
    assert_eq!(typing(&mut socket).await, ("alice".to_owned(), true));
    set_typing(&app, &alice, &conv, false).await;
    assert_eq!(typing(&mut socket).await, ("alice".to_owned(), false));
    // Without a `false`, typing ends by itself a few seconds after the last `true`.
    set_typing(&app, &alice, &conv, true).await;
    assert_eq!(typing(&mut socket).await, ("alice".to_owned(), true));
    assert_eq!(typing(&mut socket).await, ("alice".to_owned(), false));
    // Outsiders cannot type here.
    assert_eq!(
        error_code(&set_typing(&app, &eve, &conv, true).await),
        Some("FORBIDDEN")
    );
    app.stop().await;
}

const PRESENCE: &str = "subscription($u: [ID!]!) { presenceChanged(userIds: $u) { user { username } status lastSeenAt } }";

async fn presence(socket: &mut Socket) -> (String, Option<String>) {
    let payload = event(socket).await;
    let data = &payload["data"]["presenceChanged"];
    assert!(payload["errors"].is_null(), "{payload}");
    (
        data["status"].as_str().unwrap_or_default().to_owned(),
        data["lastSeenAt"].as_str().map(str::to_owned),
    )
}

async fn set_presence(app: &TestApp, who: &Client, status: &str) -> Value {
    app.graphql(
        "mutation($s: PresenceStatus!) { setPresence(status: $s) { presence { status } } }",
        json!({ "s": status }),
        Some(&who.token),
    )
    .await
}

#[tokio::test]
async fn presence_follows_connections_and_set_presence_and_records_last_seen() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let mut watcher = connect(&app, &bob.token).await;
        start(&mut watcher, "p", PRESENCE, json!({ "u": [alice.id] })).await;
        assert_eq!(presence(&mut watcher).await, ("OFFLINE".to_owned(), None));

        // A connection keeps Alice online; closing it takes her offline at once.
        let alice_socket = connect(&app, &alice.token).await;
        assert_eq!(presence(&mut watcher).await.0, "ONLINE");
        drop(alice_socket);
        let (status, seen) = presence(&mut watcher).await;
        assert_eq!(status, "OFFLINE");
        let seen = seen.expect("last seen is recorded on going offline");
        let queried = gql_ok(
            &app,
            &bob,
            "query($u: ID!) { user(id: $u) { presence { status lastSeenAt } } }",
            json!({ "u": alice.id }),
        )
        .await;
        assert_eq!(queried["data"]["user"]["presence"]["status"], "OFFLINE");
        assert_eq!(
            queried["data"]["user"]["presence"]["lastSeenAt"],
            seen.as_str()
        );

        // Connected again, the client chooses between ONLINE and AWAY.
        let _alice_socket = connect(&app, &alice.token).await;
        assert_eq!(presence(&mut watcher).await.0, "ONLINE");
        // A second tab opening and closing changes nothing: the next change is AWAY.
        let second_tab = connect(&app, &alice.token).await;
        let alice_id = alice.id.parse().expect("uuid");
        assert_eq!(app.state.presence.connections_here(alice_id).await, 2);
        drop(second_tab);
        let closed = async {
            while app.state.presence.connections_here(alice_id).await > 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, closed)
            .await
            .expect("the server saw the second tab close");
        let away = set_presence(&app, &alice, "AWAY").await;
        assert_eq!(away["data"]["setPresence"]["presence"]["status"], "AWAY");
        assert_eq!(presence(&mut watcher).await.0, "AWAY");
        let refused = set_presence(&app, &alice, "OFFLINE").await;
        assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"));
        assert_eq!(error_field(&refused), Some("status"));
        set_presence(&app, &alice, "ONLINE").await;
        assert_eq!(presence(&mut watcher).await.0, "ONLINE");

        start(&mut watcher, "none", PRESENCE, json!({ "u": [] })).await;
        let refused = next_json(&mut watcher).await;
        assert_eq!(
            refused["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{refused}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_heartbeat_keeps_a_user_online_for_a_minute_and_only_transitions_are_announced() {
    let clock = TestClock::new();
    let app = spawn_app_with(
        TestDatabase::new(Backend::Sqlite).await,
        |_| {},
        clock.clone(),
    )
    .await;
    let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
    let mut watcher = connect(&app, &bob.token).await;
    start(&mut watcher, "p", PRESENCE, json!({ "u": [alice.id] })).await;
    assert_eq!(presence(&mut watcher).await.0, "OFFLINE");
    for _ in 0..3 {
        assert_eq!(
            gql_ok(&app, &alice, "mutation { heartbeat }", json!({})).await["data"]["heartbeat"],
            true
        );
    }
    assert_eq!(presence(&mut watcher).await.0, "ONLINE");
    clock.advance(time::Duration::seconds(30));
    gql_ok(&app, &alice, "mutation { heartbeat }", json!({})).await;
    // Repeated heartbeats announced nothing: the next change is going offline, a
    // minute after the last heartbeat.
    clock.advance(time::Duration::seconds(61));
    let (status, seen) = presence(&mut watcher).await;
    assert_eq!(status, "OFFLINE");
    assert!(seen.is_some());
    app.stop().await;
}

#[tokio::test]
async fn typing_and_presence_cross_nodes() {
    if !several_nodes() {
        return;
    }
    let first = spawn_app(Backend::Postgres).await;
    let second = spawn_app_on(first.database.shared(), |_| {}).await;
    let (alice, bob) = (user(&first, "alice").await, user(&second, "bob").await);
    let conv = group(&first, &alice, &[&bob]).await;
    let mut socket = connect(&second, &bob.token).await;
    let from = live_cursor(&second, &bob).await;
    start(&mut socket, "t", TYPING, json!({ "c": conv, "a": from })).await;
    start(&mut socket, "p", PRESENCE, json!({ "u": [alice.id] })).await;
    let initial = next_json(&mut socket).await;
    assert_eq!(
        initial["payload"]["data"]["presenceChanged"]["status"], "OFFLINE",
        "{initial}"
    );

    let _alice_socket = connect(&first, &alice.token).await;
    let online = next_json(&mut socket).await;
    assert_eq!(online["id"], "p", "{online}");
    assert_eq!(
        online["payload"]["data"]["presenceChanged"]["status"],
        "ONLINE"
    );
    set_typing(&first, &alice, &conv, true).await;
    let typed = next_json(&mut socket).await;
    assert_eq!(typed["id"], "t", "{typed}");
    assert_eq!(
        typed["payload"]["data"]["conversationEvents"]["typing"],
        true
    );
    second.stop().await;
    first.stop().await;
}

/// A client whose socket takes in little: with it not reading, the server's writes
/// back up after a few messages instead of after megabytes of kernel buffers.
async fn connect_slow(app: &TestApp, token: &str) -> Socket {
    let address: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4_096).expect("buffer size");
    let stream = tcp.connect(address).await.expect("connects");
    let url = app.address.replace("http://", "ws://") + "/graphql";
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrades");
    socket
        .send(Message::Text(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }).to_string().into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_with_a_cursor_without_holding_up_a_fast_one() {
    const MESSAGES: usize = 200;
    let database = TestDatabase::new(Backend::Sqlite).await;
    let app = spawn_app_on(database, |config| {
        config.subscriber_buffer = 16;
        config.send_buffer_bytes = 16_384;
    })
    .await;
    let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
    let conv = group(&app, &alice, &[&bob]).await;
    let from = live_cursor(&app, &bob).await;
    let mut slow = connect_slow(&app, &bob.token).await;
    subscribe(&mut slow, &conv, Some(&from)).await;
    let mut fast = connect(&app, &bob.token).await;
    subscribe(&mut fast, &conv, Some(&from)).await;
    let reader = tokio::spawn(async move {
        let mut bodies = Vec::new();
        while bodies.len() < MESSAGES {
            let payload = event(&mut fast).await;
            let data = &payload["data"]["conversationEvents"];
            assert_eq!(data["__typename"], "MessagePosted", "{payload}");
            bodies.push(
                data["message"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        bodies
    });
    // Large bodies fill the slow client's socket quickly.
    let padding = "x".repeat(3_900);
    let expected: Vec<String> = (1..=MESSAGES).map(|i| format!("{i} {padding}")).collect();
    for body in &expected {
        post(&app, &alice, &conv, body).await;
    }
    assert_eq!(reader.await.expect("fast reader"), expected);

    // The slow one gets what was buffered, then RESUME_REQUIRED with a cursor …
    let mut received = Vec::new();
    let resume = loop {
        let payload = event(&mut slow).await;
        if let Some(error) = payload["errors"].get(0) {
            assert_eq!(error["extensions"]["code"], "RESUME_REQUIRED", "{payload}");
            break error["extensions"]["cursor"]
                .as_str()
                .expect("cursor")
                .to_owned();
        }
        let body = &payload["data"]["conversationEvents"]["message"]["body"];
        received.push(body.as_str().unwrap_or_default().to_owned());
    };
    assert!(
        received.len() < MESSAGES,
        "the slow consumer was never cut off"
    );
    assert_eq!(next_json(&mut slow).await["type"], "complete");
    // … from which it collects the rest, nothing lost or repeated.
    subscribe(&mut slow, &conv, Some(&resume)).await;
    while received.len() < MESSAGES {
        let payload = event(&mut slow).await;
        let body = &payload["data"]["conversationEvents"]["message"]["body"];
        received.push(body.as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(received, expected);
    app.stop().await;
}

const EVERYTHING: &str =
    "subscription($c: ID!, $a: String) { conversationEvents(conversationId: $c, after: $a) { \
    __typename \
    ... on MessagePosted { cursor message { body } } \
    ... on MessageEdited { cursor message { body } } \
    ... on MessageDeleted { cursor messageId } \
    ... on ReactionAdded { cursor messageId emoji user { username } } \
    ... on ReactionRemoved { cursor messageId emoji user { username } } \
    ... on MemberJoined { cursor user { username } } \
    ... on MemberLeft { cursor user { username } } \
    ... on MemberRemoved { cursor user { username } action } \
    ... on ReadReceiptUpdated { cursor user { username } messageId } } }";

#[tokio::test]
async fn every_conversation_event_type_is_delivered_live() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let channel = gql_ok(&app, &alice, "mutation { createChannel(input: { name: \"Town square\", visibility: PUBLIC }) { id } }", json!({})).await;
        let conv = text(&channel, "/data/createChannel/id").to_owned();
        let mut socket = connect(&app, &bob.token).await;
        let from = live_cursor(&app, &bob).await;
        start(
            &mut socket,
            "all",
            EVERYTHING,
            json!({ "c": conv, "a": from }),
        )
        .await;
        let mut steps: Vec<(&str, &str, String)> = Vec::new();

        let join = "mutation($c: ID!) { joinChannel(conversationId: $c) { id } }";
        gql_ok(&app, &carol, join, json!({ "c": conv })).await;
        steps.push(("MemberJoined", "/user/username", "carol".into()));
        let message = post(&app, &carol, &conv, "first").await;
        steps.push(("MessagePosted", "/message/body", "first".into()));
        gql_ok(
            &app,
            &carol,
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"edited\") { id } }",
            json!({ "m": message }),
        )
        .await;
        steps.push(("MessageEdited", "/message/body", "edited".into()));
        gql_ok(
            &app,
            &alice,
            "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { id } }",
            json!({ "m": message }),
        )
        .await;
        steps.push(("ReactionAdded", "/user/username", "alice".into()));
        gql_ok(
            &app,
            &alice,
            "mutation($m: ID!) { removeReaction(messageId: $m, emoji: \"👍\") { id } }",
            json!({ "m": message }),
        )
        .await;
        steps.push(("ReactionRemoved", "/emoji", "👍".into()));
        gql_ok(
            &app,
            &alice,
            "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { id } }",
            json!({ "c": conv, "m": message }),
        )
        .await;
        steps.push(("ReadReceiptUpdated", "/messageId", message.clone()));
        gql_ok(
            &app,
            &carol,
            "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }",
            json!({ "m": message }),
        )
        .await;
        steps.push(("MessageDeleted", "/messageId", message.clone()));
        gql_ok(
            &app,
            &carol,
            "mutation($c: ID!) { leaveConversation(conversationId: $c) }",
            json!({ "c": conv }),
        )
        .await;
        steps.push(("MemberLeft", "/user/username", "carol".into()));
        gql_ok(&app, &carol, join, json!({ "c": conv })).await;
        steps.push(("MemberJoined", "/user/username", "carol".into()));
        gql_ok(&app, &alice, "mutation($c: ID!, $u: ID!) { kickMember(conversationId: $c, userId: $u, reason: \"bye\") { id } }", json!({ "c": conv, "u": carol.id })).await;
        steps.push(("MemberRemoved", "/action", "KICK".into()));

        for (typename, pointer, value) in steps {
            let payload = event(&mut socket).await;
            let data = &payload["data"]["conversationEvents"];
            assert_eq!(data["__typename"], typename, "{payload}");
            assert_eq!(
                data.pointer(pointer).and_then(Value::as_str),
                Some(value.as_str()),
                "{payload}"
            );
            assert!(data["cursor"].is_string(), "{payload}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn the_server_pings_and_closes_only_peers_that_stop_answering() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let app = spawn_app_on(database, |config| config.ws_keepalive_secs = 1).await;
    let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
    let conv = group(&app, &alice, &[&bob]).await;

    // A client that answers pings (as graphql-ws does) stays, however quiet it is.
    let mut answering = connect(&app, &bob.token).await;
    let from = live_cursor(&app, &bob).await;
    subscribe(&mut answering, &conv, Some(&from)).await;
    let mut pings = 0;
    while pings < 5 {
        match next_frame(&mut answering).await {
            Message::Text(text) if text.contains(r#""type":"ping""#) => {
                pings += 1;
                answering
                    .send(Message::Text(json!({ "type": "pong" }).to_string().into()))
                    .await
                    .expect("pong");
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    post(&app, &alice, &conv, "still here").await;
    assert_eq!(
        event(&mut answering).await["data"]["conversationEvents"]["message"]["body"],
        "still here"
    );

    // One that never answers is gone.
    let mut silent = connect(&app, &bob.token).await;
    let code = loop {
        match next_frame(&mut silent).await {
            Message::Close(Some(frame)) => break u16::from(frame.code),
            Message::Close(None) => panic!("closed without a code"),
            _ => {}
        }
    };
    assert_eq!(code, 3008);

    // Legacy graphql-ws has one-way keep-alives (`ka`), so its clients are never
    // expected to answer.
    let mut legacy = open(&app, "graphql-ws").await;
    legacy
        .send(Message::Text(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", bob.token) } }).to_string().into()))
        .await
        .expect("send");
    let mut keep_alives = 0;
    while keep_alives < 5 {
        match next_frame(&mut legacy).await {
            Message::Text(text) if text.contains(r#""type":"ka""#) => keep_alives += 1,
            Message::Text(text) if text.contains("connection_ack") => {}
            other => panic!("expected a keep-alive, got {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_subscription_and_signal_input_is_refused_with_the_right_code() {
    let app = spawn_app(Backend::Sqlite).await;
    let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
    let conv = group(&app, &alice, &[&bob]).await;
    let mut socket = connect(&app, &bob.token).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let many: Vec<String> = (0..201).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let cases = [
        (
            EVENTS,
            json!({ "c": conv, "a": "not-a-cursor" }),
            "BAD_USER_INPUT",
            Some("after"),
        ),
        (
            MY_EVENTS,
            json!({ "a": "1.2.3" }),
            "BAD_USER_INPUT",
            Some("after"),
        ),
        (EVENTS, json!({ "c": unknown }), "NOT_FOUND", None),
        (PRESENCE, json!({ "u": [unknown] }), "NOT_FOUND", None),
        (
            PRESENCE,
            json!({ "u": many }),
            "BAD_USER_INPUT",
            Some("userIds"),
        ),
    ];
    for (index, (query, variables, code, field)) in cases.into_iter().enumerate() {
        start(&mut socket, &index.to_string(), query, variables.clone()).await;
        let refused = next_json(&mut socket).await;
        let error = &refused["payload"]["errors"][0];
        assert_eq!(error["extensions"]["code"], code, "{variables}: {refused}");
        if let Some(field) = field {
            assert_eq!(error["extensions"]["field"], field, "{refused}");
        }
        assert_eq!(next_json(&mut socket).await["type"], "complete");
    }
    let typing = set_typing(&app, &bob, "not-an-id", true).await;
    assert_eq!(error_code(&typing), Some("NOT_FOUND"));
    let anonymous = app.graphql("mutation { heartbeat }", json!({}), None).await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    app.stop().await;
}

#[tokio::test]
async fn open_sockets_are_closed_with_going_away_when_the_server_stops() {
    let app = spawn_app(Backend::Sqlite).await;
    let bob = user(&app, "bob").await;
    let mut socket = connect(&app, &bob.token).await;
    let stopping = tokio::spawn(app.stop());
    let code = loop {
        match next_frame(&mut socket).await {
            Message::Close(Some(frame)) => break u16::from(frame.code),
            Message::Close(None) => panic!("closed without a code"),
            _ => {}
        }
    };
    assert_eq!(code, 1001);
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the server stops with a socket open")
        .expect("stop task");
}

#[tokio::test]
async fn subscribers_of_one_document_share_its_rendering_unless_it_selects_what_only_the_viewer_sees(
) {
    const SHARED: &str = "subscription($c: ID!) { conversationEvents(conversationId: $c) { \
        __typename ... on MessageEdited { message { body author { username } \
        reactions { emoji count } } } ... on MessagePosted { message { body } } } }";
    // `reactedByMe` depends on who looks: every subscriber executes it for itself.
    const OWN: &str = "subscription($c: ID!) { conversationEvents(conversationId: $c) { \
        __typename ... on MessageEdited { message { body reactions { emoji reactedByMe } } } \
        ... on MessagePosted { message { body } } } }";
    let counter = |page: &str, name: &str| crate::metrics::value(page, name, &[]).unwrap_or(0.0);
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = user(&app, "alice").await;
        let bob = user(&app, "bob").await;
        let carol = user(&app, "carol").await;
        let conv = group(&app, &alice, &[&bob, &carol]).await;
        let message = post(&app, &alice, &conv, "hello").await;
        gql_ok(
            &app,
            &bob,
            "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { id } }",
            json!({ "m": message }),
        )
        .await;
        let mut sockets = Vec::new();
        for (who, query) in [(&bob, SHARED), (&carol, SHARED), (&bob, OWN), (&carol, OWN)] {
            let mut socket = connect(&app, &who.token).await;
            start(&mut socket, "s", query, json!({ "c": conv })).await;
            until_live(&app, &alice, &conv, &mut socket).await;
            sockets.push(socket);
        }
        past_probes(&app, &alice, &conv, &mut sockets).await;
        let before = crate::metrics::scrape(&app).await;
        gql_ok(
            &app,
            &alice,
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"hello again\") { id } }",
            json!({ "m": message }),
        )
        .await;
        let mut payloads = Vec::new();
        for socket in &mut sockets {
            let payload = event(socket).await;
            let edited = &payload["data"]["conversationEvents"];
            assert_eq!(edited["__typename"], "MessageEdited", "{payload}");
            assert_eq!(edited["message"]["body"], "hello again", "{payload}");
            payloads.push(edited["message"]["reactions"].clone());
        }
        let after = crate::metrics::scrape(&app).await;
        assert_eq!(payloads[0], json!([{ "emoji": "👍", "count": 1 }]));
        assert_eq!(payloads[1], payloads[0]);
        assert_eq!(payloads[2], json!([{ "emoji": "👍", "reactedByMe": true }]));
        assert_eq!(
            payloads[3],
            json!([{ "emoji": "👍", "reactedByMe": false }])
        );
        // The two sockets of the shared document were sent one rendering.
        let rendered = counter(&after, "parley_shared_payload_renders_total")
            - counter(&before, "parley_shared_payload_renders_total");
        let sent = counter(&after, "parley_shared_payloads_sent_total")
            - counter(&before, "parley_shared_payloads_sent_total");
        assert_eq!((rendered, sent), (1.0, 2.0));
        app.stop().await;
    }
}

#[tokio::test]
async fn many_more_subscriptions_than_start_at_once_all_start_and_deliver() {
    // A node starts a few subscriptions at a time (each parses and executes its
    // document); the rest wait their turn and must still start, none refused or lost.
    const SUBSCRIPTIONS: usize = 60;
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = user(&app, "alice").await;
        let bob = user(&app, "bob").await;
        let conv = group(&app, &alice, &[&bob]).await;
        let cursor = live_cursor(&app, &bob).await;
        post(&app, &alice, &conv, "to everyone").await;
        let mut socket = connect(&app, &bob.token).await;
        for n in 0..SUBSCRIPTIONS {
            subscribe_as(&mut socket, &format!("s{n}"), &conv, &cursor).await;
        }
        let mut started = std::collections::HashSet::new();
        while started.len() < SUBSCRIPTIONS {
            let frame = next_json(&mut socket).await;
            assert_eq!(frame["type"], "next", "{frame}");
            let event = &frame["payload"]["data"]["conversationEvents"];
            if event["__typename"] != "MessagePosted" {
                continue;
            }
            assert_eq!(event["message"]["body"], "to everyone", "{frame}");
            let id = frame["id"].as_str().expect("id").to_owned();
            assert!(
                started.insert(id),
                "a second event for one subscription: {frame}"
            );
        }
        app.stop().await;
    }
}

async fn subscribe_as(socket: &mut Socket, id: &str, conversation: &str, after: &str) {
    start(socket, id, EVENTS, json!({ "c": conversation, "a": after })).await;
}

/// A post that the messages read model does not show (here it has failed on a poisoned
/// event) reaches subscribers as it was posted, not as an error: its event stands.
#[tokio::test]
async fn a_post_behind_a_failed_read_model_reaches_subscribers_as_posted() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "behind", &[&bob]).await;
        let cursor = live_cursor_of(&app, &bob).await;
        let mut socket = connect(&app, &bob.token).await;
        subscribe(&mut socket, &group, Some(&cursor)).await;

        let payload = r#"{"MessagePosted": {"not": "a message"}}"#;
        poison_with(&app.state.db, "Conversation", "MessagePosted", payload).await;
        marked_failed(&app, "messages").await;
        post(&app, &alice, &group, "posted all the same").await;

        let delivered = event(&mut socket).await;
        let posted = &delivered["data"]["conversationEvents"];
        assert_eq!(posted["__typename"], "MessagePosted", "{delivered}");
        assert_eq!(posted["message"]["body"], "posted all the same");
        assert_eq!(posted["message"]["seq"], 1);
        app.stop().await;
    }
}

/// Behind a failed conversations read model, `myEvents` still tells a user they were
/// added to a group and invited to a channel, with the rows those events make; before,
/// both were skipped without a word.
#[tokio::test]
async fn my_events_behind_a_failed_read_model_still_tell_of_additions_and_invitations() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let channel = gql_ok(
            &app,
            &alice,
            "mutation { createChannel(input: { name: \"Lobby\", visibility: PRIVATE }) { id } }",
            json!({}),
        )
        .await;
        let channel = text(&channel, "/data/createChannel/id").to_owned();
        let cursor = live_cursor_of(&app, &bob).await;
        let mut socket = connect(&app, &bob.token).await;
        start(&mut socket, "1", MY_EVENTS, json!({ "a": cursor })).await;

        let payload = r#"{"MessagePosted": {"not": "a message"}}"#;
        poison_with(&app.state.db, "Conversation", "MessagePosted", payload).await;
        marked_failed(&app, "conversations").await;
        let group = gql_ok(
            &app,
            &alice,
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }",
            json!({ "i": { "title": "Late", "memberIds": [bob.id] } }),
        )
        .await;
        let group = text(&group, "/data/createGroup/id").to_owned();
        let invited = gql_ok(
            &app,
            &alice,
            "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }",
            json!({ "c": channel, "u": bob.id }),
        )
        .await;
        let invitation = text(&invited, "/data/inviteMember/id").to_owned();

        let mut seen = (false, false);
        while seen != (true, true) {
            let event = mine(&mut socket).await;
            match event["__typename"].as_str() {
                Some("ConversationAdded") => {
                    assert_eq!(event["conversation"]["id"], json!(group), "{event}");
                    seen.0 = true;
                }
                Some("InvitationReceived") => {
                    assert_eq!(event["invitation"]["id"], json!(invitation), "{event}");
                    assert_eq!(event["invitation"]["status"], "PENDING", "{event}");
                    assert_eq!(event["invitation"]["conversation"]["id"], json!(channel));
                    seen.1 = true;
                }
                // Counts and notifications may come between.
                _ => {}
            }
        }
        app.stop().await;
    }
}
