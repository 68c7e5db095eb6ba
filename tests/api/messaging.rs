//! Conversations and messaging over GraphQL, on every backend.

use serde_json::{json, Value};

use crate::helpers::*;

async fn counts(app: &TestApp, who: &Client, conversation: &str) -> (i64, i64) {
    let response = gql(
        app,
        who,
        "query($id: ID!) { conversation(id: $id) { unreadCount mentionCount } }",
        json!({ "id": conversation }),
    )
    .await;
    let data = &ok(&response)["conversation"];
    (
        data["unreadCount"].as_i64().unwrap_or(-1),
        data["mentionCount"].as_i64().unwrap_or(-1),
    )
}

async fn notification_kinds(app: &TestApp, who: &Client) -> Vec<String> {
    let response = gql(
        app,
        who,
        "{ notifications { nodes { kind read message { id } actor { username } } } }",
        json!({}),
    )
    .await;
    let mut kinds: Vec<String> = ok(&response)["notifications"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    kinds.sort();
    kinds
}

async fn history(app: &TestApp, who: &Client, conversation: &str) -> Vec<Value> {
    let response = gql(app, who,
        "query($c: ID!) { messages(conversationId: $c, first: 200) { nodes { id seq body deleted editedAt edits { body } reactions { emoji count reactedByMe } replyCount readCount mentions { username } } } }",
        json!({ "c": conversation })).await;
    ok(&response)["messages"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_group_conversation_keeps_unread_mentions_and_notifications_right() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let group = create_group(&app, &alice, "Trip", &[&bob, &carol]).await;

        let bobs = send_ok(&app, &bob, &group, "hello all").await;
        send_ok(&app, &alice, &group, "one").await;
        let two = send_ok(&app, &alice, &group, "two @Bob").await;
        let three = send_ok(&app, &alice, &group, "three").await;
        let reply = gql(
            &app,
            &carol,
            SEND,
            json!({ "i": { "conversationId": group, "body": "re", "replyToId": bobs } }),
        )
        .await;
        let newest = text(&reply, "/data/sendMessage/id").to_owned();

        assert_eq!(counts(&app, &bob, &group).await, (4, 2));
        assert_eq!(
            notification_kinds(&app, &bob).await,
            vec!["MENTION", "REPLY"]
        );
        // The author's own messages never count as unread for them.
        assert_eq!(counts(&app, &alice, &group).await, (1, 0));

        let marked = gql(&app, &bob, "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { unreadCount mentionCount } }",
            json!({ "c": group, "m": newest })).await;
        assert_eq!(
            ok(&marked)["markRead"],
            json!({ "unreadCount": 0, "mentionCount": 0 })
        );
        // Forward only: an older message changes nothing.
        let older = gql(&app, &bob, "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { unreadCount } }",
            json!({ "c": group, "m": bobs })).await;
        assert_eq!(ok(&older)["markRead"]["unreadCount"], 0);
        // markUnread puts the marker just before the message.
        let unread = gql(&app, &bob, "mutation($c: ID!, $m: ID!) { markUnread(conversationId: $c, messageId: $m) { unreadCount mentionCount } }",
            json!({ "c": group, "m": two })).await;
        assert_eq!(
            ok(&unread)["markUnread"],
            json!({ "unreadCount": 3, "mentionCount": 2 })
        );

        // Edits, deletion and reactions show in history and notifications.
        let edited = gql(&app, &alice, "mutation($m: ID!) { editMessage(messageId: $m, body: \"two @bob @carol\") { body editedAt edits { body } } }",
            json!({ "m": two })).await;
        assert_eq!(
            ok(&edited)["editMessage"]["edits"],
            json!([{ "body": "two @Bob" }])
        );
        assert_eq!(notification_kinds(&app, &carol).await, vec!["MENTION"]);
        assert_eq!(
            notification_kinds(&app, &bob).await,
            vec!["MENTION", "REPLY"],
            "an edit notifies only new mentions"
        );

        let reacted = gql(&app, &bob, "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { reactions { emoji count reactedByMe } } }",
            json!({ "m": three })).await;
        assert_eq!(
            ok(&reacted)["addReaction"]["reactions"],
            json!([{ "emoji": "👍", "count": 1, "reactedByMe": true }])
        );
        let again = gql(&app, &bob, "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { reactions { count } } }", json!({ "m": three })).await;
        assert_eq!(
            ok(&again)["addReaction"]["reactions"][0]["count"],
            1,
            "adding twice is idempotent"
        );
        assert_eq!(notification_kinds(&app, &alice).await, vec!["REACTION"]);

        let deleted = gql(
            &app,
            &alice,
            "mutation($m: ID!) { deleteMessage(messageId: $m) { deleted body seq } }",
            json!({ "m": three }),
        )
        .await;
        assert_eq!(
            ok(&deleted)["deleteMessage"],
            json!({ "deleted": true, "body": null, "seq": 4 })
        );

        let messages = history(&app, &bob, &group).await;
        let seqs: Vec<i64> = messages.iter().filter_map(|m| m["seq"].as_i64()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(messages[0]["replyCount"], 1);
        assert_eq!(messages[2]["body"], "two @bob @carol");
        assert_eq!(
            messages[2]["mentions"],
            json!([{ "username": "bob" }, { "username": "carol" }])
        );
        assert_eq!(messages[3]["deleted"], true);
        assert_eq!(messages[3]["reactions"], json!([]));
        // The deleted message no longer counts as unread for bob; the mention and the
        // reply after his marker still do.
        assert_eq!(counts(&app, &bob, &group).await, (2, 2));

        let thread = gql(
            &app,
            &alice,
            "query($m: ID!) { thread(messageId: $m) { nodes { body } } }",
            json!({ "m": bobs }),
        )
        .await;
        assert_eq!(ok(&thread)["thread"]["nodes"], json!([{ "body": "re" }]));
        app.stop().await;
    }
}

#[tokio::test]
async fn history_pages_backwards_return_every_message_once_in_order() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "Many", &[&bob]).await;
        for i in 1..=250 {
            send_ok(
                &app,
                if i % 3 == 0 { &bob } else { &alice },
                &group,
                &format!("message {i}"),
            )
            .await;
        }
        let mut seen: Vec<i64> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let response = gql(&app, &bob,
                "query($c: ID!, $b: String) { messages(conversationId: $c, last: 40, before: $b) { nodes { seq body } pageInfo { hasPreviousPage startCursor } } }",
                json!({ "c": group, "b": before })).await;
            let page = &ok(&response)["messages"];
            let mut seqs: Vec<i64> = page["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["seq"].as_i64())
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "a page is oldest to newest"
            );
            seqs.extend(seen);
            seen = seqs;
            if page["pageInfo"]["hasPreviousPage"] != true {
                break;
            }
            before = page["pageInfo"]["startCursor"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, (1..=250).collect::<Vec<_>>());

        let first = gql(&app, &bob, "query($c: ID!) { messages(conversationId: $c, first: 2) { nodes { seq } pageInfo { hasNextPage endCursor } } }", json!({ "c": group })).await;
        assert_eq!(
            ok(&first)["messages"]["nodes"],
            json!([{ "seq": 1 }, { "seq": 2 }])
        );
        assert_eq!(ok(&first)["messages"]["pageInfo"]["hasNextPage"], true);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_retried_send_with_the_same_client_message_id_posts_once() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "Retry", &[&bob]).await;
        let input = json!({ "i": { "conversationId": group, "body": "only once", "clientMessageId": "c-42" } });
        let attempts =
            futures::future::join_all((0..4).map(|_| gql(&app, &alice, SEND, input.clone()))).await;
        let ids: std::collections::HashSet<&str> = attempts
            .iter()
            .map(|r| text(r, "/data/sendMessage/id"))
            .collect();
        assert_eq!(ids.len(), 1, "{attempts:?}");
        let edited_id = ids.into_iter().next().unwrap_or_default().to_owned();
        gql(
            &app,
            &alice,
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"edited\") { id } }",
            json!({ "m": edited_id }),
        )
        .await;
        let retry = gql(&app, &alice, SEND, input.clone()).await;
        assert_eq!(
            text(&retry, "/data/sendMessage/body"),
            "edited",
            "a retry returns the message as it now is"
        );
        let conflicting = gql(&app, &alice, SEND, json!({ "i": { "conversationId": group, "body": "something else", "clientMessageId": "c-42" } })).await;
        assert_eq!(error_code(&conflicting), Some("CONFLICT"));
        assert_eq!(history(&app, &alice, &group).await.len(), 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn outsiders_cannot_read_or_write_private_conversations() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, eve) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "eve").await,
        );
        let group = create_group(&app, &alice, "Secret", &[&bob]).await;
        let message = send_ok(&app, &alice, &group, "psst").await;
        let cases = [
            gql(
                &app,
                &eve,
                "query($id: ID!) { conversation(id: $id) { id } }",
                json!({ "id": group }),
            )
            .await,
            gql(
                &app,
                &eve,
                "query($id: ID!) { messages(conversationId: $id) { nodes { id } } }",
                json!({ "id": group }),
            )
            .await,
            gql(
                &app,
                &eve,
                "query($id: ID!) { message(id: $id) { id } }",
                json!({ "id": message }),
            )
            .await,
            send(&app, &eve, &group, "let me in").await,
            gql(
                &app,
                &eve,
                "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { id } }",
                json!({ "m": message }),
            )
            .await,
            gql(
                &app,
                &eve,
                "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { id } }",
                json!({ "c": group, "m": message }),
            )
            .await,
            gql(
                &app,
                &eve,
                "mutation($c: ID!) { joinChannel(conversationId: $c) { id } }",
                json!({ "c": group }),
            )
            .await,
        ];
        for response in &cases {
            assert_eq!(error_code(response), Some("FORBIDDEN"), "{response}");
        }
        let anonymous = app
            .graphql(
                "query($id: ID!) { conversation(id: $id) { id } }",
                json!({ "id": group }),
                None,
            )
            .await;
        assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
        let listed = gql(&app, &eve, "{ conversations { nodes { id } } }", json!({})).await;
        assert_eq!(ok(&listed)["conversations"]["nodes"], json!([]));
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_stores_nothing() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "Rules", &[&bob]).await;
        let other = create_group(&app, &alice, "Other", &[&bob]).await;
        let alices = send_ok(&app, &alice, &group, "mine").await;
        let elsewhere = send_ok(&app, &alice, &other, "elsewhere").await;
        let unknown = "01900000-0000-7000-8000-000000000000";

        let checks: Vec<(Value, &str, Option<&str>)> = vec![
            (send(&app, &bob, &group, "   ").await, "BAD_USER_INPUT", Some("body")),
            (send(&app, &bob, &group, &"x".repeat(4001)).await, "BAD_USER_INPUT", Some("body")),
            (send(&app, &bob, unknown, "hi").await, "NOT_FOUND", None),
            (send(&app, &bob, "not-an-id", "hi").await, "NOT_FOUND", None),
            (gql(&app, &bob, SEND, json!({ "i": { "conversationId": group, "body": "re", "replyToId": elsewhere } })).await, "BAD_USER_INPUT", Some("replyToId")),
            (gql(&app, &bob, SEND, json!({ "i": { "conversationId": group, "body": "re", "replyToId": unknown } })).await, "NOT_FOUND", None),
            (gql(&app, &bob, SEND, json!({ "i": { "conversationId": group, "body": "x", "clientMessageId": "c".repeat(65) } })).await, "BAD_USER_INPUT", Some("clientMessageId")),
            (gql(&app, &bob, "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"lol\") { id } }", json!({ "m": alices })).await, "BAD_USER_INPUT", Some("emoji")),
            (gql(&app, &bob, "mutation($m: ID!) { editMessage(messageId: $m, body: \"mine now\") { id } }", json!({ "m": alices })).await, "FORBIDDEN", None),
            (gql(&app, &bob, "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }", json!({ "m": alices })).await, "FORBIDDEN", None),
            (gql(&app, &bob, "mutation($m: ID!) { editMessage(messageId: $m, body: \"x\") { id } }", json!({ "m": unknown })).await, "NOT_FOUND", None),
            (gql(&app, &bob, "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { id } }", json!({ "c": group, "m": elsewhere })).await, "BAD_USER_INPUT", Some("messageId")),
            (gql(&app, &alice, "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }", json!({ "i": { "title": " ", "memberIds": [] } })).await, "BAD_USER_INPUT", Some("title")),
            (gql(&app, &alice, "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }", json!({ "i": { "title": "x", "memberIds": [unknown] } })).await, "NOT_FOUND", None),
            (gql(&app, &bob, "query($c: ID!) { messages(conversationId: $c, after: \"garbage\") { nodes { id } } }", json!({ "c": group })).await, "BAD_USER_INPUT", None),
            (gql(&app, &bob, "query($c: ID!) { messages(conversationId: $c, first: -1) { nodes { id } } }", json!({ "c": group })).await, "BAD_USER_INPUT", None),
        ];
        for (response, code, field) in &checks {
            assert_eq!(error_code(response), Some(*code), "{response}");
            if let Some(field) = field {
                assert_eq!(error_field(response), Some(*field), "{response}");
            }
        }
        assert_eq!(
            history(&app, &alice, &group).await.len(),
            1,
            "rejected input stored nothing"
        );
        let groups = gql(
            &app,
            &alice,
            "{ conversations { nodes { title } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            ok(&groups)["conversations"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn invitations_are_answered_once_by_the_invitee() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let group = create_group(&app, &alice, "Club", &[&bob]).await;
        const INVITE: &str = "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id status invitee { username } } }";
        let invited = gql(&app, &alice, INVITE, json!({ "c": group, "u": carol.id })).await;
        assert_eq!(ok(&invited)["inviteMember"]["status"], "PENDING");
        let invitation = text(&invited, "/data/inviteMember/id").to_owned();
        assert_eq!(
            error_code(&gql(&app, &bob, INVITE, json!({ "c": group, "u": carol.id })).await),
            Some("CONFLICT")
        );
        assert_eq!(
            error_code(&gql(&app, &alice, INVITE, json!({ "c": group, "u": bob.id })).await),
            Some("CONFLICT")
        );
        assert_eq!(notification_kinds(&app, &carol).await, vec!["INVITATION"]);

        let mine = gql(&app, &carol, "{ invitations(status: PENDING) { nodes { id conversation { title } inviter { username } } } }", json!({})).await;
        assert_eq!(
            ok(&mine)["invitations"]["nodes"][0]["conversation"]["title"],
            "Club"
        );

        const ACCEPT: &str =
            "mutation($i: ID!) { acceptInvitation(invitationId: $i) { id myRole } }";
        assert_eq!(
            error_code(&gql(&app, &bob, ACCEPT, json!({ "i": invitation })).await),
            Some("FORBIDDEN")
        );
        let accepted = gql(&app, &carol, ACCEPT, json!({ "i": invitation })).await;
        assert_eq!(ok(&accepted)["acceptInvitation"]["myRole"], "MEMBER");
        assert_eq!(
            error_code(&gql(&app, &carol, ACCEPT, json!({ "i": invitation })).await),
            Some("CONFLICT")
        );
        assert_eq!(
            error_code(
                &gql(
                    &app,
                    &carol,
                    ACCEPT,
                    json!({ "i": "01900000-0000-7000-8000-000000000000" })
                )
                .await
            ),
            Some("NOT_FOUND")
        );
        send_ok(&app, &carol, &group, "thanks").await;

        let dave = user(&app, "dave").await;
        let second = gql(&app, &bob, INVITE, json!({ "c": group, "u": dave.id })).await;
        let second = text(&second, "/data/inviteMember/id").to_owned();
        let revoked = gql(
            &app,
            &bob,
            "mutation($i: ID!) { revokeInvitation(invitationId: $i) { status } }",
            json!({ "i": second }),
        )
        .await;
        assert_eq!(ok(&revoked)["revokeInvitation"]["status"], "REVOKED");
        let third = gql(&app, &alice, INVITE, json!({ "c": group, "u": dave.id })).await;
        let third = text(&third, "/data/inviteMember/id").to_owned();
        let declined = gql(
            &app,
            &dave,
            "mutation($i: ID!) { declineInvitation(invitationId: $i) { status } }",
            json!({ "i": third }),
        )
        .await;
        assert_eq!(ok(&declined)["declineInvitation"]["status"], "DECLINED");
        app.stop().await;
    }
}

