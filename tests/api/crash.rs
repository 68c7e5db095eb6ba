//! Crash safety: a server killed with SIGKILL under load loses nothing it acknowledged,
//! duplicates nothing retried, leaves no gap in `seq`, and its read models equal a fresh
//! replay; a name claimed by a process that died before using it is not lost; a
//! projector stuck on one event is marked failed and stops holding mutations up.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A `parley serve` process of its own, so that it can be killed.
struct Process {
    child: Child,
    address: String,
}

impl Process {
    async fn start(database: &TestDatabase, data_dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("PARLEY_")) {
            command.env_remove(key);
        }
        let mut child = command
            .arg("serve")
            .env("PARLEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("PARLEY_DATABASE_URL", &database.url)
            .env("PARLEY_DATA_DIR", data_dir)
            .env("PARLEY_JWT_SECRET", JWT_SECRET)
            .env("PARLEY_MASTER_KEY", MASTER_KEY)
            .env("PARLEY_RATE_LIMITS", "off")
            .env("PARLEY_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("parley starts");
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if client
                .get(format!("{address}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Self { child, address };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server never became healthy");
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("stopped");
    }
}

async fn call(
    client: &reqwest::Client,
    address: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, reqwest::Error> {
    let mut request = client
        .post(format!("{address}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await?.json().await
}

const SEND: &str = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id seq body } }";

fn send_input(group: &str, who: &str, n: usize) -> Value {
    json!({ "i": { "conversationId": group, "body": format!("{who} {n}"), "clientMessageId": format!("{who}-{n}") } })
}

/// Every row of `table`, as sorted text, read the same way on both backends.
async fn dump(db: &parley_store::Db, table: &str) -> Vec<String> {
    let sql = match db.backend {
        parley_store::Backend::Postgres => {
            format!("SELECT CAST(row_to_json(t) AS TEXT) FROM {table} t")
        }
        parley_store::Backend::Sqlite => {
            let columns: Vec<String> =
                sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .fetch_all(&db.read)
                    .await
                    .expect("columns");
            format!("SELECT json_array({}) FROM {table}", columns.join(", "))
        }
    };
    let mut rows: Vec<String> = sqlx::query_scalar(&sql)
        .fetch_all(&db.read)
        .await
        .expect("rows");
    rows.sort();
    rows
}

#[tokio::test]
async fn a_server_killed_under_load_loses_and_duplicates_nothing() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let data_dir = tempfile::tempdir().expect("dir");
        let server = Process::start(&database, data_dir.path()).await;
        let client = reqwest::Client::new();
        let mut tokens = Vec::new();
        let mut ids = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let registered = call(&client, &server.address, None,
                "mutation($u: String!) { register(input: { username: $u, password: \"correct horse battery\", displayName: $u }) { accessToken user { id } } }",
                json!({ "u": name })).await.expect("register");
            tokens.push(text(&registered, "/data/register/accessToken").to_owned());
            ids.push(text(&registered, "/data/register/user/id").to_owned());
        }
        let group = call(&client, &server.address, Some(&tokens[0]),
            "mutation($m: [ID!]!) { createGroup(input: { title: \"Load\", memberIds: $m }) { id } }",
            json!({ "m": [ids[1], ids[2]] })).await.expect("group");
        let group = text(&group, "/data/createGroup/id").to_owned();

        // Three clients post as fast as they can; each stops at its first failure.
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for (who, token) in ["alice", "bob", "carol"].into_iter().zip(tokens.clone()) {
            let (client, address, group, acknowledged) = (
                client.clone(),
                server.address.clone(),
                group.clone(),
                acknowledged.clone(),
            );
            senders.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0.. {
                    match call(
                        &client,
                        &address,
                        Some(&token),
                        SEND,
                        send_input(&group, who, n),
                    )
                    .await
                    {
                        Ok(response) if response["errors"].is_null() => {
                            acked.push(n);
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        // Killed mid-request: this one may or may not have committed.
                        _ => return (who, token, acked, n),
                    }
                }
                unreachable!()
            }));
        }
        while acknowledged.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
        let mut outcomes = Vec::new();
        for sender in senders {
            outcomes.push(sender.await.expect("sender"));
        }

        // Restart on the same data and retry every send not acknowledged.
        let server = Process::start(&database, data_dir.path()).await;
        let mut expected = BTreeSet::new();
        for (who, token, acked, unacknowledged) in &outcomes {
            for n in acked {
                expected.insert(format!("{who} {n}"));
            }
            let retried = call(
                &client,
                &server.address,
                Some(token),
                SEND,
                send_input(&group, who, *unacknowledged),
            )
            .await
            .expect("retry");
            assert_eq!(
                retried["data"]["sendMessage"]["body"],
                format!("{who} {unacknowledged}"),
                "{retried}"
            );
            expected.insert(format!("{who} {unacknowledged}"));
        }
        let history = call(
            &client,
            &server.address,
            Some(&tokens[0]),
            "query($c: ID!) { messages(conversationId: $c, first: 200) { nodes { seq body } } }",
            json!({ "c": group }),
        )
        .await
        .expect("history");
        let nodes = history["data"]["messages"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let seqs: Vec<u64> = nodes.iter().filter_map(|n| n["seq"].as_u64()).collect();
        assert_eq!(
            seqs,
            (1..=nodes.len() as u64).collect::<Vec<_>>(),
            "seq has a gap: {history}"
        );
        let mut bodies = BTreeMap::new();
        for node in &nodes {
            *bodies
                .entry(node["body"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        assert!(
            bodies.values().all(|count| *count == 1),
            "a message was duplicated: {bodies:?}"
        );
        assert_eq!(
            bodies.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "acknowledged and stored differ"
        );
        server.stop();

        // Every read model equals a fresh replay of the log.
        let db = database.connect().await;
        for projector in parley::startup::projectors() {
            let tables = parley_projections::runner::all_tables(projector.as_ref(), db.backend);
            let mut before = Vec::new();
            for table in &tables {
                before.push(dump(&db, table).await);
            }
            parley_projections::runner::reset(&db, projector.as_ref())
                .await
                .expect("reset");
            parley_projections::runner::catch_up(&db, projector.as_ref())
                .await
                .expect("replay");
            for (table, rows) in tables.iter().zip(before) {
                assert_eq!(
                    dump(&db, table).await,
                    rows,
                    "{} differs from a replay",
                    table
                );
            }
        }
        db.close().await;
    }
}

#[tokio::test]
async fn a_name_claimed_by_a_process_that_died_is_not_lost() {
    use parley_aggregates::claim::{slug_claim, NameClaim, NameCommand, UsernameClaims};
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let clock = TestClock::new();
        let app = spawn_app_with(TestDatabase::new(backend).await, |_| {}, clock.clone()).await;
        // What a process leaves behind when it dies right after claiming.
        let names = parley_store::CommandBus::<NameClaim>::new(&app.state.db, ());
        let ghost = UsernameClaims::new("ghost", app.state.db.keys.name_digest("ghost"));
        for (claim, name) in [
            (ghost.current, ghost.key),
            (slug_claim("ghost-town"), "ghost-town".to_owned()),
        ] {
            names
                .execute(
                    &claim,
                    NameCommand::Claim {
                        name,
                        owner_id: uuid::Uuid::now_v7(),
                        abandoned_by: None,
                        at: app.state.clock.now(),
                    },
                    &app.state.meta(None),
                )
                .await
                .expect("claimed");
        }
        let alice = user(&app, "alice").await;
        let channel = "mutation { createChannel(input: { name: \"Ghost Town\", visibility: PUBLIC }) { slug } }";
        assert_eq!(
            error_code(&app.register("ghost", "correct horse battery").await),
            Some("CONFLICT")
        );
        assert_eq!(
            error_code(&gql(&app, &alice, channel, json!({})).await),
            Some("CONFLICT")
        );

        clock.advance(time::Duration::minutes(2));
        ok(&app.register("ghost", "correct horse battery").await);
        let created = gql(&app, &alice, channel, json!({})).await;
        assert_eq!(ok(&created)["createChannel"]["slug"], "ghost-town");
        // A name in use stays taken, however old.
        assert_eq!(
            error_code(&app.register("ghost", "correct horse battery").await),
            Some("CONFLICT")
        );
    }
}

/// Appends an event no projector of conversations can decode.
async fn poison(db: &parley_store::Db) {
    let payload = r#"{"MessagePosted": {"not": "a message"}}"#;
    poison_with(db, "Conversation", "MessagePosted", payload).await;
}

#[tokio::test]
async fn a_projector_stuck_on_one_event_is_marked_failed_and_holds_nothing_up() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            // Without the failure mark, the mutation below would wait ten minutes.
            c.consistency_wait_ms = 600_000;
        })
        .await;
        user(&app, "alice").await;
        poison(&app.state.db).await;
        let report = marked_failed(&app, "conversations").await;
        let users = report["projectors"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "users").cloned());
        assert_eq!(
            users.map(|p| p["state"].clone()),
            Some(json!("live")),
            "{report}"
        );

        let registered = tokio::time::timeout(
            Duration::from_secs(60),
            app.register("bob", "correct horse battery"),
        )
        .await
        .expect("a mutation does not wait for a failed projector");
        ok(&registered);

        let output = parley_cli(&app.database, &["projections", "status"]);
        let status = String::from_utf8_lossy(&output.stdout);
        assert!(status.contains("FAILED"), "{status}");

        let output = parley_cli(
            &app.database,
            &["projections", "status", "--format", "json"],
        );
        let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
        let entry = |name: &str| {
            report
                .as_array()
                .and_then(|all| all.iter().find(|p| p["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {report}"))
        };
        let conversations = entry("conversations");
        assert_eq!(conversations["state"], "failed", "{report}");
        assert!(
            conversations["lag"].as_u64().is_some_and(|lag| lag >= 1),
            "{report}"
        );
        assert!(conversations["error"].is_string(), "{report}");
        let users = entry("users");
        assert_eq!(users["state"], "live", "{report}");
        assert_eq!(users["lag"], 0, "{report}");
        assert_eq!(users["head"], conversations["head"]);
        for key in ["version", "position", "head", "lag"] {
            assert!(!users[key].is_null(), "{key} in {report}");
        }
    }
}

