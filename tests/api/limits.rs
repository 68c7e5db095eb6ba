//! Bounded work per request: body size, multipart, document size, aliases and cost,
//! refused before anything runs, over HTTP and WebSocket, on every backend.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::*;

async fn post_raw(app: &TestApp, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oversized_bodies_and_multipart_uploads_are_refused_unread() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            c.max_request_bytes = 64 * 1024;
        })
        .await;
        let padding = "x".repeat(100 * 1024);
        let body = json!({ "query": "{ __typename }", "variables": { "pad": padding } });
        let (status, response) =
            post_raw(&app, "application/json", body.to_string().into_bytes()).await;
        assert_eq!(status, 413, "{response}");
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));

        let multipart = "--b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{\"query\":\"{ __typename }\"}\r\n--b--\r\n";
        let (status, response) = post_raw(
            &app,
            "multipart/form-data; boundary=b",
            multipart.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, 415, "{response}");

        // Within the limit, the same endpoint answers.
        let (status, response) = post_raw(
            &app,
            "application/json",
            json!({ "query": "{ __typename }" })
                .to_string()
                .into_bytes(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(response["data"]["__typename"], "Query");
    }
}

#[tokio::test]
async fn costly_documents_are_refused_before_they_run_even_unsigned() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let refused = |response: &Value| {
            assert_eq!(error_code(response), Some("BAD_USER_INPUT"), "{response}");
            assert!(response["data"].is_null(), "{response}");
        };

        // Thousands of `__typename` aliases: too big a document, and too many aliases.
        let aliases: String = (0..3_000).map(|n| format!("a{n}: __typename ")).collect();
        refused(
            &app.graphql(&format!("{{ {aliases} }}"), json!({}), None)
                .await,
        );
        let aliases: String = (0..60).map(|n| format!("a{n}: __typename ")).collect();
        let response = app
            .graphql(&format!("{{ {aliases} }}"), json!({}), None)
            .await;
        refused(&response);
        assert!(
            response["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("aliases")),
            "{response}"
        );

        // Page sizes multiply: one nested listing can be refused on its own, before
        // authentication is even looked at.
        let nested = "query($n: Int) { conversations(first: $n) { nodes { members(first: $n) { nodes { user { id username displayName } } } } } }";
        let response = app.graphql(nested, json!({ "n": 200 }), None).await;
        refused(&response);
        assert!(
            response["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cost")),
            "{response}"
        );
        // Fragments spread many times count every time.
        let bomb =
            "query { ...A } fragment A on Query { ...B ...B ...B ...B ...B ...B ...B ...B } \
             fragment B on Query { ...C ...C ...C ...C ...C ...C ...C ...C } \
             fragment C on Query { ...D ...D ...D ...D ...D ...D ...D ...D } \
             fragment D on Query { publicChannels(first: 200) { nodes { id title } } }";
        refused(&app.graphql(bomb, json!({}), None).await);

        // An ordinary screen stays far below the limit.
        let alice = user(&app, "alice").await;
        let screen = "{ me { id username } \
            conversations(first: 50) { nodes { id kind title unreadCount mentionCount lastActivityAt \
              lastMessage { id body createdAt author { id username displayName presence { status } } } } \
              pageInfo { hasNextPage endCursor } } \
            notifications(first: 20) { nodes { id kind read actor { username } } } }";
        ok(&gql(&app, &alice, screen, json!({})).await);
        let group = own_group(&app, &alice).await;
        let history =
            "query($c: ID!) { messages(conversationId: $c, last: 50) { edges { cursor node { \
            id seq body createdAt editedAt deleted replyCount readCount \
            author { id username displayName } replyTo { id body author { username } } \
            reactions { emoji count reactedByMe } mentions { id username } edits { body editedAt } \
            attachments { id filename url } } } pageInfo { hasPreviousPage startCursor } } }";
        ok(&gql(&app, &alice, history, json!({ "c": group })).await);

        // Subscriptions are held to the same limits.
        let mut socket = connect(&app, &alice.token).await;
        let costly = "subscription($a: String) { myEvents(after: $a) { ... on ConversationAdded { conversation { members(first: 200) { nodes { user { id } } } } } } }";
        let too_many: String = (0..60).map(|n| format!("a{n}: __typename ")).collect();
        start(
            &mut socket,
            "1",
            &format!("subscription {{ myEvents {{ {too_many} }} }}"),
            json!({}),
        )
        .await;
        let answer = next_json(&mut socket).await;
        // async-graphql reports a refused subscription as one `next` carrying the error.
        let errors = match answer["type"].as_str() {
            Some("error") => answer["payload"].clone(),
            _ => answer["payload"]["errors"].clone(),
        };
        assert_eq!(
            errors[0]["extensions"]["code"], "BAD_USER_INPUT",
            "{answer}"
        );
        assert!(answer["payload"]["data"].is_null(), "{answer}");
        let cursor = live_cursor_of(&app, &alice).await;
        start(&mut socket, "2", costly, json!({ "a": cursor })).await;
        ok(&gql(
            &app,
            &alice,
            "mutation { createGroup(input: { title: \"u\", memberIds: [] }) { id } }",
            json!({}),
        )
        .await);
        loop {
            let message = next_json(&mut socket).await;
            if message["id"] == "2" {
                assert_eq!(
                    message["type"], "next",
                    "within the limit, it runs: {message}"
                );
                assert!(message["payload"]["errors"].is_null(), "{message}");
                break;
            }
        }
    }
}
