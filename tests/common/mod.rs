//! Shared test fixtures: a fresh database per test on each backend.
#![allow(dead_code)]

use parley_store::Db;

/// Base64 of 32 bytes; every server, CLI run and direct handle of a test shares it.
pub const MASTER_KEY: &str = "cGFybGV5LXRlc3QtbWFzdGVyLWtleS0wMTIzNDU2Nzg=";
use sqlx::Connection as _;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backends to run on: `PARLEY_TEST_BACKENDS` (`sqlite,postgres`), else SQLite plus
/// PostgreSQL when `PARLEY_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    let pg_url = std::env::var("PARLEY_TEST_POSTGRES_URL").ok();
    match std::env::var("PARLEY_TEST_BACKENDS") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| match name {
                "sqlite" => Backend::Sqlite,
                "postgres" => {
                    assert!(
                        pg_url.is_some(),
                        "PARLEY_TEST_BACKENDS names postgres but PARLEY_TEST_POSTGRES_URL is unset"
                    );
                    Backend::Postgres
                }
                other => panic!("unknown backend {other:?} in PARLEY_TEST_BACKENDS"),
            })
            .collect(),
        Err(_) if pg_url.is_some() => vec![Backend::Sqlite, Backend::Postgres],
        Err(_) => vec![Backend::Sqlite],
    }
}

/// A database that exists for one test and is removed after it.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    pub dir: TempDir,
    pg_drop: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("parley.db").display()
                );
                Self {
                    backend,
                    url,
                    dir,
                    pg_drop: None,
                }
            }
            Backend::Postgres => {
                let server =
                    std::env::var("PARLEY_TEST_POSTGRES_URL").expect("PARLEY_TEST_POSTGRES_URL");
                let name = format!("parley_test_{}", uuid::Uuid::now_v7().simple());
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .expect("connect to PARLEY_TEST_POSTGRES_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let url = with_database(&server, &name);
                Self {
                    backend,
                    url,
                    dir,
                    pg_drop: Some((server, name)),
                }
            }
        }
    }

    /// The same database for a second node: its own data directory, and not dropped
    /// when this handle is.
    pub fn shared(&self) -> Self {
        Self {
            backend: self.backend,
            url: self.url.clone(),
            dir: tempfile::tempdir().expect("temp dir"),
            pg_drop: None,
        }
    }

    /// Copies the whole database aside, as a backup would; no server may be using it.
    pub async fn back_up(&self) {
        match &self.pg_drop {
            None => {
                self.closed_sqlite().await;
                let db = self.dir.path().join("parley.db");
                let backup = self.dir.path().join("backup.db");
                // A clean close leaves the log checkpointed into the file; a leftover
                // journal is copied too.
                std::fs::copy(&db, &backup).expect("back up the database file");
                let wal = self.dir.path().join("parley.db-wal");
                if wal.exists() {
                    std::fs::copy(&wal, self.dir.path().join("backup.db-wal"))
                        .expect("back up the journal");
                }
            }
            Some((server, name)) => {
                let mut conn = sqlx::PgConnection::connect(server).await.expect("connect");
                // A stopped server's pools may not have closed every connection yet, and
                // a terminated session takes a moment to go: copying a database needs
                // it to have none.
                for _ in 0..200 {
                    let others: i64 = sqlx::query_scalar(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await
                    .expect("end other sessions");
                    if others == 0 {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                sqlx::query(&format!("CREATE DATABASE {name}_backup TEMPLATE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("back up the database");
                conn.close().await.ok();
            }
        }
    }

    /// Puts the backup [`Self::back_up`] took in the database's place; no server may
    /// be using it.
    pub async fn restore(&self) {
        match &self.pg_drop {
            None => {
                self.closed_sqlite().await;
                let dir = self.dir.path();
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("parley.db{suffix}")));
                }
                std::fs::copy(dir.join("backup.db"), dir.join("parley.db")).expect("restore");
                if dir.join("backup.db-wal").exists() {
                    std::fs::copy(dir.join("backup.db-wal"), dir.join("parley.db-wal"))
                        .expect("restore the journal");
                }
            }
            Some((server, name)) => {
                let mut conn = sqlx::PgConnection::connect(server).await.expect("connect");
                for sql in [
                    format!("DROP DATABASE {name} WITH (FORCE)"),
                    format!("ALTER DATABASE {name}_backup RENAME TO {name}"),
                ] {
                    sqlx::query(&sql).execute(&mut conn).await.expect("restore");
                }
                conn.close().await.ok();
            }
        }
    }

    /// Waits until the last connection to the SQLite file has closed: a stopped server's
    /// pool reports its connections closed once their worker threads were told to
    /// close them, and a thread may still be checkpointing the log into the file (the
    /// last close does so, then deletes the log). Copying the file meanwhile, or
    /// replacing it, would tear it.
    async fn closed_sqlite(&self) {
        let wal = self.dir.path().join("parley.db-wal");
        for _ in 0..6_000 {
            if !wal.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{} is still open after a minute", wal.display());
    }

    /// A connected, migrated handle, opening sealed content with the tests' master key.
    pub async fn connect(&self) -> Db {
        let mut db = Db::connect(&self.url, 16).await.expect("connect");
        db.migrate().await.expect("migrate");
        let master = parley_store::MasterKey::from_base64(MASTER_KEY).expect("test master key");
        db.use_master_key(&master).await.expect("master key");
        db
    }
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((server, name)) = self.pg_drop.take() {
            // Drop runs outside async; a short-lived runtime on its own thread does it.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@127.0.0.1:5/postgres", "x"),
        "postgres://u@127.0.0.1:5/x"
    );
    assert_eq!(
        with_database("postgres://u@h:5/postgres?sslmode=disable", "x"),
        "postgres://u@h:5/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
}

/// The log once at least `count` events are readable. On PostgreSQL a reader sees an
/// event only after every older transaction in the cluster has finished, so a test that
/// runs beside others waits (with a generous bound) instead of assuming it at once.
pub async fn readable_events(db: &Db, count: usize) -> Vec<parley_store::StoredEvent> {
    use parley_store::{log, LogPosition};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let events = log::read_after(db, LogPosition::START, 100_000)
            .await
            .expect("read the log");
        if events.len() >= count || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Transactions that hold an id but will never append, left open on the PostgreSQL
/// server of `database`: one in another database of it, and one in `database` that read
/// the log and wrote a table of its own (as an analyst's session or a rebuild does).
/// The log's readers must not wait for them.
pub struct OpenTransactions {
    connections: Vec<sqlx::PgConnection>,
    _elsewhere: TestDatabase,
}

impl OpenTransactions {
    pub async fn begin(database: &TestDatabase) -> Self {
        use sqlx::Executor as _;
        let elsewhere = TestDatabase::new(Backend::Postgres).await;
        let held: [(&str, &[&str]); 2] = [
            (&elsewhere.url, &["BEGIN", "SELECT pg_current_xact_id()"]),
            (
                &database.url,
                &[
                    "BEGIN",
                    "SELECT count(*) FROM events",
                    "CREATE TEMP TABLE findings (n int)",
                    "INSERT INTO findings VALUES (1)",
                ],
            ),
        ];
        let mut connections = Vec::new();
        for (url, statements) in held {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            for statement in statements {
                conn.execute(*statement).await.expect(statement);
            }
            connections.push(conn);
        }
        Self {
            connections,
            _elsewhere: elsewhere,
        }
    }

    pub async fn end(self) {
        use sqlx::Executor as _;
        for mut conn in self.connections {
            conn.execute("ROLLBACK").await.expect("rollback");
            conn.close().await.expect("close");
        }
    }
}
