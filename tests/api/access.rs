//! The read rule as a table: every operation and nested field that shows conversation
//! content, asked by every kind of relation a user can have to a private and a public
//! channel, on every backend.

use futures::SinkExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::ws::*;

/// How a user stands towards a conversation in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Outsider,
    PendingInvitee,
    RevokedInvitee,
    DeclinedInvitee,
    FormerMember,
    Kicked,
    Banned,
    Muted,
    Member,
    Admin,
    Owner,
}

use Relation::*;

const RELATIONS: [Relation; 11] = [
    Outsider,
    PendingInvitee,
    RevokedInvitee,
    DeclinedInvitee,
    FormerMember,
    Kicked,
    Banned,
    Muted,
    Member,
    Admin,
    Owner,
];

/// What each relation may see, written out rather than derived from the code under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Nothing,
    Preview,
    Everything,
}

fn expected(relation: Relation, public: bool) -> Expect {
    match (relation, public) {
        (Banned, _) => Expect::Nothing,
        (Muted | Member | Admin | Owner, _) | (_, true) => Expect::Everything,
        (PendingInvitee, false) => Expect::Preview,
        _ => Expect::Nothing,
    }
}

fn name(relation: Relation) -> &'static str {
    match relation {
        Outsider => "outsider",
        PendingInvitee => "pending",
        RevokedInvitee => "revoked",
        DeclinedInvitee => "declined",
        FormerMember => "former",
        Kicked => "kicked",
        Banned => "banned",
        Muted => "muted",
        Member => "member",
        Admin => "admin",
        Owner => "owner",
    }
}

/// Relations that were members when the first message mentioned them.
fn was_member(relation: Relation) -> bool {
    matches!(
        relation,
        FormerMember | Kicked | Banned | Muted | Member | Admin | Owner
    )
}

struct Setting {
    id: String,
    slug: &'static str,
    title: &'static str,
    /// The root message, posted after every relation was in place, and its reply.
    root: String,
    /// The log's end just before `root`.
    cursor: String,
}

async fn ok_call(app: &TestApp, who: &Client, query: &str, variables: Value) -> Value {
    let response = gql(app, who, query, variables).await;
    ok(&response).clone()
}

async fn invite(app: &TestApp, owner: &Client, conversation: &str, who: &Client) -> String {
    let data = ok_call(
        app,
        owner,
        "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }",
        json!({ "c": conversation, "u": who.id }),
    )
    .await;
    text(&data, "/inviteMember/id").to_owned()
}

async fn enter(app: &TestApp, owner: &Client, conversation: &str, public: bool, who: &Client) {
    if public {
        ok_call(
            app,
            who,
            "mutation($c: ID!) { joinChannel(conversationId: $c) { id } }",
            json!({ "c": conversation }),
        )
        .await;
    } else {
        let invitation = invite(app, owner, conversation, who).await;
        ok_call(
            app,
            who,
            "mutation($i: ID!) { acceptInvitation(invitationId: $i) { id } }",
            json!({ "i": invitation }),
        )
        .await;
    }
}

async fn moderate(app: &TestApp, owner: &Client, mutation: &str, conversation: &str, who: &Client) {
    let query = format!(
        "mutation($c: ID!, $u: ID!) {{ {mutation}(conversationId: $c, userId: $u, reason: \"table\") {{ id }} }}"
    );
    ok_call(
        app,
        owner,
        &query,
        json!({ "c": conversation, "u": who.id }),
    )
    .await;
}

async fn post(
    app: &TestApp,
    who: &Client,
    conversation: &str,
    body: &str,
    reply: Option<&str>,
) -> String {
    let data = ok_call(
        app,
        who,
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        json!({ "i": { "conversationId": conversation, "body": body, "replyToId": reply } }),
    )
    .await;
    text(&data, "/sendMessage/id").to_owned()
}

