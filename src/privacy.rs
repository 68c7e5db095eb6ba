//! Erasure and retention: what happens around an `AccountErased` or `MessagesExpired`
//! event so that nothing of the content they cover can be read again, while the log (and
//! its hash chain) stays intact.
//!
//! Retention: [`Privacy::expire`] finds, in every conversation with a window (its own,
//! else `PARLEY_RETENTION_DAYS`), the messages past it; removes their files and
//! snapshots, records `MessagesExpired` (read models drop the messages, their edits,
//! reactions, notices and search entries) and destroys the conversation's content keys
//! of whole days before the window.
//!
//! The event is the record (who, when, why). Recording it ends the user's sessions
//! (through the sessions read model and revocations) and makes every projector drop
//! the user's content. Then [`Privacy::shred`] destroys the user's data keys, which
//! turns their sealed content in the log into unreadable bytes; deletes the snapshots
//! that held it in clear; removes their attachment objects (recording each removal);
//! and writes an entry to the erasure ledger.
//!
//! The ledger lives in the blob store, outside the database, so that restoring a
//! database backup taken before an erasure cannot bring the user back: at start,
//! [`Privacy::reapply`] records again every ledger entry the log lacks and shreds every
//! erased user once more (all steps are idempotent).

use std::sync::Arc;

use cqrs_es::Aggregate as _;
use parley_aggregates::conversation::{
    Conversation, ConversationCommand, ConversationEvent, ConversationServices,
};
use parley_aggregates::upload::RemovalReason;
use parley_aggregates::user::{User, UserCommand, UserError, UserEvent, UserServices};
use parley_projections::{conversations, messages};
use parley_store::{format_time, CommandBus, CommandMeta, Db, LogPosition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::AuthError;
use crate::blob::{BlobError, BlobStore, Served};
use crate::uploads::Uploads;

/// The ledger's kind of blob key.
const LEDGER: &str = "erasures";
/// The largest ledger entry read back.
const MAX_ENTRY: u64 = 64 * 1024;

/// Why an erasure could not be done.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("{0:?}")]
    Auth(crate::auth::AuthError),
    #[error(transparent)]
    Store(#[from] parley_store::StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Projection(#[from] parley_projections::ProjectionError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("{0:?}")]
    Chat(crate::chat::ChatError),
    #[error("erasure ledger entry {0} is unreadable: {1}")]
    Ledger(Uuid, serde_json::Error),
}

impl From<crate::chat::ChatError> for PrivacyError {
    fn from(error: crate::chat::ChatError) -> Self {
        Self::Chat(error)
    }
}

/// One erasure, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub user_id: Uuid,
    /// `None`: an operator's erasure.
    pub erased_by: Option<Uuid>,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub erased_at: OffsetDateTime,
}

pub struct Privacy {
    db: Db,
    conversations: CommandBus<Conversation>,
    users: CommandBus<User>,
    uploads: Arc<Uploads>,
    blobs: Arc<dyn BlobStore>,
}

impl Privacy {
    pub fn new(db: &Db, users: UserServices, uploads: Arc<Uploads>) -> Self {
        Self {
            db: db.clone(),
            // Expiring needs no service: it is not a post.
            conversations: CommandBus::new(
                db,
                ConversationServices {
                    max_body_chars: 0,
                    max_members: 0,
                    max_group_invites: 0,
                    posted: std::sync::Arc::new(parley_aggregates::conversation::NoPosts),
                },
            ),
            users: CommandBus::new(db, users),
            blobs: uploads.blobs().clone(),
            uploads,
        }
    }

    /// Records the erasure of `user_id`: by the user, proving it with `password`, or by
    /// an operator (`password: None`) who must give a `reason`. The caller waits for the
    /// read models to include the returned position, then calls [`Self::shred`].
    pub async fn erase(
        &self,
        user_id: Uuid,
        password: Option<&str>,
        reason: Option<&str>,
        meta: &CommandMeta,
    ) -> Result<(Erasure, Option<LogPosition>), PrivacyError> {
        let committed = self
            .users
            .execute(
                &user_id.to_string(),
                UserCommand::Erase {
                    password: password.map(str::to_owned),
                    operator: password.is_none(),
                    reason: reason.map(str::to_owned),
                    at: meta.at,
                },
                meta,
            )
            .await
            .map_err(|error| PrivacyError::Auth(error.into()))?;
        let erasure = committed
            .events
            .iter()
            .find_map(|envelope| match &envelope.payload {
                UserEvent::AccountErased {
                    user_id,
                    erased_by,
                    reason,
                    erased_at,
                } => Some(Erasure {
                    user_id: *user_id,
                    erased_by: *erased_by,
                    reason: reason.clone(),
                    erased_at: *erased_at,
                }),
                _ => None,
            })
            .ok_or(PrivacyError::Auth(AuthError::User(
                UserError::NotRegistered,
            )))?;
        // At once, before anything waits: a node that reads the event from now on
        // finds the keys gone, whatever else the erasure still has to do.
        self.db
            .keys
            .destroy_owned_by(&self.db.write, &user_id.to_string())
            .await?;
        Ok((erasure, committed.position))
    }

