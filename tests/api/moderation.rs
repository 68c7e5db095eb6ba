//! Moderation over GraphQL: roles, kick, ban, mute, the moderation log, on every backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::helpers::*;

async fn group(app: &TestApp, owner: &Client, members: &[&Client]) -> String {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let response = gql(
        app,
        owner,
        "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }",
        json!({ "i": { "title": "Mods", "memberIds": ids } }),
    )
    .await;
    text(&response, "/data/createGroup/id").to_owned()
}

async fn send(app: &TestApp, who: &Client, conversation: &str, body: &str) -> Value {
    gql(
        app,
        who,
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        json!({ "i": { "conversationId": conversation, "body": body } }),
    )
    .await
}

async fn act(
    app: &TestApp,
    who: &Client,
    mutation: &str,
    conversation: &str,
    target: &Client,
    extra: Value,
) -> Value {
    let mut variables = json!({ "c": conversation, "u": target.id });
    if let (Some(vars), Some(extra)) = (variables.as_object_mut(), extra.as_object()) {
        vars.extend(extra.clone());
    }
    let (params, args) = match mutation {
        "setMemberRole" => (
            "$role: Role!, $reason: String",
            "role: $role, reason: $reason",
        ),
        "kickMember" | "banMember" | "muteMember" => (
            "$reason: String!, $until: DateTime",
            "reason: $reason, until: $until",
        ),
        _ => ("$reason: String", "reason: $reason"),
    };
    let args = if mutation == "kickMember" {
        "reason: $reason"
    } else {
        args
    };
    let params = if mutation == "kickMember" {
        "$reason: String!"
    } else {
        params
    };
    let query = format!(
        "mutation($c: ID!, $u: ID!, {params}) {{ {mutation}(conversationId: $c, userId: $u, {args}) {{ id action actor {{ username }} target {{ username }} reason expiresAt }} }}"
    );
    gql(app, who, &query, variables).await
}