/// Creates the channel and puts each user in their relation to it.
async fn setting(app: &TestApp, users: &[(Relation, Client)], public: bool) -> Setting {
    let owner = &users.iter().find(|(r, _)| *r == Owner).expect("owner").1;
    let (title, slug) = if public {
        ("Town Square", "town-square")
    } else {
        ("Secret Room", "secret-room")
    };
    let data = ok_call(
        app,
        owner,
        "mutation($i: CreateChannelInput!) { createChannel(input: $i) { id } }",
        json!({ "i": { "name": title, "slug": slug, "visibility": if public { "PUBLIC" } else { "PRIVATE" } } }),
    )
    .await;
    let id = text(&data, "/createChannel/id").to_owned();
    for (relation, who) in users {
        if was_member(*relation) && *relation != Owner {
            enter(app, owner, &id, public, who).await;
        }
    }
    let mentions: Vec<String> = users
        .iter()
        .filter(|(r, _)| was_member(*r) && *r != Owner)
        .map(|(r, _)| format!("@{}", name(*r)))
        .collect();
    post(
        app,
        owner,
        &id,
        &format!("hello {}", mentions.join(" ")),
        None,
    )
    .await;
    for (relation, who) in users {
        match relation {
            PendingInvitee => {
                invite(app, owner, &id, who).await;
            }
            RevokedInvitee => {
                let invitation = invite(app, owner, &id, who).await;
                ok_call(
                    app,
                    owner,
                    "mutation($i: ID!) { revokeInvitation(invitationId: $i) { id } }",
                    json!({ "i": invitation }),
                )
                .await;
            }
            DeclinedInvitee => {
                let invitation = invite(app, owner, &id, who).await;
                ok_call(
                    app,
                    who,
                    "mutation($i: ID!) { declineInvitation(invitationId: $i) { id } }",
                    json!({ "i": invitation }),
                )
                .await;
            }
            FormerMember => {
                ok_call(
                    app,
                    who,
                    "mutation($c: ID!) { leaveConversation(conversationId: $c) }",
                    json!({ "c": id }),
                )
                .await;
            }
            Kicked => moderate(app, owner, "kickMember", &id, who).await,
            Banned => moderate(app, owner, "banMember", &id, who).await,
            Muted => moderate(app, owner, "muteMember", &id, who).await,
            Admin => {
                ok_call(
                    app,
                    owner,
                    "mutation($c: ID!, $u: ID!) { setMemberRole(conversationId: $c, userId: $u, role: ADMIN) { id } }",
                    json!({ "c": id, "u": who.id }),
                )
                .await;
            }
            Outsider | Member | Owner => {}
        }
    }
    let cursor = text(
        &ok_call(app, owner, "{ liveCursor }", json!({})).await,
        "/liveCursor",
    )
    .to_owned();
    let root = post(app, owner, &id, "secretword root", None).await;
    post(app, owner, &id, "secretword reply", Some(&root)).await;
    Setting {
        id,
        slug,
        title,
        root,
        cursor,
    }
}

/// A response may be refused by the read rule, and for nothing else: a probe that fails
/// for another reason (a malformed or too costly query) must not pass as "not seen".
fn only_forbidden(response: &Value) -> &Value {
    for error in response["errors"].as_array().into_iter().flatten() {
        assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{response}");
    }
    response
}

/// Whether `list` (a JSON array of nodes) holds a node whose `key` is `value`.
fn lists(list: &Value, key: &str, value: &str) -> bool {
    list.as_array()
        .is_some_and(|nodes| nodes.iter().any(|node| node[key] == value))
}