    /// Destroys what is left of an erased user's content: data keys, snapshots,
    /// attachment objects; then writes the ledger entry, whose presence says the
    /// erasure is complete. Safe to repeat.
    pub async fn shred(&self, erasure: &Erasure, now: OffsetDateTime) -> Result<(), PrivacyError> {
        let user = erasure.user_id.to_string();
        let destroyed = self.db.keys.destroy_owned_by(&self.db.write, &user).await?;
        // Snapshots are caches of state that held the user's text in clear; the
        // aggregates load from their (now unreadable) events instead.
        sqlx::query("DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2")
            .bind(User::TYPE)
            .bind(&user)
            .execute(&self.db.write)
            .await?;
        for sql in [
            "DELETE FROM snapshots WHERE aggregate_type = 'Message' AND aggregate_id IN \
             (SELECT id FROM messages WHERE author_id = $1)",
            "DELETE FROM snapshots WHERE aggregate_type = 'Upload' AND aggregate_id IN \
             (SELECT id FROM attachments WHERE owner_id = $1)",
            // Conversations record members by id alone now; a snapshot written before
            // that carries the member's username.
            "DELETE FROM snapshots WHERE aggregate_type = 'Conversation' AND aggregate_id IN \
             (SELECT conversation_id FROM members WHERE user_id = $1)",
        ] {
            sqlx::query(sql).bind(&user).execute(&self.db.write).await?;
        }
        self.uploads
            .remove_owned_by(erasure.user_id, RemovalReason::AccountErased, now)
            .await?;
        let key = ledger_key(erasure.user_id);
        let first = self.blobs.size(&key).await?.is_none();
        if first {
            let entry = serde_json::to_vec(erasure)
                .map_err(|e| PrivacyError::Ledger(erasure.user_id, e))?;
            self.blobs
                .write(
                    &key,
                    entry,
                    Served {
                        filename: "erasure.json",
                        content_type: "application/json",
                    },
                )
                .await?;
        }
        // The first time, and whenever keys were left (a restored database).
        if first || destroyed > 0 {
            self.scrub().await?;
        }
        tracing::info!(user_id = %erasure.user_id, "account erased and shredded");
        Ok(())
    }

    /// Expires what every conversation's retention window has passed at `now`
    /// (`default_days`: the server's window for conversations without their own).
    /// Returns how many conversations had messages expire, and the position of the last
    /// expiry recorded.
    pub async fn expire(
        &self,
        now: OffsetDateTime,
        default_days: Option<u32>,
    ) -> Result<(usize, Option<LogPosition>), PrivacyError> {
        let mut expired = 0;
        let mut position = None;
        let mut destroyed = 0;
        let conversations =
            conversations::with_retention(&self.db, default_days.map(i64::from)).await?;
        for (conversation, days) in conversations {
            let Ok(conversation_id) = Uuid::parse_str(&conversation) else {
                continue;
            };
            let before = now - time::Duration::days(days);
            let ids =
                messages::posted_before(&self.db, &conversation, &format_time(before)).await?;
            if !ids.is_empty() {
                // Files and snapshots first: both are found through the messages the
                // expiry will remove from the read models.
                self.uploads
                    .remove_attached_to(&ids, RemovalReason::Expired, now)
                    .await?;
                for chunk in ids.chunks(500) {
                    let list = parley_store::placeholders(1, chunk.len());
                    for sql in [
                        format!("DELETE FROM snapshots WHERE aggregate_type = 'Message' AND aggregate_id IN ({list})"),
                        format!(
                            "DELETE FROM snapshots WHERE aggregate_type = 'Upload' AND aggregate_id IN \
                             (SELECT id FROM attachments WHERE message_id IN ({list}))"
                        ),
                    ] {
                        let mut query = sqlx::query(&sql);
                        for id in chunk {
                            query = query.bind(id);
                        }
                        query.execute(&self.db.write).await?;
                    }
                }
                let meta = CommandMeta::new(None, now);
                let committed = self
                    .conversations
                    .execute(
                        &conversation,
                        (
                            conversation_id,
                            ConversationCommand::Expire { before, at: now },
                        ),
                        &meta,
                    )
                    .await
                    .map_err(|error| PrivacyError::Chat(error.into()))?;
                position = committed.position.or(position);
                expired += 1;
                tracing::info!(%conversation_id, messages = ids.len(), "messages expired");
            }
            destroyed += self
                .db
                .keys
                .destroy_days_before(&self.db.write, &conversation, &day_of(before))
                .await?;
        }
        if destroyed > 0 {
            self.scrub().await?;
        }
        Ok((expired, position))
    }