#[tokio::test]
async fn channels_have_unique_slugs_and_public_ones_can_be_joined() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        const CREATE: &str = "mutation($i: CreateChannelInput!) { createChannel(input: $i) { id slug title visibility myRole } }";
        let general = gql(&app, &alice, CREATE, json!({ "i": { "name": "General Chat", "visibility": "PUBLIC", "description": "everyone" } })).await;
        assert_eq!(ok(&general)["createChannel"]["slug"], "general-chat");
        let general_id = text(&general, "/data/createChannel/id").to_owned();
        let duplicate = gql(
            &app,
            &bob,
            CREATE,
            json!({ "i": { "name": "Other", "slug": "general-chat", "visibility": "PUBLIC" } }),
        )
        .await;
        assert_eq!(error_code(&duplicate), Some("CONFLICT"));
        let bad_slug = gql(
            &app,
            &bob,
            CREATE,
            json!({ "i": { "name": "Other", "slug": "Bad Slug!", "visibility": "PUBLIC" } }),
        )
        .await;
        assert_eq!(error_field(&bad_slug), Some("slug"));
        let secret = gql(
            &app,
            &alice,
            CREATE,
            json!({ "i": { "name": "Secret", "visibility": "PRIVATE" } }),
        )
        .await;
        let secret_id = text(&secret, "/data/createChannel/id").to_owned();

        // Public channels are readable by anyone signed in, and joinable.
        let read = gql(
            &app,
            &bob,
            "query($s: String!) { conversationBySlug(slug: $s) { id myRole } }",
            json!({ "s": "general-chat" }),
        )
        .await;
        assert_eq!(ok(&read)["conversationBySlug"]["myRole"], Value::Null);
        let listed = gql(
            &app,
            &bob,
            "{ publicChannels { nodes { slug } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            ok(&listed)["publicChannels"]["nodes"],
            json!([{ "slug": "general-chat" }])
        );
        let joined = gql(
            &app,
            &bob,
            "mutation($c: ID!) { joinChannel(conversationId: $c) { myRole } }",
            json!({ "c": general_id }),
        )
        .await;
        assert_eq!(ok(&joined)["joinChannel"]["myRole"], "MEMBER");
        let forbidden = gql(
            &app,
            &bob,
            "mutation($c: ID!) { joinChannel(conversationId: $c) { myRole } }",
            json!({ "c": secret_id }),
        )
        .await;
        assert_eq!(error_code(&forbidden), Some("FORBIDDEN"));
        let found = gql(
            &app,
            &bob,
            "{ searchConversations(query: \"GEN\") { nodes { slug } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            ok(&found)["searchConversations"]["nodes"],
            json!([{ "slug": "general-chat" }])
        );

        // Only owners and admins change details; members can leave.
        const UPDATE: &str = "mutation($i: UpdateConversationInput!) { updateConversation(input: $i) { title description } }";
        assert_eq!(
            error_code(
                &gql(
                    &app,
                    &bob,
                    UPDATE,
                    json!({ "i": { "conversationId": general_id, "title": "Mine" } })
                )
                .await
            ),
            Some("FORBIDDEN")
        );
        let updated = gql(
            &app,
            &alice,
            UPDATE,
            json!({ "i": { "conversationId": general_id, "description": "all of us" } }),
        )
        .await;
        assert_eq!(
            ok(&updated)["updateConversation"],
            json!({ "title": "General Chat", "description": "all of us" })
        );
        let left = gql(
            &app,
            &bob,
            "mutation($c: ID!) { leaveConversation(conversationId: $c) }",
            json!({ "c": general_id }),
        )
        .await;
        assert_eq!(ok(&left)["leaveConversation"], true);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_direct_conversation_is_one_per_pair_even_under_concurrent_creation() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        const DIRECT: &str =
            "mutation($u: ID!) { createDirectConversation(userId: $u) { id kind } }";
        let attempts = futures::future::join_all((0..3).map(|i| {
            if i % 2 == 0 {
                gql(&app, &alice, DIRECT, json!({ "u": bob.id }))
            } else {
                gql(&app, &bob, DIRECT, json!({ "u": alice.id }))
            }
        }))
        .await;
        let ids: std::collections::HashSet<&str> = attempts
            .iter()
            .map(|r| text(r, "/data/createDirectConversation/id"))
            .collect();
        assert_eq!(ids.len(), 1, "{attempts:?}");
        let myself = gql(&app, &alice, DIRECT, json!({ "u": alice.id })).await;
        assert_eq!(error_code(&myself), Some("BAD_USER_INPUT"));
        app.stop().await;
    }
}