/// Past the consistency wait, or behind a failed projector, a mutation still succeeds
/// (the lag is logged and counted): what it created is answered from its own events,
/// not with `INTERNAL_SERVER_ERROR` or `NOT_FOUND`, so no client retries a write that
/// stands and makes it twice.
#[tokio::test]
async fn a_mutation_behind_failed_read_models_answers_with_what_it_wrote() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            // A failed projector ends the wait at once; a lagging one would take this.
            c.consistency_wait_ms = 600_000;
        })
        .await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let earlier = gql_ok(
            &app,
            &alice,
            "mutation { createChannel(input: { name: \"Earlier\", visibility: PRIVATE }) { id } }",
            json!({}),
        )
        .await;
        let earlier = text(&earlier, "/data/createChannel/id").to_owned();
        let mut pending = Vec::new();
        for invitee in [&carol, &bob] {
            let invited = gql_ok(
                &app,
                &alice,
                "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }",
                json!({ "c": earlier, "u": invitee.id }),
            )
            .await;
            pending.push(text(&invited, "/data/inviteMember/id").to_owned());
        }
        let timeouts = || app.state.consistency_timeouts.load(Ordering::Relaxed);
        let before = timeouts();
        poison(&app.state.db).await;
        marked_failed(&app, "conversations").await;
        marked_failed(&app, "moderation").await;

        let group = gql_ok(
            &app,
            &alice,
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id kind title createdAt \
             myRole notificationLevel unreadCount mentionCount lastActivityAt lastMessage { id } \
             members { nodes { role user { id } } } } }",
            json!({ "i": { "title": "Behind", "memberIds": [bob.id] } }),
        )
        .await;
        let group = &group["data"]["createGroup"];
        assert_eq!(
            (&group["kind"], &group["title"]),
            (&json!("GROUP"), &json!("Behind"))
        );
        assert_eq!(group["myRole"], "OWNER");
        assert_eq!(group["notificationLevel"], "ALL");
        assert_eq!(
            (&group["unreadCount"], &group["mentionCount"]),
            (&json!(0), &json!(0))
        );
        assert_eq!(group["lastMessage"], json!(null));
        let mut members: Vec<(String, String)> = group["members"]["nodes"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["user"]["id"].as_str().unwrap_or_default().to_owned(),
                    m["role"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        members.sort();
        let mut expected = vec![
            (alice.id.clone(), "OWNER".to_owned()),
            (bob.id.clone(), "MEMBER".to_owned()),
        ];
        expected.sort();
        assert_eq!(members, expected, "{group}");
        let group = group["id"].as_str().expect("an id").to_owned();

        let channel = gql_ok(
            &app,
            &alice,
            "mutation($i: CreateChannelInput!) { createChannel(input: $i) { id kind slug visibility myRole } }",
            json!({ "i": { "name": "Behind the scenes", "visibility": "PUBLIC" } }),
        )
        .await;
        let channel = &channel["data"]["createChannel"];
        assert_eq!(channel["slug"], "behind-the-scenes");
        assert_eq!(channel["visibility"], "PUBLIC");
        assert_eq!(channel["myRole"], "OWNER");
        let channel = channel["id"].as_str().expect("an id").to_owned();

        let direct = gql_ok(
            &app,
            &alice,
            "mutation($u: ID!) { createDirectConversation(userId: $u) { id kind } }",
            json!({ "u": carol.id }),
        )
        .await;
        assert_eq!(direct["data"]["createDirectConversation"]["kind"], "DIRECT");

        let invited = gql_ok(
            &app,
            &alice,
            "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id status invitee { id } inviter { id } } }",
            json!({ "c": channel, "u": carol.id }),
        )
        .await;
        let invited = &invited["data"]["inviteMember"];
        assert_eq!(invited["status"], "PENDING");
        assert_eq!(invited["invitee"]["id"], json!(carol.id));
        assert_eq!(invited["inviter"]["id"], json!(alice.id));

        // Answers to invitations the read model holds, but not their answers.
        let declined = gql_ok(
            &app,
            &carol,
            "mutation($i: ID!) { declineInvitation(invitationId: $i) { id status } }",
            json!({ "i": pending[0] }),
        )
        .await;
        assert_eq!(declined["data"]["declineInvitation"]["status"], "DECLINED");
        let revoked = gql_ok(
            &app,
            &alice,
            "mutation($i: ID!) { revokeInvitation(invitationId: $i) { id status } }",
            json!({ "i": pending[1] }),
        )
        .await;
        assert_eq!(revoked["data"]["revokeInvitation"]["status"], "REVOKED");

        // The group's events stand: bob is a member, so kicking him is accepted.
        let kicked = gql_ok(
            &app,
            &alice,
            "mutation($c: ID!, $u: ID!) { kickMember(conversationId: $c, userId: $u, reason: \"testing\") { conversationId action reason actor { id } target { id } } }",
            json!({ "c": group, "u": bob.id }),
        )
        .await;
        let kicked = &kicked["data"]["kickMember"];
        assert_eq!(kicked["conversationId"], json!(group));
        assert_eq!(kicked["action"], "KICK");
        assert_eq!(kicked["reason"], "testing");
        assert_eq!(kicked["target"]["id"], json!(bob.id));

        let sent = gql_ok(
            &app,
            &alice,
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { seq body } }",
            json!({ "i": { "conversationId": group, "body": "still here" } }),
        )
        .await;
        assert_eq!(sent["data"]["sendMessage"]["body"], "still here");
        assert!(timeouts() > before, "the lag is counted");

        // Registration, behind a failed users read model.
        let payload = r#"{"UserRegistered": {"not": "a user"}}"#;
        poison_with(&app.state.db, "User", "UserRegistered", payload).await;
        marked_failed(&app, "users").await;
        let registered = app.register("dora", "correct horse battery").await;
        let me = &ok(&registered)["register"]["user"];
        assert_eq!(me["username"], "dora");
        let dora = Client {
            id: text(&registered, "/data/register/user/id").to_owned(),
            token: text(&registered, "/data/register/accessToken").to_owned(),
        };
        // The account stands though the users read model does not show it: it may
        // start a group, and be named in one; an account that never was is still not.
        let create = "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id myRole } }";
        let started = gql_ok(
            &app,
            &dora,
            create,
            json!({ "i": { "title": "Dora's", "memberIds": [alice.id] } }),
        )
        .await;
        assert_eq!(started["data"]["createGroup"]["myRole"], "OWNER");
        let named = gql_ok(
            &app,
            &alice,
            create,
            json!({ "i": { "title": "With Dora", "memberIds": [dora.id] } }),
        )
        .await;
        assert_eq!(named["data"]["createGroup"]["myRole"], "OWNER");
        let unknown = uuid::Uuid::now_v7().to_string();
        let refused = gql(
            &app,
            &alice,
            create,
            json!({ "i": { "title": "Nobody", "memberIds": [unknown] } }),
        )
        .await;
        assert_eq!(error_code(&refused), Some("NOT_FOUND"), "{refused}");
        app.stop().await;
    }
}

