//! What the benchmarks share: throwaway PostgreSQL databases on a server whose role may
//! create them (`PARLEY_BENCH_POSTGRES_URL`), dropped when the benchmark is done.

use parley_store::Db;
use sqlx::Connection as _;

pub struct Throwaway {
    admin: sqlx::PgConnection,
    base: String,
    names: Vec<String>,
}

impl Throwaway {
    pub async fn on(server: &str) -> Self {
        Self {
            admin: sqlx::PgConnection::connect(server).await.expect("connect"),
            base: server
                .rsplit_once('/')
                .map_or(server, |(base, _)| base)
                .to_owned(),
            names: Vec::new(),
        }
    }

    /// A new, migrated database; `tag` shows in its name.
    pub async fn database(&mut self, tag: &str) -> Db {
        let name = format!("parley_bench_{tag}_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut self.admin)
            .await
            .expect("create");
        let db = Db::connect(&format!("{}/{name}", self.base), 4)
            .await
            .expect("connect");
        db.migrate().await.expect("migrate");
        self.names.push(name);
        db
    }

    /// Drops every database made here (their pools must be closed first).
    pub async fn drop_all(mut self) {
        for name in std::mem::take(&mut self.names) {
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut self.admin)
                .await;
        }
    }
}