/// Runs every probe for one user and returns `(probe, seen)` pairs.
async fn probes(app: &TestApp, who: &Client, s: &Setting) -> Vec<(&'static str, bool)> {
    let c = json!({ "c": s.id });
    let mut seen = Vec::new();
    let r = gql(
        app,
        who,
        "query($c: ID!) { conversation(id: $c) { title } }",
        c.clone(),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "conversation.title",
        r["data"]["conversation"]["title"] == s.title,
    ));
    let r = gql(
        app,
        who,
        "query($s: String!) { conversationBySlug(slug: $s) { title } }",
        json!({ "s": s.slug }),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "conversationBySlug.title",
        r["data"]["conversationBySlug"]["title"] == s.title,
    ));
    let r = gql(
        app,
        who,
        "query($c: ID!) { conversation(id: $c) { lastMessage { body } } }",
        c.clone(),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "conversation.lastMessage",
        r["data"]["conversation"]["lastMessage"]["body"] == "secretword reply",
    ));
    let r = gql(
        app,
        who,
        "query($c: ID!) { conversation(id: $c) { members { nodes { user { id } } } } }",
        c.clone(),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "conversation.members",
        r["data"]["conversation"]["members"]["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty()),
    ));
    let r = gql(
        app,
        who,
        "query($c: ID!) { conversation(id: $c) { unreadCount mentionCount lastActivityAt } }",
        c.clone(),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "conversation.counts",
        r["data"]["conversation"]["lastActivityAt"].is_string(),
    ));
    let r = gql(
        app,
        who,
        "query($c: ID!) { messages(conversationId: $c, last: 5) { nodes { body readCount } } }",
        c.clone(),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "messages",
        lists(&r["data"]["messages"]["nodes"], "body", "secretword root"),
    ));
    let r = gql(
        app,
        who,
        "query($m: ID!) { message(id: $m) { body } }",
        json!({ "m": s.root }),
    )
    .await;
    only_forbidden(&r);
    seen.push(("message", r["data"]["message"]["body"] == "secretword root"));
    let r = gql(
        app,
        who,
        "query($m: ID!) { thread(messageId: $m) { nodes { body } } }",
        json!({ "m": s.root }),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "thread",
        lists(&r["data"]["thread"]["nodes"], "body", "secretword reply"),
    ));
    let r = gql(app, who, "query($c: ID!) { searchMessages(query: \"secretword\", conversationId: $c) { nodes { body } } }", c.clone()).await;
    only_forbidden(&r);
    seen.push((
        "searchMessages(conversationId)",
        lists(
            &r["data"]["searchMessages"]["nodes"],
            "body",
            "secretword root",
        ),
    ));
    let r = gql(
        app,
        who,
        "{ searchMessages(query: \"secretword\", first: 200) { nodes { conversationId } } }",
        json!({}),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "searchMessages",
        lists(
            &r["data"]["searchMessages"]["nodes"],
            "conversationId",
            &s.id,
        ),
    ));
    let word = s.title.split(' ').next().unwrap_or_default();
    let r = gql(
        app,
        who,
        "query($q: String!) { searchConversations(query: $q) { nodes { id } } }",
        json!({ "q": word }),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "searchConversations",
        lists(&r["data"]["searchConversations"]["nodes"], "id", &s.id),
    ));
    let r = gql(
        app,
        who,
        "{ publicChannels(first: 200) { nodes { id } } }",
        json!({}),
    )
    .await;
    only_forbidden(&r);
    seen.push((
        "publicChannels",
        lists(&r["data"]["publicChannels"]["nodes"], "id", &s.id),
    ));
    seen
}

/// `notifications { conversation { lastMessage } message }` for the mention in `s`.
async fn notification_probe(app: &TestApp, who: &Client, s: &Setting) -> bool {
    let r = gql(
        app,
        who,
        "{ notifications(first: 200) { nodes { kind conversation { id lastMessage { body } } message { body } } } }",
        json!({}),
    )
    .await;
    only_forbidden(&r);
    let nodes = r["data"]["notifications"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ours: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["kind"] == "MENTION" && n["conversation"]["id"] == s.id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "one mention notification expected: {r}");
    let content = ours[0]["conversation"]["lastMessage"]["body"] == "secretword reply";
    let message = ours[0]["message"]["body"].is_string();
    assert_eq!(content, message, "{r}");
    content
}

/// `invitations { conversation { lastMessage members } }` for the invitation to `s`.
async fn invitation_probe(app: &TestApp, who: &Client, s: &Setting) -> (bool, bool) {
    let r = gql(
        app,
        who,
        "{ invitations(first: 200) { nodes { conversation { id title } } } }",
        json!({}),
    )
    .await;
    only_forbidden(&r);
    let titled = lists(
        &r["data"]["invitations"]["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| n["conversation"].clone())
                    .collect::<Vec<_>>()
            })
            .map(Value::from)
            .unwrap_or_default(),
        "title",
        s.title,
    );
    let r = gql(
        app,
        who,
        "{ invitations(first: 20) { nodes { conversation { id lastMessage { body } members(first: 20) { nodes { user { id } } } } } } }",
        json!({}),
    )
    .await;
    only_forbidden(&r);
    let content = r["data"]["invitations"]["nodes"]
        .as_array()
        .is_some_and(|nodes| {
            nodes.iter().any(|n| {
                n["conversation"]["id"] == s.id.as_str()
                    && n["conversation"]["lastMessage"]["body"] == "secretword reply"
            })
        });
    (titled, content)
}