async fn roles(app: &TestApp, who: &Client, conversation: &str) -> Vec<(String, String)> {
    let response = gql(
        app,
        who,
        "query($c: ID!) { conversation(id: $c) { members { nodes { user { username } role } } } }",
        json!({ "c": conversation }),
    )
    .await;
    let mut roles: Vec<(String, String)> = ok(&response)["conversation"]["members"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["user"]["username"].as_str().unwrap_or("").to_owned(),
                m["role"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    roles.sort();
    roles
}

async fn log_actions(app: &TestApp, who: &Client, conversation: &str) -> Value {
    gql(app, who, "query($c: ID!) { moderationLog(conversationId: $c) { nodes { action actor { username } target { username } messageId reason } } }", json!({ "c": conversation })).await
}

#[tokio::test]
async fn roles_bound_what_each_member_may_do() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol, dave) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
            user(&app, "dave").await,
        );
        let conv = group(&app, &alice, &[&bob, &carol, &dave]).await;

        let promoted = act(
            &app,
            &alice,
            "setMemberRole",
            &conv,
            &bob,
            json!({ "role": "ADMIN" }),
        )
        .await;
        assert_eq!(ok(&promoted)["setMemberRole"]["action"], "ROLE_CHANGE");
        let rejections = [
            (
                act(
                    &app,
                    &bob,
                    "setMemberRole",
                    &conv,
                    &carol,
                    json!({ "role": "ADMIN" }),
                )
                .await,
                "FORBIDDEN",
            ),
            (
                act(
                    &app,
                    &bob,
                    "banMember",
                    &conv,
                    &alice,
                    json!({ "reason": "coup" }),
                )
                .await,
                "FORBIDDEN",
            ),
            (
                act(
                    &app,
                    &dave,
                    "kickMember",
                    &conv,
                    &bob,
                    json!({ "reason": "payback" }),
                )
                .await,
                "FORBIDDEN",
            ),
            (
                act(
                    &app,
                    &bob,
                    "kickMember",
                    &conv,
                    &carol,
                    json!({ "reason": "  " }),
                )
                .await,
                "BAD_USER_INPUT",
            ),
            (
                act(
                    &app,
                    &bob,
                    "muteMember",
                    &conv,
                    &carol,
                    json!({ "reason": "x".repeat(501) }),
                )
                .await,
                "BAD_USER_INPUT",
            ),
            (
                act(
                    &app,
                    &alice,
                    "setMemberRole",
                    &conv,
                    &carol,
                    json!({ "role": "OWNER" }),
                )
                .await,
                "BAD_USER_INPUT",
            ),
            (
                act(
                    &app,
                    &alice,
                    "banMember",
                    &conv,
                    &carol,
                    json!({ "reason": "r", "until": "not a time" }),
                )
                .await,
                "BAD_USER_INPUT",
            ),
            (
                act(
                    &app,
                    &alice,
                    "banMember",
                    &conv,
                    &carol,
                    json!({ "reason": "r", "until": "2001-01-01T00:00:00Z" }),
                )
                .await,
                "BAD_USER_INPUT",
            ),
        ];
        for (response, code) in &rejections {
            assert_eq!(error_code(response), Some(*code), "{response}");
        }
        assert_eq!(error_field(&rejections[3].0), Some("reason"));
        assert_eq!(
            ok(&log_actions(&app, &alice, &conv).await)["moderationLog"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "rejections stored nothing"
        );

        let kicked = act(
            &app,
            &bob,
            "kickMember",
            &conv,
            &carol,
            json!({ "reason": "rude" }),
        )
        .await;
        assert_eq!(ok(&kicked)["kickMember"]["target"]["username"], "carol");
        assert_eq!(
            error_code(&send(&app, &carol, &conv, "let me back").await),
            Some("FORBIDDEN")
        );
        assert_eq!(
            roles(&app, &alice, &conv).await,
            vec![
                ("alice".to_owned(), "OWNER".to_owned()),
                ("bob".to_owned(), "ADMIN".to_owned()),
                ("dave".to_owned(), "MEMBER".to_owned()),
            ]
        );

        let message = send(&app, &dave, &conv, "spam spam").await;
        let message_id = text(&message, "/data/sendMessage/id").to_owned();
        let muted = act(
            &app,
            &bob,
            "muteMember",
            &conv,
            &dave,
            json!({ "reason": "flooding" }),
        )
        .await;
        assert_eq!(ok(&muted)["muteMember"]["expiresAt"], Value::Null);
        assert_eq!(
            error_code(&send(&app, &dave, &conv, "more").await),
            Some("FORBIDDEN")
        );
        let react = gql(
            &app,
            &dave,
            "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { id } }",
            json!({ "m": message_id }),
        )
        .await;
        assert_eq!(error_code(&react), Some("FORBIDDEN"));
        let members = gql(&app, &alice, "query($c: ID!) { conversation(id: $c) { members { nodes { user { username } muted mutedUntil } } } }", json!({ "c": conv })).await;
        let dave_row = ok(&members)["conversation"]["members"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["user"]["username"] == "dave")
            .cloned()
            .unwrap_or_default();
        assert_eq!(dave_row["muted"], true);
        assert!(dave_row["mutedUntil"].is_string());

        let without_reason = gql(
            &app,
            &bob,
            "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }",
            json!({ "m": message_id }),
        )
        .await;
        assert_eq!(error_field(&without_reason), Some("reason"));
        let deleted = gql(
            &app,
            &bob,
            "mutation($m: ID!) { deleteMessage(messageId: $m, reason: \"spam\") { deleted } }",
            json!({ "m": message_id }),
        )
        .await;
        assert_eq!(ok(&deleted)["deleteMessage"]["deleted"], true);
        ok(&act(&app, &bob, "unmuteMember", &conv, &dave, json!({})).await);
        ok(&send(&app, &dave, &conv, "sorry").await);

        let log = log_actions(&app, &alice, &conv).await;
        let actions: Vec<&str> = ok(&log)["moderationLog"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["action"].as_str())
            .collect();
        assert_eq!(
            actions,
            vec!["UNMUTE", "DELETE_MESSAGE", "MUTE", "KICK", "ROLE_CHANGE"]
        );
        let deletion = &ok(&log)["moderationLog"]["nodes"][1];
        assert_eq!(deletion["messageId"], message_id.as_str());
        assert_eq!(deletion["reason"], "spam");
        assert_eq!(
            error_code(&log_actions(&app, &dave, &conv).await),
            Some("FORBIDDEN")
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn the_last_owner_must_transfer_ownership_before_leaving() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let conv = group(&app, &alice, &[&bob]).await;
        let leave = "mutation($c: ID!) { leaveConversation(conversationId: $c) }";
        assert_eq!(
            error_code(&gql(&app, &alice, leave, json!({ "c": conv })).await),
            Some("FORBIDDEN")
        );
        assert_eq!(
            error_code(&act(&app, &bob, "transferOwnership", &conv, &bob, json!({})).await),
            Some("FORBIDDEN")
        );
        let transferred = act(
            &app,
            &alice,
            "transferOwnership",
            &conv,
            &bob,
            json!({ "reason": "vacation" }),
        )
        .await;
        assert_eq!(
            ok(&transferred)["transferOwnership"]["action"],
            "OWNERSHIP_TRANSFER"
        );
        assert_eq!(
            roles(&app, &bob, &conv).await,
            vec![
                ("alice".to_owned(), "ADMIN".to_owned()),
                ("bob".to_owned(), "OWNER".to_owned())
            ]
        );
        assert_eq!(
            ok(&gql(&app, &alice, leave, json!({ "c": conv })).await)["leaveConversation"],
            true
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_banned_user_cannot_rejoin_or_be_invited_until_unbanned() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, eve) = (user(&app, "alice").await, user(&app, "eve").await);
        let channel = gql(
            &app,
            &alice,
            "mutation { createChannel(input: { name: \"Lobby\", visibility: PUBLIC }) { id } }",
            json!({}),
        )
        .await;
        let channel = text(&channel, "/data/createChannel/id").to_owned();
        let join = "mutation($c: ID!) { joinChannel(conversationId: $c) { myRole } }";
        ok(&gql(&app, &eve, join, json!({ "c": channel })).await);
        ok(&act(
            &app,
            &alice,
            "banMember",
            &channel,
            &eve,
            json!({ "reason": "trolling" }),
        )
        .await);
        assert_eq!(
            error_code(&gql(&app, &eve, join, json!({ "c": channel })).await),
            Some("FORBIDDEN")
        );
        assert_eq!(
            error_code(&send(&app, &eve, &channel, "hi").await),
            Some("FORBIDDEN")
        );
        let invite = gql(
            &app,
            &alice,
            "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }",
            json!({ "c": channel, "u": eve.id }),
        )
        .await;
        assert_eq!(error_code(&invite), Some("FORBIDDEN"));
        assert_eq!(
            error_code(
                &act(
                    &app,
                    &alice,
                    "unbanMember",
                    "01900000-0000-7000-8000-000000000000",
                    &eve,
                    json!({})
                )
                .await
            ),
            Some("NOT_FOUND")
        );
        ok(&act(
            &app,
            &alice,
            "unbanMember",
            &channel,
            &eve,
            json!({ "reason": "second chance" }),
        )
        .await);
        assert_eq!(
            error_code(&act(&app, &alice, "unbanMember", &channel, &eve, json!({})).await),
            Some("CONFLICT")
        );
        ok(&gql(&app, &eve, join, json!({ "c": channel })).await);
        app.stop().await;
    }
}

