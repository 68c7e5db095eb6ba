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

/// A transaction left open elsewhere on the PostgreSQL server (another database on it,
/// or a session in this one that read the log and wrote something else, as an analyst's
/// or a rebuild's does) does not hold a mutation's read-your-writes wait back: the log's
/// readers wait only for transactions appending to it. Before, such a mutation waited
/// out its consistency wait and failed.
#[tokio::test]
async fn a_transaction_left_open_elsewhere_does_not_hold_mutations_back() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let open = crate::common::OpenTransactions::begin(&app.database).await;

    let registered = app.register("dora", "correct horse battery").await;
    assert_eq!(registered["errors"], json!(null), "{registered}");
    let me = app
        .graphql(
            "{ me { username } }",
            json!({}),
            Some(text(&registered, "/data/register/accessToken")),
        )
        .await;
    assert_eq!(text(&me, "/data/me/username"), "dora");

    open.end().await;
    app.stop().await;
}