/// `conversationEvents` resumed from just before the root message: the root arrives,
/// or the subscription is refused.
async fn subscription_probe(app: &TestApp, who: &Client, s: &Setting) -> bool {
    let mut socket = connect(app, &who.token).await;
    start(
        &mut socket,
        "1",
        "subscription($c: ID!, $a: String) { conversationEvents(conversationId: $c, after: $a) { __typename ... on MessagePosted { message { body } } } }",
        json!({ "c": s.id, "a": s.cursor }),
    )
    .await;
    let first = next_json(&mut socket).await;
    let _ = socket.send(Message::Close(None)).await;
    match first["type"].as_str() {
        Some("next") if first["payload"]["errors"].is_null() => {
            assert_eq!(
                first["payload"]["data"]["conversationEvents"]["message"]["body"],
                "secretword root",
                "{first}"
            );
            true
        }
        Some("next") | Some("error") => {
            let errors = if first["type"] == "error" {
                first["payload"].clone()
            } else {
                first["payload"]["errors"].clone()
            };
            assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{first}");
            false
        }
        _ => panic!("unexpected {first}"),
    }
}

/// `myEvents` replayed from the start: the conversation the user was once added to,
/// with its last message only if readable now.
async fn my_events_probe(app: &TestApp, who: &Client, s: &Setting) -> bool {
    let mut socket = connect(app, &who.token).await;
    start(
        &mut socket,
        "1",
        "subscription { myEvents(after: \"0.0\") { __typename ... on ConversationAdded { conversation { id lastMessage { body } } } } }",
        json!({}),
    )
    .await;
    loop {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["myEvents"];
        if event["__typename"] == "ConversationAdded"
            && event["conversation"]["id"] == s.id.as_str()
        {
            let _ = socket.send(Message::Close(None)).await;
            let readable = event["conversation"]["lastMessage"]["body"] == "secretword reply";
            if !readable {
                let errors = &message["payload"]["errors"];
                assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{message}");
            }
            return readable;
        }
    }
}

#[tokio::test]
async fn every_path_to_conversation_content_follows_the_one_read_rule() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let mut users = Vec::new();
        for relation in RELATIONS {
            users.push((relation, user(&app, name(relation)).await));
        }
        for public in [false, true] {
            let s = setting(&app, &users, public).await;
            for (relation, who) in &users {
                let expect = expected(*relation, public);
                let everything = expect == Expect::Everything;
                let at = format!(
                    "{} in the {} channel",
                    name(*relation),
                    if public { "public" } else { "private" }
                );
                for (probe, seen) in probes(&app, who, &s).await {
                    let want = match probe {
                        "conversation.title" | "conversationBySlug.title" => {
                            expect != Expect::Nothing
                        }
                        "publicChannels" => everything && public,
                        _ => everything,
                    };
                    assert_eq!(seen, want, "{probe} for {at}");
                }
                if was_member(*relation) && *relation != Owner {
                    assert_eq!(
                        notification_probe(&app, who, &s).await,
                        everything,
                        "notifications for {at}"
                    );
                }
                if matches!(relation, PendingInvitee | RevokedInvitee | DeclinedInvitee) {
                    let (titled, content) = invitation_probe(&app, who, &s).await;
                    assert!(titled, "an invitee sees what they were invited to: {at}");
                    assert_eq!(content, everything, "invitations for {at}");
                }
                if was_member(*relation) {
                    assert_eq!(
                        my_events_probe(&app, who, &s).await,
                        everything,
                        "myEvents for {at}"
                    );
                }
                assert_eq!(
                    subscription_probe(&app, who, &s).await,
                    everything,
                    "conversationEvents for {at}"
                );
                let typing = gql(
                    &app,
                    who,
                    "mutation($c: ID!) { setTyping(conversationId: $c, typing: true) }",
                    json!({ "c": s.id }),
                )
                .await;
                let member = matches!(relation, Muted | Member | Admin | Owner);
                assert_eq!(
                    typing["data"]["setTyping"] == true,
                    member,
                    "setTyping for {at}: {typing}"
                );
                let log = gql(
                    &app,
                    who,
                    "query($c: ID!) { moderationLog(conversationId: $c) { nodes { action } } }",
                    json!({ "c": s.id }),
                )
                .await;
                let moderator = matches!(relation, Admin | Owner);
                assert_eq!(
                    log["errors"].is_null(),
                    moderator,
                    "moderationLog for {at}: {log}"
                );
            }
        }
    }
}