/// A post retried with the same `clientMessageId` while the messages read model cannot
/// show it is answered with the message as it was posted, as the first attempt was:
/// before, the retry of a post that stood answered `INTERNAL_SERVER_ERROR`.
#[tokio::test]
async fn a_retried_post_behind_a_failed_read_model_answers_with_the_first_post() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app_on(TestDatabase::new(backend).await, |c| {
            c.consistency_wait_ms = 600_000;
        })
        .await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "retries", &[&bob]).await;
        poison(&app.state.db).await;
        marked_failed(&app, "messages").await;

        const POST: &str = "mutation($i: SendMessageInput!) { \
            sendMessage(input: $i) { id seq body conversationId author { id } } }";
        let input = |body: &str| json!({ "i": { "conversationId": group, "body": body, "clientMessageId": "once" } });
        let first = gql_ok(&app, &alice, POST, input("once only")).await;
        let first = &first["data"]["sendMessage"];
        assert_eq!(first["body"], "once only");
        assert_eq!(first["author"]["id"], json!(alice.id));
        let retried = gql_ok(&app, &alice, POST, input("once only")).await;
        assert_eq!(&retried["data"]["sendMessage"], first);
        // The key is the author's own: bob's post under it is a post of his.
        let his = gql_ok(&app, &bob, POST, input("his own")).await;
        let his = &his["data"]["sendMessage"];
        assert_ne!(his["id"], first["id"]);
        assert_eq!(his["body"], "his own");
        app.stop().await;
    }
}
