//! Accounts over GraphQL: register, login, refresh, logout, changePassword, me.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_client_registers_logs_in_refreshes_and_reads_me() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;

        let registered = app.register("  Alice ", "correct horse battery").await;
        assert_eq!(
            registered["errors"],
            serde_json::Value::Null,
            "{registered}"
        );
        assert_eq!(text(&registered, "/data/register/user/username"), "alice");
        let user_id = text(&registered, "/data/register/user/id").to_owned();

        let me = app
            .graphql(
                "{ me { id username displayName } }",
                json!({}),
                Some(text(&registered, "/data/register/accessToken")),
            )
            .await;
        assert_eq!(text(&me, "/data/me/id"), user_id);
        assert_eq!(text(&me, "/data/me/displayName"), "Alice");

        let login = app.login("ALICE", "correct horse battery").await;
        assert_eq!(text(&login, "/data/login/user/id"), user_id);

        let refreshed = app.refresh(text(&login, "/data/login/refreshToken")).await;
        assert_eq!(
            text(&refreshed, "/data/refreshToken/user/username"),
            "alice"
        );
        let me = app
            .graphql(
                "{ me { username } }",
                json!({}),
                Some(text(&refreshed, "/data/refreshToken/accessToken")),
            )
            .await;
        assert_eq!(text(&me, "/data/me/username"), "alice");
        app.stop().await;
    }
}

#[tokio::test]
async fn usernames_are_unique_case_insensitively_even_under_concurrent_registration() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let spellings = ["bob", "Bob", " BOB ", "bOb", "bob ", "BOB", "Bob", "bob"];
        let results = futures::future::join_all(
            spellings
                .iter()
                .map(|name| app.register(name, "correct horse battery")),
        )
        .await;
        let winners = results.iter().filter(|r| r["errors"].is_null()).count();
        assert_eq!(winners, 1, "{results:?}");
        for result in results.iter().filter(|r| !r["errors"].is_null()) {
            assert_eq!(error_code(result), Some("CONFLICT"), "{result}");
        }
        let again = app.register("BoB", "another password").await;
        assert_eq!(error_code(&again), Some("CONFLICT"));
        app.stop().await;
    }
}

#[tokio::test]
async fn invalid_registration_input_names_the_field_and_claims_nothing() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let register = |username: &str, password: &str, display_name: &str| {
            app.graphql(
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                json!({ "input": { "username": username, "password": password, "displayName": display_name } }),
                None,
            )
        };
        let cases = [
            (register("al", "correct horse", "Al").await, "username"),
            (register("carol-x", "correct horse", "Al").await, "username"),
            (
                register(&"c".repeat(33), "correct horse", "Al").await,
                "username",
            ),
            (register("carol", "too short", "Carol").await, "password"),
            (
                register("carol", &"p".repeat(1025), "Carol").await,
                "password",
            ),
            (
                register("carol", "correct horse", "   ").await,
                "displayName",
            ),
            (
                register("carol", "correct horse", &"é".repeat(65)).await,
                "displayName",
            ),
        ];
        for (response, field) in cases {
            assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
            assert_eq!(error_field(&response), Some(field), "{response}");
        }
        // None of the rejected attempts claimed the name.
        let ok = register("carol", "correct horse", &"é".repeat(64)).await;
        assert!(ok["errors"].is_null(), "{ok}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_fail_alike() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        app.register("dave", "correct horse battery").await;
        let wrong = app.login("dave", "wrong horse battery").await;
        let unknown = app.login("nobody", "correct horse battery").await;
        let malformed = app.login("x!", "correct horse battery").await;
        for response in [&wrong, &unknown, &malformed] {
            assert_eq!(error_code(response), Some("UNAUTHENTICATED"), "{response}");
        }
        assert_eq!(
            wrong["errors"][0]["message"],
            unknown["errors"][0]["message"]
        );
        assert_eq!(
            wrong["errors"][0]["message"],
            malformed["errors"][0]["message"]
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_reused_refresh_token_is_refused_and_revokes_its_family() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        app.register("erin", "correct horse battery").await;
        let other_session = app.login("erin", "correct horse battery").await;
        let login = app.login("erin", "correct horse battery").await;
        let first = text(&login, "/data/login/refreshToken").to_owned();
        let rotated = app.refresh(&first).await;
        let second = text(&rotated, "/data/refreshToken/refreshToken").to_owned();
        assert_ne!(first, second);

        let replay = app.refresh(&first).await;
        assert_eq!(error_code(&replay), Some("UNAUTHENTICATED"), "{replay}");
        // The thief's replay revoked the family, so the latest token is dead too.
        let latest = app.refresh(&second).await;
        assert_eq!(error_code(&latest), Some("UNAUTHENTICATED"), "{latest}");
        // Other sessions of the same user are untouched.
        let other = app
            .refresh(text(&other_session, "/data/login/refreshToken"))
            .await;
        assert!(other["errors"].is_null(), "{other}");

        for garbage in ["", "prt_", "not-a-token", "prt_AAAA"] {
            let response = app.refresh(garbage).await;
            assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn logout_ends_only_that_session() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        app.register("frank", "correct horse battery").await;
        let session = app.login("frank", "correct horse battery").await;
        let token = text(&session, "/data/login/refreshToken").to_owned();
        let logout = |token: String| {
            app.graphql(
                "mutation($t: String!) { logout(refreshToken: $t) }",
                json!({ "t": token }),
                None,
            )
        };
        assert_eq!(logout(token.clone()).await["data"]["logout"], true);
        assert_eq!(logout(token.clone()).await["data"]["logout"], false);
        assert_eq!(logout("garbage".to_owned()).await["data"]["logout"], false);
        let refresh = app.refresh(&token).await;
        assert_eq!(error_code(&refresh), Some("UNAUTHENTICATED"));
        app.stop().await;
    }
}

#[tokio::test]
async fn changing_the_password_revokes_every_refresh_token() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let registered = app.register("grace", "correct horse battery").await;
        let access = text(&registered, "/data/register/accessToken").to_owned();
        let phone = app.login("grace", "correct horse battery").await;
        let change = |current: &str, new: &str, signed_in: bool| {
            app.graphql(
                "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
                json!({ "c": current, "n": new }),
                signed_in.then_some(access.as_str()),
            )
        };

        let wrong = change("wrong horse battery", "new password 1", true).await;
        assert_eq!(error_code(&wrong), Some("BAD_USER_INPUT"), "{wrong}");
        assert_eq!(error_field(&wrong), Some("currentPassword"));
        let short = change("correct horse battery", "short", true).await;
        assert_eq!(error_field(&short), Some("newPassword"), "{short}");
        let anonymous = change("correct horse battery", "new password 1", false).await;
        assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));

        let changed = change("correct horse battery", "new password 1", true).await;
        assert_eq!(changed["data"]["changePassword"], true, "{changed}");
        for token in [
            text(&registered, "/data/register/refreshToken"),
            text(&phone, "/data/login/refreshToken"),
        ] {
            assert_eq!(
                error_code(&app.refresh(token).await),
                Some("UNAUTHENTICATED")
            );
        }
        assert_eq!(
            error_code(&app.login("grace", "correct horse battery").await),
            Some("UNAUTHENTICATED")
        );
        assert!(app.login("grace", "new password 1").await["errors"].is_null());
        app.stop().await;
    }
}

