//! A finished session is finished everywhere: logout, a password change and refresh
//! token reuse end access tokens at once, on every node, and close open sockets.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::*;

const ME: &str = "{ me { id } }";

fn signed_in(response: &Value) -> bool {
    response["data"]["me"]["id"].is_string()
}

async fn tokens(app: &TestApp, name: &str) -> (String, String) {
    let login = app.login(name, "correct horse battery").await;
    (
        text(&login, "/data/login/accessToken").to_owned(),
        text(&login, "/data/login/refreshToken").to_owned(),
    )
}

#[tokio::test]
async fn logout_password_change_and_token_reuse_end_access_at_once() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        app.register("alice", "correct horse battery").await;
        let (phone, phone_refresh) = tokens(&app, "alice").await;
        let (laptop, _) = tokens(&app, "alice").await;

        // Logout ends that session's access token, not the others.
        let mut socket = connect(&app, &phone).await;
        let out = app
            .graphql(
                "mutation($t: String!) { logout(refreshToken: $t) }",
                json!({ "t": phone_refresh }),
                None,
            )
            .await;
        assert_eq!(out["data"]["logout"], true, "{out}");
        let after = app.graphql(ME, json!({}), Some(&phone)).await;
        assert_eq!(error_code(&after), Some("UNAUTHENTICATED"), "{after}");
        assert!(signed_in(&app.graphql(ME, json!({}), Some(&laptop)).await));
        assert_eq!(
            close_code(&mut socket).await,
            4403,
            "the ended session's socket"
        );

        // Reusing a rotated refresh token ends its whole session.
        let (tablet, tablet_refresh) = tokens(&app, "alice").await;
        let rotated = app.refresh(&tablet_refresh).await;
        let fresh = text(&rotated, "/data/refreshToken/accessToken").to_owned();
        assert!(signed_in(&app.graphql(ME, json!({}), Some(&fresh)).await));
        let reused = app.refresh(&tablet_refresh).await;
        assert_eq!(error_code(&reused), Some("UNAUTHENTICATED"));
        for token in [&tablet, &fresh] {
            let response = app.graphql(ME, json!({}), Some(token)).await;
            assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
        }

        // A password change ends every session, the caller's own included.
        let mut laptop_socket = connect(&app, &laptop).await;
        let changed = app
            .graphql(
                "mutation { changePassword(currentPassword: \"correct horse battery\", newPassword: \"a new horse battery\") }",
                json!({}),
                Some(&laptop),
            )
            .await;
        assert_eq!(changed["data"]["changePassword"], true, "{changed}");
        let response = app.graphql(ME, json!({}), Some(&laptop)).await;
        assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
        assert_eq!(close_code(&mut laptop_socket).await, 4403);
        let again = app.login("alice", "a new horse battery").await;
        let token = text(&again, "/data/login/accessToken");
        assert!(signed_in(&app.graphql(ME, json!({}), Some(token)).await));

        // Ends survive a restart: the server reloads them.
        let database = app.stop().await;
        let app = spawn_app_on(database, |_| {}).await;
        let response = app.graphql(ME, json!({}), Some(&phone)).await;
        assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
        assert!(signed_in(&app.graphql(ME, json!({}), Some(token)).await));
    }
}

#[tokio::test]
async fn a_socket_is_closed_when_its_access_token_expires() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let registered = app.register("bob", "correct horse battery").await;
        let user: uuid::Uuid = text(&registered, "/data/register/user/id")
            .parse()
            .expect("id");
        let refresh = text(&registered, "/data/register/refreshToken");
        let session = parley::auth::RefreshToken::parse(refresh)
            .expect("parses")
            .family_id;
        // A token that expires two seconds from now.
        let keys = app.state.accounts.keys();
        let issued = time::OffsetDateTime::now_utc() - keys.access_ttl + time::Duration::seconds(2);
        let token = keys.issue_access(user, session, issued).expect("signs");
        for protocol in ["graphql-transport-ws", "graphql-ws"] {
            let mut socket = open(&app, protocol).await;
            init(&mut socket, &token).await;
            assert_eq!(close_code(&mut socket).await, 4403, "{protocol}");
        }
    }
}

#[tokio::test]
async fn a_session_ended_on_one_node_ends_on_the_others() {
    if !several_nodes() {
        return;
    }
    let first = spawn_app(Backend::Postgres).await;
    let second = spawn_app_on(first.database.shared(), |_| {}).await;
    first.register("carol", "correct horse battery").await;
    let (token, refresh) = tokens(&first, "carol").await;
    assert!(signed_in(
        &second.graphql(ME, json!({}), Some(&token)).await
    ));
    let mut socket = connect(&second, &token).await;
    first
        .graphql(
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({ "t": refresh }),
            None,
        )
        .await;
    // The other node learns it from the log, within moments.
    let mut tries = 0;
    while signed_in(&second.graphql(ME, json!({}), Some(&token)).await) {
        tries += 1;
        assert!(
            tries < 200,
            "the second node never learned that the session ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(close_code(&mut socket).await, 4403);
}