#[tokio::test]
async fn conversations_list_by_recent_activity_and_levels_silence_notifications() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let first = create_group(&app, &alice, "First", &[&bob]).await;
        let second = create_group(&app, &alice, "Second", &[&bob]).await;
        send_ok(&app, &alice, &first, "bump").await;
        let listed = gql(
            &app,
            &bob,
            "{ conversations { nodes { title lastMessage { body } } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            ok(&listed)["conversations"]["nodes"],
            json!([
                { "title": "First", "lastMessage": { "body": "bump" } },
                { "title": "Second", "lastMessage": null },
            ])
        );

        let set = gql(&app, &bob, "mutation($c: ID!) { setNotificationLevel(conversationId: $c, level: NONE) { notificationLevel } }", json!({ "c": second })).await;
        assert_eq!(
            ok(&set)["setNotificationLevel"]["notificationLevel"],
            "NONE"
        );
        send_ok(&app, &alice, &second, "hey @bob").await;
        assert!(
            notification_kinds(&app, &bob).await.is_empty(),
            "NONE silences notifications"
        );
        assert_eq!(
            counts(&app, &bob, &second).await,
            (1, 1),
            "but counts are kept"
        );

        send_ok(&app, &alice, &first, "hey @bob").await;
        let unread = gql(
            &app,
            &bob,
            "{ notifications(unreadOnly: true) { nodes { id } } }",
            json!({}),
        )
        .await;
        let ids: Vec<String> = ok(&unread)["notifications"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(ids.len(), 1);
        let marked = gql(
            &app,
            &bob,
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
            json!({ "ids": ids }),
        )
        .await;
        assert_eq!(ok(&marked)["markNotificationsRead"], 1);
        let none = gql(
            &app,
            &bob,
            "{ notifications(unreadOnly: true) { nodes { id } } }",
            json!({}),
        )
        .await;
        assert_eq!(ok(&none)["notifications"]["nodes"], json!([]));
        let all = gql(
            &app,
            &bob,
            "mutation { markAllNotificationsRead }",
            json!({}),
        )
        .await;
        assert_eq!(ok(&all)["markAllNotificationsRead"], 0);

        let found = gql(
            &app,
            &alice,
            "{ searchUsers(query: \"BO\") { nodes { username } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            ok(&found)["searchUsers"]["nodes"],
            json!([{ "username": "bob" }])
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn message_search_finds_words_only_where_the_caller_may_read() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, eve) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "eve").await,
        );
        let private = create_group(&app, &alice, "Private", &[&bob]).await;
        let channel = gql(
            &app,
            &alice,
            "mutation { createChannel(input: { name: \"Open\", visibility: PUBLIC }) { id } }",
            json!({}),
        )
        .await;
        let channel = text(&channel, "/data/createChannel/id").to_owned();
        send_ok(&app, &alice, &private, "the secret rendezvous is at noon").await;
        send_ok(&app, &alice, &channel, "public rendezvous tomorrow").await;
        let gone = send_ok(&app, &alice, &channel, "rendezvous cancelled").await;
        gql(
            &app,
            &alice,
            "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }",
            json!({ "m": gone }),
        )
        .await;
        const SEARCH: &str = "query($q: String!, $c: ID) { searchMessages(query: $q, conversationId: $c) { nodes { body } } }";
        let bodies = |response: &Value| -> Vec<String> {
            ok(response)["searchMessages"]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["body"].as_str().map(str::to_owned))
                .collect()
        };
        let mut for_bob = bodies(&gql(&app, &bob, SEARCH, json!({ "q": "Rendezvous" })).await);
        for_bob.sort();
        assert_eq!(
            for_bob,
            vec![
                "public rendezvous tomorrow",
                "the secret rendezvous is at noon"
            ]
        );
        assert_eq!(
            bodies(&gql(&app, &eve, SEARCH, json!({ "q": "rendezvous" })).await),
            vec!["public rendezvous tomorrow"]
        );
        assert_eq!(
            bodies(&gql(&app, &bob, SEARCH, json!({ "q": "secret noon" })).await),
            vec!["the secret rendezvous is at noon"]
        );
        assert_eq!(
            bodies(
                &gql(
                    &app,
                    &bob,
                    SEARCH,
                    json!({ "q": "rendezvous", "c": channel })
                )
                .await
            ),
            vec!["public rendezvous tomorrow"]
        );
        // Search syntax in the query is taken literally, never an error.
        assert!(
            bodies(&gql(&app, &bob, SEARCH, json!({ "q": "\"unbalanced OR *" })).await).is_empty()
        );
        assert_eq!(
            error_code(&gql(&app, &eve, SEARCH, json!({ "q": "secret", "c": private })).await),
            Some("FORBIDDEN")
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_posts_to_one_conversation_all_land_with_consecutive_seqs() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "Busy", &[&bob]).await;
        let posts = futures::future::join_all((0..24).map(|i| {
            let who = if i % 2 == 0 { &alice } else { &bob };
            send(&app, who, &group, "racing")
        }))
        .await;
        for post in &posts {
            ok(post);
        }
        let seqs: Vec<i64> = history(&app, &alice, &group)
            .await
            .iter()
            .filter_map(|m| m["seq"].as_i64())
            .collect();
        assert_eq!(seqs, (1..=24).collect::<Vec<_>>());
        // Receipts: bob has read everything up to his own last post.
        let read = gql(&app, &alice, "query($c: ID!) { messages(conversationId: $c, first: 1) { nodes { author { username } readCount } } }", json!({ "c": group })).await;
        let first = &ok(&read)["messages"]["nodes"][0];
        assert_eq!(first["readCount"], 1, "{first}");
        app.stop().await;
    }
}