#[tokio::test]
async fn bans_and_mutes_are_over_once_their_time_has_passed() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let clock = TestClock::new();
        let app = spawn_app_with(TestDatabase::new(backend).await, |_| {}, clock.clone()).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let conv = group(&app, &alice, &[&bob]).await;
        let until = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let muted = act(
            &app,
            &alice,
            "muteMember",
            &conv,
            &bob,
            json!({ "reason": "cool off", "until": until }),
        )
        .await;
        assert!(ok(&muted)["muteMember"]["expiresAt"].is_string());
        assert_eq!(
            error_code(&send(&app, &bob, &conv, "hi").await),
            Some("FORBIDDEN")
        );
        clock.advance(time::Duration::hours(2));
        ok(&send(&app, &bob, &conv, "back again").await);
        let members = gql(&app, &alice, "query($c: ID!) { conversation(id: $c) { members { nodes { user { username } muted mutedUntil } } } }", json!({ "c": conv })).await;
        for member in ok(&members)["conversation"]["members"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(member["muted"], false, "{member}");
            assert_eq!(member["mutedUntil"], Value::Null, "{member}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn no_post_sent_after_a_ban_returns_is_accepted() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = Arc::new(spawn_app(backend).await);
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let conv = group(&app, &alice, &[&bob]).await;
        let banned = Arc::new(AtomicBool::new(false));
        let poster = {
            let (app, banned, conv, bob) =
                (app.clone(), banned.clone(), conv.clone(), bob.token.clone());
            tokio::spawn(async move {
                let mut after_ban = 0;
                let mut accepted_before = 0;
                let mut n = 0;
                while after_ban < 20 {
                    n += 1;
                    let sent_after_ban = banned.load(Ordering::SeqCst);
                    let response = app
                        .graphql(
                            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
                            json!({ "i": { "conversationId": conv, "body": format!("post {n}") } }),
                            Some(&bob),
                        )
                        .await;
                    if sent_after_ban {
                        after_ban += 1;
                        assert_eq!(
                            error_code(&response),
                            Some("FORBIDDEN"),
                            "a post sent after the ban returned was accepted: {response}"
                        );
                    } else if response["errors"].is_null() {
                        accepted_before += 1;
                    }
                }
                accepted_before
            })
        };
        // Let some posts land first, then ban while bob keeps posting.
        while ok(&gql(
            &app,
            &alice,
            "query($c: ID!) { messages(conversationId: $c) { nodes { id } } }",
            json!({ "c": conv }),
        )
        .await)["messages"]["nodes"]
            .as_array()
            .map_or(0, Vec::len)
            < 3
        {
            tokio::task::yield_now().await;
        }
        ok(&act(
            &app,
            &alice,
            "banMember",
            &conv,
            &bob,
            json!({ "reason": "enough" }),
        )
        .await);
        banned.store(true, Ordering::SeqCst);
        let accepted_before = poster.await.expect("poster");
        assert!(accepted_before >= 3);
        if let Ok(app) = Arc::try_unwrap(app) {
            app.stop().await;
        }
    }
}

