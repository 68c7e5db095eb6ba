//! The HTTP surface and the process: health, GraphiQL, configuration errors, restarts.

use std::process::Command;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn health_readiness_and_graphiql_are_served() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let health = app
            .client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .expect("healthz");
        assert!(health.status().is_success());

        app.register("ivan", "correct horse battery").await;
        let ready = app.readyz().await;
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["projectors"][0]["name"], "users");

        let graphiql = app
            .client
            .get(format!("{}/graphql", app.address))
            .send()
            .await
            .expect("graphiql")
            .text()
            .await
            .expect("html");
        assert!(graphiql.to_lowercase().contains("graphiql"));
        app.stop().await;
    }
}

#[tokio::test]
async fn accounts_and_read_models_survive_a_restart() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let registered = app.register("judy", "correct horse battery").await;
        let refresh = text(&registered, "/data/register/refreshToken").to_owned();
        let database = app.stop().await;

        let app = spawn_app_on(database, |_| {}).await;
        let refreshed = app.refresh(&refresh).await;
        let access = text(&refreshed, "/data/refreshToken/accessToken").to_owned();
        let me = app
            .graphql("{ me { username } }", json!({}), Some(&access))
            .await;
        assert_eq!(text(&me, "/data/me/username"), "judy");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_generated_jwt_secret_is_kept_in_the_data_dir_across_restarts() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let app = spawn_app_on(database, |config| config.jwt_secret = None).await;
    let registered = app.register("kate", "correct horse battery").await;
    let access = text(&registered, "/data/register/accessToken").to_owned();
    let database = app.stop().await;
    assert!(database.dir.path().join("jwt-secret").exists());

    let app = spawn_app_on(database, |config| config.jwt_secret = None).await;
    let me = app
        .graphql("{ me { username } }", json!({}), Some(&access))
        .await;
    assert_eq!(text(&me, "/data/me/username"), "kate");
    app.stop().await;
}

fn run_parley(envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command.current_dir(dir.path()).args(args);
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("PARLEY_")) {
        command.env_remove(key);
    }
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("parley runs")
}

#[test]
fn bad_configuration_fails_at_start_with_one_line_naming_the_variable() {
    let cases: [(&str, &str); 6] = [
        ("PARLEY_LISTEN", "not-an-address"),
        ("PARLEY_DATABASE_URL", "mysql://localhost/db"),
        ("PARLEY_JWT_SECRET", "too-short"),
        ("PARLEY_LOG_FORMAT", "xml"),
        ("PARLEY_ACCESS_TOKEN_TTL", "0"),
        ("PARLEY_LOG", "[[["),
    ];
    for (variable, value) in cases {
        let output = run_parley(&[(variable, value)], &["migrate"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{variable}={value} was accepted");
        assert_eq!(stderr.trim().lines().count(), 1, "{variable}: {stderr}");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}

#[test]
fn migrate_creates_the_embedded_database_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_dir = data.to_string_lossy().to_string();
    let output = run_parley(&[("PARLEY_DATA_DIR", &data_dir)], &["migrate"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(data.join("parley.db").exists());
}

#[test]
fn the_server_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("PARLEY_")) {
        command.env_remove(key);
    }
    let mut child = command
        .current_dir(dir.path())
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .env("PARLEY_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("parley starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("parley serving"));
    assert!(serving, "the server never said it was serving");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("parley exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(dir.path().join("data/parley.db").exists());
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_and_its_secrets_are_private_even_when_they_already_existed() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let dir = database.dir.path().to_path_buf();
        // Left world-readable by an older release or by hand.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let secret = dir.join("jwt-secret");
        std::fs::write(&secret, "a-secret-written-by-hand-0123456789abcdef").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let embedded = backend == Backend::Sqlite;
        let app = spawn_app_on(database, |config| {
            config.jwt_secret = None;
            if embedded {
                config.database_url = None;
            }
        })
        .await;
        app.register("liam", "correct horse battery").await;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&secret), 0o600);
        if embedded {
            for file in ["parley.db", "parley.db-wal", "parley.db-shm"] {
                assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
            }
        }
        // Secrets never reach logs through the configuration's Debug form.
        let printed = format!("{:?}", app.state.config);
        assert!(!printed.contains("a-secret-written-by-hand"), "{printed}");
        let with_url = format!("{:?}", crate::helpers::test_config(&app.database));
        assert!(!with_url.contains(&app.database.url), "{with_url}");
        assert!(!with_url.contains(JWT_SECRET), "{with_url}");
        app.stop().await;
    }
}
