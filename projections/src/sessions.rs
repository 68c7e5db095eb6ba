//! The `sessions` read model: every sign-in session (a refresh-token family), when it
//! started and when it ended — by logout, by reuse of a rotated refresh token, or by a
//! password change or the account's erasure, which end all of the user's sessions.

use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::user::UserEvent;
use sqlx::AnyConnection;

use crate::access::unix_ms;
use crate::{Db, ProjectionError, Projector, StoredEvent};

pub struct SessionsProjector;

#[async_trait::async_trait]
impl Projector for SessionsProjector {
    fn name(&self) -> &'static str {
        "sessions"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sessions"]
    }

    /// A password change ends the user's sessions.
    fn write_indexes(&self) -> &'static [&'static str] {
        &["sessions_by_user"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let Some(Event::User(decoded)) = event.event_of(&[EventKind::User])? else {
            return Ok(());
        };
        let user_id = event.aggregate_id.as_str();
        match decoded.clone() {
            UserEvent::SessionStarted {
                family_id,
                started_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO sessions (family_id, user_id, started_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (family_id) DO NOTHING",
                )
                .bind(family_id.to_string())
                .bind(user_id)
                .bind(unix_ms(started_at))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::SessionEnded {
                family_id,
                ended_at: at,
            }
            | UserEvent::RefreshTokenReused {
                family_id,
                detected_at: at,
            } => {
                sqlx::query(
                    "UPDATE sessions SET ended_at_ms = $2 WHERE family_id = $1 AND ended_at_ms IS NULL",
                )
                .bind(family_id.to_string())
                .bind(unix_ms(at))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::PasswordChanged { changed_at, .. }
            | UserEvent::AccountErased {
                erased_at: changed_at,
                ..
            } => {
                sqlx::query(
                    "UPDATE sessions SET ended_at_ms = $2 WHERE user_id = $1 AND ended_at_ms IS NULL",
                )
                .bind(user_id)
                .bind(unix_ms(changed_at))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::UserRegistered { .. } | UserEvent::SessionRefreshed { .. } => {}
        }
        Ok(())
    }
}

/// Sessions that ended at or after `since_ms` (Unix ms), with when they ended.
pub async fn ended_since(db: &Db, since_ms: i64) -> Result<Vec<(String, i64)>, ProjectionError> {
    Ok(
        sqlx::query_as("SELECT family_id, ended_at_ms FROM sessions WHERE ended_at_ms >= $1")
            .bind(since_ms)
            .fetch_all(&db.read)
            .await?,
    )
}

/// The user's sessions that ended at `at_ms` (those a password change or erasure ended).
pub async fn ended_at(db: &Db, user_id: &str, at_ms: i64) -> Result<Vec<String>, ProjectionError> {
    Ok(
        sqlx::query_scalar(
            "SELECT family_id FROM sessions WHERE user_id = $1 AND ended_at_ms = $2",
        )
        .bind(user_id)
        .bind(at_ms)
        .fetch_all(&db.read)
        .await?,
    )
}
