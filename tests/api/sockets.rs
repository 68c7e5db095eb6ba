//! What one WebSocket may hold: a deadline for `connection_init`, a bounded number of
//! subscriptions, a bounded number of sockets per user, on every backend.

use futures::SinkExt as _;
use serde_json::json;

use crate::helpers::*;
use crate::ws::*;

const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

#[tokio::test]
async fn a_socket_that_never_initialises_is_closed_with_4408_on_both_protocols() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            c.ws_init_timeout_secs = 1;
        })
        .await;
        for protocol in PROTOCOLS {
            let mut socket = open(&app, protocol).await;
            assert_eq!(close_code(&mut socket).await, 4408, "{protocol}");
        }
        // A socket that does initialise in time stays open past the deadline.
        let alice = user(&app, "alice").await;
        let mut socket = connect(&app, &alice.token).await;
        let cursor = live_cursor_of(&app, &alice).await;
        start(
            &mut socket,
            "1",
            "subscription($a: String) { myEvents(after: $a) { __typename } }",
            json!({ "a": cursor }),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        own_group(&app, &alice).await;
        assert_eq!(next_json(&mut socket).await["type"], "next");
    }
}

#[tokio::test]
async fn one_subscription_too_many_is_refused_and_the_others_go_on() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            c.max_subscriptions_per_connection = 3;
        })
        .await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let cursor = live_cursor_of(&app, &alice).await;
        let events = "subscription($c: ID!, $a: String) { conversationEvents(conversationId: $c, after: $a) { __typename } }";
        let variables = json!({ "c": group, "a": cursor });
        let mut socket = connect(&app, &alice.token).await;
        for id in ["1", "2", "3", "4"] {
            start(&mut socket, id, events, variables.clone()).await;
        }
        let refused = next_json(&mut socket).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["id"], "4");
        assert_eq!(
            refused["payload"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );

        post_ok(&app, &alice, &group, "hi").await;
        let mut delivered = std::collections::BTreeSet::new();
        while delivered.len() < 3 {
            let message = next_json(&mut socket).await;
            assert_eq!(message["type"], "next", "{message}");
            delivered.insert(message["id"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(delivered, ["1", "2", "3"].map(str::to_owned).into());

        // Completing one makes room for another.
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                json!({ "id": "2", "type": "complete" }).to_string().into(),
            ))
            .await
            .expect("send");
        start(&mut socket, "5", events, variables.clone()).await;
        let first = loop {
            let message = next_json(&mut socket).await;
            if message["id"] != "2" {
                break message;
            }
        };
        assert_eq!(first["id"], "5", "{first}");
        assert_eq!(first["type"], "next", "{first}");

        // Reusing a live id closes the socket, as graphql-transport-ws requires.
        start(&mut socket, "1", events, variables).await;
        assert_eq!(close_code(&mut socket).await, 4409);
    }
}

#[tokio::test]
async fn a_user_holds_a_bounded_number_of_sockets() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            c.max_connections_per_user = 2;
        })
        .await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let first = connect(&app, &alice.token).await;
        let _second = connect(&app, &alice.token).await;
        for protocol in PROTOCOLS {
            let mut third = open(&app, protocol).await;
            init(&mut third, &alice.token).await;
            assert_eq!(close_code(&mut third).await, 4429, "{protocol}");
        }
        // Another user is not affected, and a closed socket frees its place.
        let _bobs = connect(&app, &bob.token).await;
        drop(first);
        let mut retries = 0;
        loop {
            let mut again = open(&app, "graphql-transport-ws").await;
            init(&mut again, &alice.token).await;
            let answer = next_frame(&mut again).await;
            if answer.is_text() {
                break;
            }
            // The server may not have seen the dropped socket close yet.
            retries += 1;
            assert!(retries < 100, "a closed socket never freed its place");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn replays_from_the_start_of_a_long_log_hold_a_page_each() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        // More than a page (100), so reading the whole log at once would show.
        let posts = 150;
        for n in 0..posts {
            post_ok(&app, &alice, &group, &format!("m{n}")).await;
        }
        let subscriptions = 20;
        let mut socket = connect(&app, &alice.token).await;
        for id in 0..subscriptions {
            start(
                &mut socket,
                &id.to_string(),
                "subscription($c: ID!) { conversationEvents(conversationId: $c, after: \"0.0\") { __typename } }",
                json!({ "c": group }),
            )
            .await;
        }
        let mut received = std::collections::HashMap::<String, usize>::new();
        while received.values().sum::<usize>() < subscriptions * posts {
            let message = next_json(&mut socket).await;
            assert_eq!(message["type"], "next", "{message}");
            *received
                .entry(message["id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        assert!(received.values().all(|n| *n == posts), "{received:?}");
        // Each replay read the whole log from its start, yet held a page at a time.
        let most = app.state.live.replaying.most();
        assert!(
            most > 0 && most <= subscriptions * 100,
            "held {most} events at once"
        );
    }
}

#[tokio::test]
async fn many_my_events_replays_on_one_socket_all_finish_with_a_small_pool() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        // Fewer pooled connections than replays, each of which reads the database for
        // its events and for what its subscriber selects of them.
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            c.db_max_connections = 4;
        })
        .await;
        let alice = user(&app, "alice").await;
        let bob = user(&app, "bob").await;
        let group = create_group(&app, &bob, "Mentions", &[&alice]).await;
        let posts = 60;
        for n in 0..posts {
            post_ok(&app, &bob, &group, &format!("@alice m{n}")).await;
        }
        let subscriptions = 12;
        let mut socket = connect(&app, &alice.token).await;
        for id in 0..subscriptions {
            start(
                &mut socket,
                &id.to_string(),
                "subscription { myEvents(after: \"0.0\") { __typename \
                 ... on NotificationCreated { notification { kind message { body author { username } } } } } }",
                json!({}),
            )
            .await;
        }
        let mut mentions = std::collections::HashMap::<String, usize>::new();
        while mentions.values().sum::<usize>() < subscriptions * posts {
            let message = next_json(&mut socket).await;
            assert_eq!(message["type"], "next", "{message}");
            let payload = &message["payload"];
            assert!(payload["errors"].is_null(), "{payload}");
            if payload["data"]["myEvents"]["__typename"] == "NotificationCreated" {
                *mentions
                    .entry(message["id"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
        assert!(mentions.values().all(|n| *n == posts), "{mentions:?}");
    }
}