mod replay {
    use parley_projections::runner;
    use parley_store::{log, LogPosition};

    use super::*;

    #[tokio::test]
    async fn every_projector_is_idempotent_and_equals_a_fresh_replay() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let app = spawn_app(backend).await;
            busy_history(&app).await;
            app.state.projections.stop();
            let db = &app.state.db;
            let events = log::read_after(db, LogPosition::START, 10_000)
                .await
                .expect("events");
            for projector in parley::startup::projectors() {
                let tables = runner::all_tables(projector.as_ref(), db.backend);
                let before = dump(db, &tables).await;
                assert!(!before.is_empty(), "{} built nothing", projector.name());

                let mut tx = db.write.begin().await.expect("begin");
                for event in &events {
                    projector.apply(&mut tx, event).await.expect("reapply");
                }
                tx.commit().await.expect("commit");
                assert_eq!(
                    dump(db, &tables).await,
                    before,
                    "{}: applying twice changed rows",
                    projector.name()
                );

                // One event at a time (`apply`) builds what batches (`apply_all`) built.
                runner::reset(db, projector.as_ref()).await.expect("reset");
                let mut tx = db.write.begin().await.expect("begin");
                for event in &events {
                    projector.apply(&mut tx, event).await.expect("apply alone");
                }
                tx.commit().await.expect("commit");
                assert_eq!(
                    dump(db, &tables).await,
                    before,
                    "{}: events applied one by one differ from batches",
                    projector.name()
                );

                runner::reset(db, projector.as_ref()).await.expect("reset");
                runner::catch_up(db, projector.as_ref())
                    .await
                    .expect("replay");
                assert_eq!(
                    dump(db, &tables).await,
                    before,
                    "{}: a fresh replay differs",
                    projector.name()
                );
            }
            app.stop().await;
        }
    }
}