/// The SQL form of the read rule (used where lists are filtered in the database) and
/// the standing the API hands to the policy agree with the policy on every combination
/// of facts, expired bans included.
#[tokio::test]
async fn the_read_models_encode_the_read_rule_exactly_as_the_policy_judges() {
    use parley_aggregates::policy::{all_standings, read_access, ReadAccess};
    use parley_projections::access::{full_access_sql, standings};
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let now = 1_800_000_000_000_i64;
        let user = "00000000-0000-0000-0000-0000000000aa";
        for (n, standing) in all_standings().into_iter().enumerate() {
            let conv = format!("00000000-0000-0000-0000-{n:012}");
            let (kind, visibility) = if standing.public_channel {
                ("CHANNEL", "PUBLIC")
            } else {
                ("GROUP", "PRIVATE")
            };
            sqlx::query("INSERT INTO conversations (id, kind, visibility, creator_id, created_at) VALUES ($1, $2, $3, 'x', '2026-01-01T00:00:00Z')")
                .bind(&conv).bind(kind).bind(visibility).execute(&db.write).await.expect("conversation");
            if standing.member {
                sqlx::query("INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES ($1, $2, 'MEMBER', '2026-01-01T00:00:00Z')")
                    .bind(&conv).bind(user).execute(&db.write).await.expect("member");
            }
            // In force: indefinite or later than now; otherwise an expired ban, which
            // must not count.
            let until = match (standing.banned, n % 2) {
                (true, 0) => None,
                (true, _) => Some(now + 1),
                (false, _) => Some(now),
            };
            sqlx::query("INSERT INTO sanctions (conversation_id, user_id, kind, until_ms) VALUES ($1, $2, 'BAN', $3)")
                .bind(&conv).bind(user).bind(until).execute(&db.write).await.expect("ban");
            if standing.invited {
                sqlx::query("INSERT INTO invitations (id, conversation_id, inviter_id, invitee_id, status, created_at) VALUES ($1, $2, 'x', $3, 'PENDING', '2026-01-01T00:00:00Z')")
                    .bind(format!("inv-{n}")).bind(&conv).bind(user).execute(&db.write).await.expect("invitation");
            }
            // Another user's facts must not leak into this one's standing.
            sqlx::query("INSERT INTO invitations (id, conversation_id, inviter_id, invitee_id, status, created_at) VALUES ($1, $2, 'x', 'someone-else', 'PENDING', '2026-01-01T00:00:00Z')")
                .bind(format!("other-{n}")).bind(&conv).execute(&db.write).await.expect("invitation");

            let found = standings(&db, user, std::slice::from_ref(&conv), now)
                .await
                .expect("standings");
            assert_eq!(found.get(&conv), Some(&standing), "standing {n}");
            let sql = format!(
                "SELECT c.id FROM conversations c WHERE c.id = $3 AND {}",
                full_access_sql("c.id", "$1", "$2")
            );
            let readable: Option<String> = sqlx::query_scalar(&sql)
                .bind(user)
                .bind(now)
                .bind(&conv)
                .fetch_optional(&db.read)
                .await
                .expect("filter");
            assert_eq!(
                readable.is_some(),
                read_access(standing) == ReadAccess::Full,
                "{standing:?}"
            );
        }
    }
}
