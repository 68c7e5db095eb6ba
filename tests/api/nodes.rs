//! Several `parley serve` nodes on one PostgreSQL database.

use serde_json::json;

use crate::helpers::*;

async fn send(app: &TestApp, group: &str, token: &str, body: &str) -> serde_json::Value {
    app.graphql(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { seq } }",
        json!({ "i": { "conversationId": group, "body": body } }),
        Some(token),
    )
    .await
}

#[tokio::test]
async fn two_nodes_share_writes_and_projections_survive_the_owner_stopping() {
    if !several_nodes() {
        return;
    }
    let first = spawn_app(Backend::Postgres).await;
    let second = spawn_app_on(first.database.shared(), |_| {}).await;

    let alice = first.register("alice", "correct horse battery").await;
    let bob = second.register("bob", "correct horse battery").await;
    let (alice_token, bob_token) = (
        text(&alice, "/data/register/accessToken").to_owned(),
        text(&bob, "/data/register/accessToken").to_owned(),
    );
    let group = first
        .graphql("mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }", json!({ "i": { "title": "Nodes", "memberIds": [text(&bob, "/data/register/user/id")] } }), Some(&alice_token))
        .await;
    let group = text(&group, "/data/createGroup/id").to_owned();
    let unread = "query($c: ID!) { conversation(id: $c) { unreadCount } }";

    // A write through one node is read through the other, at once.
    assert_eq!(
        send(&second, &group, &bob_token, "from the second node").await["data"]["sendMessage"]
            ["seq"],
        1
    );
    let seen = first
        .graphql(unread, json!({ "c": group }), Some(&alice_token))
        .await;
    assert_eq!(seen["data"]["conversation"]["unreadCount"], 1, "{seen}");

    // Stop the node that started first (it holds some or all projector locks); the
    // other takes the projectors over and its mutations still settle.
    let database = first.stop().await;
    assert_eq!(
        send(&second, &group, &bob_token, "after the first node stopped").await["data"]
            ["sendMessage"]["seq"],
        2
    );
    let seen = second
        .graphql(unread, json!({ "c": group }), Some(&alice_token))
        .await;
    assert_eq!(seen["data"]["conversation"]["unreadCount"], 2, "{seen}");
    assert_eq!(
        second
            .state
            .consistency_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a mutation outwaited the takeover"
    );
    // Had both nodes run the same projector at once, the chain would not hold together.
    let verified = parley_projections::chain::verify(&second.state.db, None)
        .await
        .expect("verify runs");
    assert!(verified.is_ok(), "{verified:?}");
    second.stop().await;
    drop(database);
}
