//! The `users` read model: every registered account, by id and by username; an erased
//! account keeps its row without a name.

use std::collections::BTreeSet;

use parley_aggregates::conversation::mentions::Named;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::user::UserEvent;
use sqlx::{AnyConnection, FromRow};

use crate::{Db, ProjectionError, Projector, StoredEvent};

pub struct UsersProjector;

#[async_trait::async_trait]
impl Projector for UsersProjector {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match event.event_of(&[EventKind::User])? {
            Some(Event::User(registered @ UserEvent::UserRegistered { .. })) => {
                let Some(row) = UserRow::registered(registered) else {
                    return Ok(());
                };
                sqlx::query(
                    "INSERT INTO users (id, username, display_name, registered_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                )
                .bind(row.id)
                .bind(row.username)
                .bind(row.display_name)
                .bind(row.registered_at)
                .execute(&mut *conn)
                .await?;
            }
            // No name is left: the username gives way to the id (unique, and never a
            // valid username), the display name to nothing.
            Some(Event::User(UserEvent::AccountErased {
                user_id, erased_at, ..
            })) => {
                sqlx::query(
                    "UPDATE users SET username = id, display_name = '', erased_at = $2 WHERE id = $1",
                )
                .bind(user_id.to_string())
                .bind(crate::format_time(*erased_at))
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub registered_at: String,
    /// Set once the account is erased.
    pub erased_at: Option<String>,
}

impl UserRow {
    /// The row a registration makes, exactly as this projector writes it: `register`
    /// answers with it when the read models have not caught up with its write.
    pub fn registered(event: &UserEvent) -> Option<Self> {
        let UserEvent::UserRegistered {
            user_id,
            username,
            display_name,
            registered_at,
            ..
        } = event
        else {
            return None;
        };
        let id = user_id.to_string();
        // The username is sealed with the account's key: an erased account's reads as
        // empty, and gives way to the id as on erasure.
        let username = match username.as_str() {
            "" => id.clone(),
            name => name.to_owned(),
        };
        Some(Self {
            id,
            username,
            display_name: display_name.as_str().to_owned(),
            registered_at: crate::format_time(*registered_at),
            erased_at: None,
        })
    }
}

/// Looks users up by id, in one query for any number of ids.
pub async fn by_ids(db: &Db, ids: &[String]) -> Result<Vec<UserRow>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, username, display_name, registered_at, erased_at FROM users WHERE id IN ({})",
        crate::placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, UserRow>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&db.read).await?)
}

/// One user by id.
pub async fn by_id(db: &Db, id: &str) -> Result<Option<UserRow>, ProjectionError> {
    Ok(by_ids(db, &[id.to_owned()]).await?.into_iter().next())
}

/// The accounts holding `names` (lowercase usernames), by name: the directory `@mentions`
/// are resolved with. Erased accounts hold no name.
pub async fn named(db: &Db, names: &BTreeSet<String>) -> Result<Named, ProjectionError> {
    if names.is_empty() {
        return Ok(Named::new());
    }
    let sql = format!(
        "SELECT username, id FROM users WHERE username IN ({}) AND erased_at IS NULL",
        crate::placeholders(1, names.len())
    );
    let mut query = sqlx::query_as::<_, (String, String)>(&sql);
    for name in names {
        query = query.bind(name);
    }
    Ok(query
        .fetch_all(&db.read)
        .await?
        .into_iter()
        .filter_map(|(name, id)| Some((name, uuid::Uuid::parse_str(&id).ok()?)))
        .collect())
}

/// Users whose username or display name starts with `query` (case-insensitive), by username.
pub async fn search(
    db: &Db,
    query: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<crate::page::Page<UserRow>, ProjectionError> {
    let prefix = format!(
        "{}%",
        crate::conversations::escape_like(&query.trim().to_lowercase())
    );
    let rows = sqlx::query_as(
        "SELECT id, username, display_name, registered_at, erased_at FROM users \
         WHERE (username LIKE $1 ESCAPE '\\' OR LOWER(display_name) LIKE $1 ESCAPE '\\') AND username > $2 \
           AND erased_at IS NULL \
         ORDER BY username LIMIT $3",
    )
    .bind(&prefix)
    .bind(after.unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(&db.read)
    .await?;
    Ok(crate::page::Page::forward(
        rows,
        limit,
        after.is_some(),
        |row: &UserRow| row.username.clone(),
    ))
}