fn audit_replay(app: &TestApp, conversation: &str, until: Option<&str>) -> Value {
    let mut command = parley_command(&app.database);
    command.args([
        "audit",
        "replay",
        "--conversation",
        conversation,
        "--format",
        "json",
    ]);
    if let Some(until) = until {
        command.args(["--until", until]);
    }
    let output = command.output().expect("parley runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json report")
}

#[tokio::test]
async fn audit_replay_rebuilds_moderation_state_from_the_log_and_agrees_with_the_api() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol, dave) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
            user(&app, "dave").await,
        );
        let conv = group(&app, &alice, &[&bob, &carol, &dave]).await;
        ok(&act(
            &app,
            &alice,
            "setMemberRole",
            &conv,
            &bob,
            json!({ "role": "ADMIN" }),
        )
        .await);
        let kicked = act(
            &app,
            &bob,
            "kickMember",
            &conv,
            &carol,
            json!({ "reason": "rude" }),
        )
        .await;
        let kicked_id = text(&kicked, "/data/kickMember/id").to_owned();
        ok(&act(
            &app,
            &bob,
            "muteMember",
            &conv,
            &dave,
            json!({ "reason": "flooding" }),
        )
        .await);
        let message = send(&app, &alice, &conv, "fine").await;
        let spam = send(&app, &bob, &conv, "spam").await;
        ok(&gql(
            &app,
            &alice,
            "mutation($m: ID!) { deleteMessage(messageId: $m, reason: \"spam\") { id } }",
            json!({ "m": text(&spam, "/data/sendMessage/id") }),
        )
        .await);
        ok(&act(
            &app,
            &alice,
            "banMember",
            &conv,
            &carol,
            json!({ "reason": "came back rude" }),
        )
        .await);
        assert!(message["errors"].is_null());

        // The present agrees with the API.
        let report = audit_replay(&app, &conv, None);
        let log = log_actions(&app, &alice, &conv).await;
        let mut from_api: Vec<String> = ok(&log)["moderationLog"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["action"].as_str().map(str::to_owned))
            .collect();
        from_api.reverse();
        let from_log: Vec<String> = report["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["action"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(from_log, from_api);
        assert_eq!(
            from_log,
            vec!["ROLE_CHANGE", "KICK", "MUTE", "DELETE_MESSAGE", "BAN"]
        );
        let members: Vec<(String, String)> = report["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["username"].as_str().unwrap_or("").to_owned(),
                    m["role"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(members, roles(&app, &alice, &conv).await);
        assert_eq!(report["bans"].as_array().map(Vec::len), Some(1));
        let dave_row = report["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["username"] == "dave")
            .cloned()
            .unwrap_or_default();
        assert_eq!(dave_row["muted_until"], "indefinite");
        assert!(report["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|a| a["correlation_id"].is_string()));

        // As of the kick: carol gone, dave not yet muted, nobody banned.
        let kick_time = ok(&gql(
            &app,
            &alice,
            "query($c: ID!) { moderationLog(conversationId: $c) { nodes { id occurredAt } } }",
            json!({ "c": conv }),
        )
        .await)["moderationLog"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["id"] == kicked_id.as_str())
            .and_then(|n| n["occurredAt"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let then = audit_replay(&app, &conv, Some(&kick_time));
        let names: Vec<&str> = then["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["username"].as_str())
            .collect();
        assert!(
            !names.contains(&"carol") && names.contains(&"dave"),
            "{then}"
        );
        assert!(
            then["members"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|m| m.get("muted_until").is_none()),
            "{then}"
        );
        assert_eq!(then["bans"], json!([]));
        assert_eq!(then["actions"].as_array().map(Vec::len), Some(2));
        app.stop().await;
    }
}

#[tokio::test]
async fn a_mute_stops_edits_and_outlives_leaving_and_rejoining() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let channel = ok(&gql(
            &app,
            &alice,
            "mutation { createChannel(input: { name: \"Open\", visibility: PUBLIC }) { id } }",
            json!({}),
        )
        .await)["createChannel"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let join = "mutation($c: ID!) { joinChannel(conversationId: $c) { id } }";
        ok(&gql(&app, &bob, join, json!({ "c": channel })).await);
        let posted = send(&app, &bob, &channel, "before the mute").await;
        let message = ok(&posted)["sendMessage"]["id"].clone();
        ok(&act(
            &app,
            &alice,
            "muteMember",
            &channel,
            &bob,
            json!({ "reason": "flood" }),
        )
        .await);

        let edit =
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"now with @alice\") { body } }";
        let edited = gql(&app, &bob, edit, json!({ "m": message })).await;
        assert_eq!(error_code(&edited), Some("FORBIDDEN"), "{edited}");

        let leave = "mutation($c: ID!) { leaveConversation(conversationId: $c) }";
        ok(&gql(&app, &bob, leave, json!({ "c": channel })).await);
        ok(&gql(&app, &bob, join, json!({ "c": channel })).await);
        let members = gql(
            &app,
            &alice,
            "query($c: ID!) { conversation(id: $c) { members { nodes { user { username } muted mutedUntil } } } }",
            json!({ "c": channel }),
        )
        .await;
        let bob_row = ok(&members)["conversation"]["members"]["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["user"]["username"] == "bob"))
            .cloned()
            .expect("bob is a member again");
        assert_eq!(bob_row["muted"], true, "{members}");
        assert!(bob_row["mutedUntil"].is_string(), "{members}");
        assert_eq!(
            error_code(&send(&app, &bob, &channel, "still muted?").await),
            Some("FORBIDDEN")
        );
        assert_eq!(
            error_code(&gql(&app, &bob, edit, json!({ "m": message })).await),
            Some("FORBIDDEN")
        );
    }
}