#[tokio::test]
async fn missing_expired_and_forged_access_tokens_are_unauthenticated() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let registered = app.register("heidi", "correct horse battery").await;
        let user_id: uuid::Uuid = text(&registered, "/data/register/user/id")
            .parse()
            .expect("uuid");
        let keys = app.state.accounts.keys();
        let expired = keys
            .issue_access(
                user_id,
                user_id,
                time::OffsetDateTime::now_utc() - time::Duration::hours(2),
            )
            .expect("signs");
        let forged = parley::auth::TokenKeys::new(
            &secrecy::SecretString::from("some-other-secret-0123456789abcdef".to_owned()),
            time::Duration::minutes(15),
            time::Duration::days(1),
        )
        .issue_access(user_id, user_id, time::OffsetDateTime::now_utc())
        .expect("signs");

        for token in [
            None,
            Some(expired.as_str()),
            Some(forged.as_str()),
            Some("garbage"),
        ] {
            let response = app.graphql("{ me { id } }", json!({}), token).await;
            assert_eq!(
                error_code(&response),
                Some("UNAUTHENTICATED"),
                "{token:?}: {response}"
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn claims_hold_a_digest_of_the_name_and_names_claimed_before_digests_stay_held() {
    use parley_aggregates::claim::{NameClaim, NameCommand, UsernameClaims};
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let registered = app.register("rosalind", "correct horse battery").await;
        let rosalind = text(&registered, "/data/register/user/id").to_owned();
        let claims = UsernameClaims::new("rosalind", app.state.db.keys.name_digest("rosalind"));
        assert!(!claims.current.contains("rosalind"), "{claims:?}");
        let names = parley_store::CommandBus::<NameClaim>::new(&app.state.db, ());
        let held = names.load(&claims.current).await.expect("claim");
        assert_eq!(held.owner.map(|id| id.to_string()), Some(rosalind.clone()));
        let legacy = claims.legacy.expect("a legacy stream");
        assert_eq!(names.load(&legacy).await.expect("claim").owner, None);

        // An account whose name was claimed, as before digests, under the name itself.
        let owner = uuid::Uuid::parse_str(&rosalind).expect("id");
        names
            .execute(
                "username:veteran",
                NameCommand::Claim {
                    name: "veteran".to_owned(),
                    owner_id: owner,
                    abandoned_by: None,
                    at: app.state.clock.now(),
                },
                &app.state.meta(None),
            )
            .await
            .expect("claimed");
        assert_eq!(
            error_code(&app.register("Veteran", "correct horse battery").await),
            Some("CONFLICT")
        );
        let login = app.login("veteran", "correct horse battery").await;
        assert_eq!(text(&login, "/data/login/user/id"), rosalind, "{login}");
        app.stop().await;
    }
}
