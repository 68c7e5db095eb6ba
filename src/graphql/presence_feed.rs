//! `presenceChanged`: each watched user's presence as it is, then every change.

use std::sync::Arc;

use async_graphql::SimpleObject;
use parley_store::{presence, Db};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::ApiError;
use parley_projections::users::{self, UserRow};

use super::types::{named_user, Presence, User};
use crate::live::{Announced, Signal};

/// A user's presence changed (or, first, what it is when the subscription starts).
#[derive(SimpleObject)]
pub struct PresenceUpdate {
    pub user: User,
    pub status: super::types::PresenceStatus,
    pub last_seen_at: Option<time::OffsetDateTime>,
}

fn presence_update(
    user: Option<UserRow>,
    status: &str,
    last_seen_at: Option<i64>,
) -> Result<PresenceUpdate, ApiError> {
    let presence = Presence::new(status, last_seen_at)?;
    Ok(PresenceUpdate {
        user: named_user(user)?,
        status: presence.status,
        last_seen_at: presence.last_seen_at,
    })
}

/// Sends every watched user's presence as stored now.
async fn send_current(
    db: &Db,
    watched: &std::collections::HashSet<Uuid>,
    out: &mpsc::Sender<PresenceUpdate>,
) -> Result<bool, ApiError> {
    let ids: Vec<String> = watched.iter().map(Uuid::to_string).collect();
    let rows = presence::by_ids(db, &ids).await?;
    let mut found: std::collections::HashMap<String, UserRow> = users::by_ids(db, &ids)
        .await?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    for id in &ids {
        let (status, seen) = rows.get(id).map_or(("OFFLINE", None), |row| {
            (row.status.as_str(), row.last_seen_at)
        });
        if out
            .send(presence_update(found.remove(id), status, seen)?)
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) async fn watch_presence(
    db: Db,
    watched: std::collections::HashSet<Uuid>,
    mut signals: broadcast::Receiver<Arc<Announced>>,
    out: mpsc::Sender<PresenceUpdate>,
) {
    let run = async {
        if !send_current(&db, &watched, &out).await? {
            return Ok(());
        }
        loop {
            let signal = tokio::select! {
                signal = signals.recv() => signal,
                () = out.closed() => return Ok(()),
            };
            match signal {
                Ok(announced) => {
                    let Signal::Presence {
                        user_id,
                        status,
                        last_seen_at,
                    } = &announced.signal
                    else {
                        continue;
                    };
                    if !watched.contains(user_id) {
                        continue;
                    }
                    // Every watcher of this user shares the one lookup.
                    let user = announced.user(&db).await?;
                    let update = presence_update(user, status, *last_seen_at)?;
                    if out.send(update).await.is_err() {
                        return Ok(());
                    }
                }
                // Missed changes: what is stored now supersedes them.
                Err(RecvError::Lagged(_)) => {
                    if !send_current(&db, &watched, &out).await? {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    };
    let result: Result<(), ApiError> = run.await;
    if let Err(error) = result {
        tracing::warn!(?error, "presence subscription ended");
    }
}
