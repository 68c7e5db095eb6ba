//! Presence storage: who is online, away or offline, and when they were last seen.
//!
//! Not a projection: the live layer writes these rows for ephemeral signals
//! (connections, heartbeats, `setPresence`), which are never events. The status column
//! is the one last announced, so every node agrees on transitions: a transition is
//! announced by whoever's conditional update changes the row.

use std::collections::HashMap;

use sqlx::FromRow;

use crate::{Db, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PresenceRow {
    pub user_id: String,
    pub status: String,
    pub away: i64,
    pub heartbeat_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

async fn ensure_row(db: &Db, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO presence (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// Records a heartbeat at `now`, and with `away` the status the client asked for.
pub async fn heartbeat(
    db: &Db,
    user_id: &str,
    now: i64,
    away: Option<bool>,
) -> Result<(), StoreError> {
    ensure_row(db, user_id).await?;
    sqlx::query(
        "UPDATE presence SET heartbeat_at = $2, away = COALESCE($3, away) WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(now)
    .bind(away.map(i64::from))
    .execute(&db.write)
    .await?;
    Ok(())
}

/// Records that `node` has the user connected, leased until `lease_until`.
/// Idempotent, so a failed call can simply be repeated.
pub async fn hold(db: &Db, node: &str, user_id: &str, lease_until: i64) -> Result<(), StoreError> {
    ensure_row(db, user_id).await?;
    sqlx::query(
        "INSERT INTO presence_sessions (node_id, user_id, lease_until) VALUES ($1, $2, $3) \
         ON CONFLICT (node_id, user_id) DO UPDATE SET lease_until = excluded.lease_until",
    )
    .bind(node)
    .bind(user_id)
    .bind(lease_until)
    .execute(&db.write)
    .await?;
    Ok(())
}

/// Records that `node` no longer has the user connected.
pub async fn let_go(db: &Db, node: &str, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM presence_sessions WHERE node_id = $1 AND user_id = $2")
        .bind(node)
        .bind(user_id)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// Extends every lease `node` holds.
pub async fn renew_leases(db: &Db, node: &str, lease_until: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE presence_sessions SET lease_until = $2 WHERE node_id = $1")
        .bind(node)
        .bind(lease_until)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// Drops every lease `node` holds (it is shutting down); returns the users it held.
pub async fn release_node(db: &Db, node: &str) -> Result<Vec<String>, StoreError> {
    let users: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM presence_sessions WHERE node_id = $1")
            .bind(node)
            .fetch_all(&db.write)
            .await?;
    sqlx::query("DELETE FROM presence_sessions WHERE node_id = $1")
        .bind(node)
        .execute(&db.write)
        .await?;
    Ok(users)
}

/// The status the user has now: `OFFLINE` without a live lease or a heartbeat since
/// `heartbeat_cutoff`, else `AWAY` or `ONLINE` as the client last said.
pub async fn current_status(
    db: &Db,
    user_id: &str,
    now: i64,
    heartbeat_cutoff: i64,
) -> Result<&'static str, StoreError> {
    let row: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT away, heartbeat_at FROM presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&db.write)
            .await?;
    let Some((away, heartbeat_at)) = row else {
        return Ok("OFFLINE");
    };
    let leased: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM presence_sessions WHERE user_id = $1 AND lease_until > $2",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(&db.write)
    .await?;
    let online = leased > 0 || heartbeat_at.is_some_and(|at| at > heartbeat_cutoff);
    Ok(match (online, away != 0) {
        (false, _) => "OFFLINE",
        (true, true) => "AWAY",
        (true, false) => "ONLINE",
    })
}

/// Records `status` if it differs from the one last announced, returning the row as
/// changed, or `None` when someone else already recorded it. Going offline stamps
/// `last_seen_at` (once per transition) and forgets a manual `AWAY`, so the next
/// session starts online.
pub async fn transition(
    db: &Db,
    user_id: &str,
    status: &str,
    now: i64,
) -> Result<Option<PresenceRow>, StoreError> {
    let changed = sqlx::query(
        "UPDATE presence SET status = $2, \
            last_seen_at = CASE WHEN $2 = 'OFFLINE' THEN $3 ELSE last_seen_at END, \
            away = CASE WHEN $2 = 'OFFLINE' THEN 0 ELSE away END \
         WHERE user_id = $1 AND status <> $2",
    )
    .bind(user_id)
    .bind(status)
    .bind(now)
    .execute(&db.write)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(None);
    }
    Ok(by_ids(db, &[user_id.to_owned()]).await?.remove(user_id))
}

/// Users announced as present whose leases and heartbeats have all lapsed.
pub async fn lapsed(db: &Db, now: i64, heartbeat_cutoff: i64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT p.user_id FROM presence p WHERE p.status <> 'OFFLINE' \
           AND (p.heartbeat_at IS NULL OR p.heartbeat_at <= $2) \
           AND NOT EXISTS (SELECT 1 FROM presence_sessions s \
                           WHERE s.user_id = p.user_id AND s.lease_until > $1)",
    )
    .bind(now)
    .bind(heartbeat_cutoff)
    .fetch_all(&db.write)
    .await?)
}

/// Presence rows by user id; users never seen have none.
pub async fn by_ids(db: &Db, ids: &[String]) -> Result<HashMap<String, PresenceRow>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT user_id, status, away, heartbeat_at, last_seen_at FROM presence WHERE user_id IN ({})",
        crate::placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, PresenceRow>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query
        .fetch_all(&db.read)
        .await?
        .into_iter()
        .map(|row| (row.user_id.clone(), row))
        .collect())
}