/// The number of events in the log, once everything committed so far is readable.
async fn log_length(app: &TestApp) -> i64 {
    let db = &app.state.db;
    let head = parley_store::log::head(db).await.expect("head");
    app.state
        .projections
        .wait_for(head, std::time::Duration::from_secs(30))
        .await;
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&db.read)
        .await
        .expect("count")
}

#[tokio::test]
async fn commands_validate_all_input_and_only_real_changes_become_events() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "Plans", &[&bob]).await;
        send_ok(&app, &alice, &group, "hey @bob").await;
        let alices = send_ok(&app, &alice, &group, "mine").await;
        let before = log_length(&app).await;

        // Control characters other than newline and tab, in every kind of text.
        let cases = [
            (send(&app, &alice, &group, "nul\u{0}inside").await, "body"),
            (send(&app, &alice, &group, "escape \u{1b}[2J").await, "body"),
            (
                gql(&app, &alice, "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }",
                    json!({ "i": { "title": "bell\u{7}", "memberIds": [] } })).await,
                "title",
            ),
            (
                gql(&app, &alice, "mutation($i: UpdateConversationInput!) { updateConversation(input: $i) { id } }",
                    json!({ "i": { "conversationId": group, "description": "c1\u{85}here" } })).await,
                "description",
            ),
            (
                gql(&app, &alice, "mutation($m: ID!) { editMessage(messageId: $m, body: \"ok\\u0000\") { id } }",
                    json!({ "m": alices })).await,
                "body",
            ),
            // Checked before anything is claimed or looked up under it: PostgreSQL took
            // no NUL in that lookup, and answered INTERNAL_SERVER_ERROR.
            (
                gql(&app, &alice, "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
                    json!({ "i": { "conversationId": group, "body": "fine", "clientMessageId": "key\u{0}",
                                   "attachmentIds": [uuid::Uuid::now_v7().to_string()] } })).await,
                "clientMessageId",
            ),
            (
                gql(&app, &alice, "query($q: String!) { searchMessages(query: $q) { nodes { id } } }",
                    json!({ "q": "mine\u{0}" })).await,
                "query",
            ),
            (
                gql(&app, &alice, "query($q: String!) { searchUsers(query: $q) { nodes { id } } }",
                    json!({ "q": "bo\u{0}" })).await,
                "query",
            ),
            (
                gql(&app, &alice, "query($q: String!) { searchConversations(query: $q) { nodes { id } } }",
                    json!({ "q": "\u{1b}Plans" })).await,
                "query",
            ),
        ];
        for (response, field) in &cases {
            assert_eq!(error_code(response), Some("BAD_USER_INPUT"), "{response}");
            assert_eq!(error_field(response), Some(*field), "{response}");
        }
        let bad_name = app
            .graphql(
                "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
                json!({ "i": { "username": "carol", "password": "correct horse battery", "displayName": "Car\u{0}ol" } }),
                None,
            )
            .await;
        assert_eq!(error_field(&bad_name), Some("displayName"), "{bad_name}");
        // What cannot be a slug names no channel.
        let by_slug = gql(
            &app,
            &alice,
            "query($s: String!) { conversationBySlug(slug: $s) { id } }",
            json!({ "s": "plans\u{0}" }),
        )
        .await;
        assert_eq!(error_code(&by_slug), Some("NOT_FOUND"), "{by_slug}");
        let searched = gql(
            &app,
            &alice,
            "query($q: String!) { searchMessages(query: $q) { nodes { body } } }",
            json!({ "q": "mine\n" }),
        )
        .await;
        assert_eq!(ok(&searched)["searchMessages"]["nodes"][0]["body"], "mine");
        let multi_line = send(&app, &alice, &group, "line one\r\n\tline two").await;
        assert_eq!(
            ok(&multi_line)["sendMessage"]["body"],
            "line one\n\tline two"
        );
        let after_posting = log_length(&app).await;
        assert_eq!(after_posting, before + 1, "only the valid post");

        // Bounded, well-formed, de-duplicated id lists.
        let many: Vec<String> = (0..300).map(|_| bob.id.clone()).collect();
        let group_of_many = gql(
            &app,
            &alice,
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }",
            json!({ "i": { "title": "Crowd", "memberIds": many } }),
        )
        .await;
        assert_eq!(
            error_code(&group_of_many),
            Some("BAD_USER_INPUT"),
            "{group_of_many}"
        );
        assert_eq!(error_field(&group_of_many), Some("memberIds"));
        let twice = gql(&app, &alice, "mutation($i: CreateGroupInput!) { createGroup(input: $i) { members { nodes { user { username } } } } }",
            json!({ "i": { "title": "Pair", "memberIds": [bob.id, bob.id] } })).await;
        assert_eq!(
            ok(&twice)["createGroup"]["members"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let junk = gql(
            &app,
            &bob,
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
            json!({ "ids": ["junk"] }),
        )
        .await;
        assert_eq!(error_field(&junk), Some("ids"), "{junk}");
        let too_many: Vec<String> = (0..201)
            .map(|n| format!("00000000-0000-0000-0000-{n:012}"))
            .collect();
        let oversized = gql(
            &app,
            &bob,
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
            json!({ "ids": too_many }),
        )
        .await;
        assert_eq!(error_field(&oversized), Some("ids"), "{oversized}");
        let eleven: Vec<String> = (0..11)
            .map(|n| format!("00000000-0000-0000-0000-{n:012}"))
            .collect();
        let attached = gql(
            &app,
            &alice,
            SEND,
            json!({ "i": { "conversationId": group, "body": "files", "attachmentIds": eleven } }),
        )
        .await;
        assert_eq!(error_field(&attached), Some("attachmentIds"), "{attached}");
        let settled = log_length(&app).await;

        // Commands that change nothing append nothing: someone else's notification,
        // unknown ids, and marking everything read when nothing is unread.
        let bobs_notification =
            ok(&gql(&app, &bob, "{ notifications { nodes { id } } }", json!({})).await)
                ["notifications"]["nodes"][0]["id"]
                .clone();
        let foreign = gql(
            &app,
            &alice,
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
            json!({ "ids": [bobs_notification, "00000000-0000-0000-0000-000000000001"] }),
        )
        .await;
        assert_eq!(ok(&foreign)["markNotificationsRead"], 0);
        let nothing = gql(
            &app,
            &alice,
            "mutation { markAllNotificationsRead }",
            json!({}),
        )
        .await;
        assert_eq!(ok(&nothing)["markAllNotificationsRead"], 0);
        assert_eq!(log_length(&app).await, settled);
        let mine = gql(
            &app,
            &bob,
            "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }",
            json!({ "ids": [bobs_notification, bobs_notification] }),
        )
        .await;
        assert_eq!(ok(&mine)["markNotificationsRead"], 1);
        assert_eq!(log_length(&app).await, settled + 1);
        let again = gql(
            &app,
            &bob,
            "mutation { markAllNotificationsRead }",
            json!({}),
        )
        .await;
        assert_eq!(ok(&again)["markAllNotificationsRead"], 0);
        assert_eq!(log_length(&app).await, settled + 1);
    }
}