    /// Moves what deletions freed out of reach: on SQLite the journal (freed pages are
    /// zeroed by secure_delete); on PostgreSQL the key table's dead rows.
    async fn scrub(&self) -> Result<(), PrivacyError> {
        match self.db.backend {
            parley_store::Backend::Sqlite => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.db.write)
                    .await?;
            }
            parley_store::Backend::Postgres => {
                // A deleted row stays in its page until vacuumed; the key table is
                // small, so it is rewritten without the destroyed keys at once (the
                // read-model tables are left to autovacuum: see the README).
                sqlx::query("VACUUM FULL data_keys")
                    .execute(&self.db.write)
                    .await?;
            }
        }
        Ok(())
    }

    /// Puts every recorded erasure and expiry back in force, before the server serves
    /// anything: erasures the log lacks but the ledger has (a database restored from
    /// before them) are recorded again, and the keys of every erased user and of every
    /// expired day are destroyed. Returns the erasures still to [`Self::shred`] (those
    /// recorded again, and those whose shredding never completed), with the position
    /// of the last one recorded again, if any.
    pub async fn reapply(
        &self,
        now: OffsetDateTime,
    ) -> Result<(Vec<Erasure>, Option<LogPosition>), PrivacyError> {
        let mut destroyed = 0;
        let mut known = std::collections::BTreeMap::new();
        for event in parley_store::log::of_type(&self.db, User::TYPE, UserEvent::ERASED).await? {
            if let Ok(Some(parley_aggregates::event::Event::User(UserEvent::AccountErased {
                user_id,
                erased_by,
                reason,
                erased_at,
            }))) = event.event()
            {
                known.insert(
                    *user_id,
                    Erasure {
                        user_id: *user_id,
                        erased_by: *erased_by,
                        reason: reason.clone(),
                        erased_at: *erased_at,
                    },
                );
            }
        }
        // Expiries recorded in the log stay in force whatever the windows are now.
        for event in
            parley_store::log::of_type(&self.db, Conversation::TYPE, ConversationEvent::EXPIRED)
                .await?
        {
            if let Ok(Some(parley_aggregates::event::Event::Conversation(
                ConversationEvent::MessagesExpired {
                    conversation_id,
                    before,
                    ..
                },
            ))) = event.event()
            {
                destroyed += self
                    .db
                    .keys
                    .destroy_days_before(
                        &self.db.write,
                        &conversation_id.to_string(),
                        &day_of(*before),
                    )
                    .await?;
            }
        }
        let ledger: std::collections::BTreeSet<Uuid> = self
            .blobs
            .list(LEDGER, usize::MAX)
            .await?
            .iter()
            .filter_map(|key| crate::blob::parse_key(key).ok().map(|(_, id)| id))
            .collect();
        let mut pending: Vec<Erasure> = known
            .values()
            .filter(|erasure| !ledger.contains(&erasure.user_id))
            .cloned()
            .collect();
        let mut position = None;
        for &user_id in &ledger {
            if known.contains_key(&user_id) {
                continue;
            }
            let Some(bytes) = self.blobs.read(&ledger_key(user_id), MAX_ENTRY).await? else {
                continue;
            };
            let entry: Erasure =
                serde_json::from_slice(&bytes).map_err(|e| PrivacyError::Ledger(user_id, e))?;
            let reason = format!(
                "re-applied from the erasure ledger (erased {}{})",
                parley_store::format_time(entry.erased_at),
                entry
                    .reason
                    .as_deref()
                    .map(|why| format!(": {why}"))
                    .unwrap_or_default()
            );
            let reason: String = reason.chars().take(500).collect();
            let meta = CommandMeta::new(None, now);
            match self.erase(user_id, None, Some(&reason), &meta).await {
                Ok((erasure, at)) => {
                    tracing::warn!(%user_id, "an erasure missing from the log (restored backup?) was recorded again");
                    position = at.or(position);
                    pending.push(erasure.clone());
                    known.insert(user_id, erasure);
                }
                // Not in this database at all (another deployment's ledger, or a
                // backup from before the user registered): nothing to erase.
                Err(PrivacyError::Auth(AuthError::User(UserError::NotRegistered))) => {}
                Err(error) => return Err(error),
            }
        }
        for erasure in known.values() {
            destroyed += self
                .db
                .keys
                .destroy_owned_by(&self.db.write, &erasure.user_id.to_string())
                .await?;
        }
        // Erasures recorded again destroyed their keys as they were recorded.
        if destroyed > 0 || position.is_some() {
            tracing::warn!(
                keys = destroyed,
                "destroyed data keys of recorded erasures and expiries again (restored backup?)"
            );
            self.scrub().await?;
        }
        Ok((pending, position))
    }
}

fn ledger_key(user_id: Uuid) -> String {
    format!("{LEDGER}/{user_id}")
}

/// The UTC day of `at`, as content keys name it: a key of a day before this one holds
/// only what was sealed before `at`.
fn day_of(at: OffsetDateTime) -> String {
    let date = at.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_name_keys_as_the_store_does() {
        let at = time::macros::datetime!(2026-03-01 23:30 -02:00);
        assert_eq!(day_of(at), "2026-03-02");
    }
}
