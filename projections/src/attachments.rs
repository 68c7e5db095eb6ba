//! The `attachments` read model: each upload's state and metadata, the message that
//! carries it, and whether that message was deleted. Serves `Message.attachments`,
//! downloads, the per-user limit of open uploads and the sweeper's work lists.

use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::message::MessageEvent;
use parley_aggregates::upload::{RemovalReason, UploadEvent};
use parley_aggregates::user::UserEvent;
use sqlx::{AnyConnection, FromRow};

use crate::{format_time, Db, ProjectionError, Projector, StoredEvent};

pub struct AttachmentsProjector;

/// Statuses as stored.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const COMPLETED: &str = "completed";
    pub const ATTACHED: &str = "attached";
    pub const REJECTED: &str = "rejected";
    pub const REMOVED: &str = "removed";
}

fn to_i64(value: Option<impl Into<u64>>) -> Option<i64> {
    value.and_then(|v| i64::try_from(v.into()).ok())
}

#[async_trait::async_trait]
impl Projector for AttachmentsProjector {
    fn name(&self) -> &'static str {
        "attachments"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["attachments"]
    }

    /// Deleting a message finds its attachments.
    fn write_indexes(&self) -> &'static [&'static str] {
        &["attachments_by_message"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match event.event_of(&[EventKind::Upload, EventKind::Message, EventKind::User])? {
            Some(Event::Upload(upload)) => apply_upload(conn, upload).await,
            // What was said about an erased user's files goes with them; the objects
            // themselves are removed (and recorded) by the erasure.
            Some(Event::User(UserEvent::AccountErased { user_id, .. })) => {
                sqlx::query(
                    "UPDATE attachments SET filename = '', sha256 = NULL, width = NULL, \
                     height = NULL, duration_ms = NULL WHERE owner_id = $1",
                )
                .bind(user_id.to_string())
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            Some(Event::Message(MessageEvent::MessageDeleted {
                message_id,
                deleted_at,
                ..
            })) => {
                sqlx::query(
                    "UPDATE attachments SET message_deleted_at = $2 \
                     WHERE message_id = $1 AND message_deleted_at IS NULL",
                )
                .bind(message_id.to_string())
                .bind(format_time(*deleted_at))
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

async fn apply_upload(
    conn: &mut AnyConnection,
    event: &UploadEvent,
) -> Result<(), ProjectionError> {
    // Each change applies only from the status it follows, so an event applied twice
    // (or after a later one) changes nothing.
    match event {
        UploadEvent::UploadCreated {
            upload_id,
            conversation_id,
            owner_id,
            filename,
            content_type,
            size,
            object_key,
            expires_at,
            created_at,
        } => {
            let at = format_time(*created_at);
            sqlx::query(
                "INSERT INTO attachments (id, conversation_id, owner_id, filename, content_type, size, \
                 object_key, status, created_at, expires_at, changed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(upload_id.to_string())
            .bind(conversation_id.to_string())
            .bind(owner_id.to_string())
            .bind(filename)
            .bind(content_type)
            .bind(i64::try_from(*size).unwrap_or(i64::MAX))
            .bind(object_key)
            .bind(status::PENDING)
            .bind(&at)
            .bind(format_time(*expires_at))
            .execute(&mut *conn)
            .await?;
        }
        completed @ UploadEvent::UploadCompleted { .. } => {
            let Some(row) = AttachmentRow::completed(completed) else {
                return Ok(());
            };
            sqlx::query(
                "UPDATE attachments SET status = $2, size = $3, object_key = $4, thumbnail_key = $5, \
                 width = $6, height = $7, duration_ms = $8, sha256 = $9, changed_at = $10 \
                 WHERE id = $1 AND status = $11",
            )
            .bind(row.id)
            .bind(row.status)
            .bind(row.size)
            .bind(row.object_key)
            .bind(row.thumbnail_key)
            .bind(row.width)
            .bind(row.height)
            .bind(row.duration_ms)
            .bind(row.sha256)
            .bind(row.changed_at)
            .bind(status::PENDING)
            .execute(&mut *conn)
            .await?;
        }
        UploadEvent::UploadRejected {
            upload_id,
            rejected_at,
            ..
        } => {
            set_status(
                conn,
                *upload_id,
                status::REJECTED,
                &[status::PENDING],
                *rejected_at,
            )
            .await?;
        }
        UploadEvent::UploadAttached {
            upload_id,
            message_id,
            attached_at,
            ..
        } => {
            sqlx::query(
                "UPDATE attachments SET status = $2, message_id = $3, changed_at = $4 \
                 WHERE id = $1 AND status = $5",
            )
            .bind(upload_id.to_string())
            .bind(status::ATTACHED)
            .bind(message_id.to_string())
            .bind(format_time(*attached_at))
            .bind(status::COMPLETED)
            .execute(&mut *conn)
            .await?;
        }
        UploadEvent::UploadDetached {
            upload_id,
            message_id,
            detached_at,
            ..
        } => {
            sqlx::query(
                "UPDATE attachments SET status = $2, message_id = NULL, changed_at = $3 \
                 WHERE id = $1 AND status = $4 AND message_id = $5",
            )
            .bind(upload_id.to_string())
            .bind(status::COMPLETED)
            .bind(format_time(*detached_at))
            .bind(status::ATTACHED)
            .bind(message_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
        UploadEvent::AttachmentRemoved {
            upload_id,
            removed_at,
            reason,
            ..
        } => {
            set_status(
                conn,
                *upload_id,
                status::REMOVED,
                &[
                    status::PENDING,
                    status::COMPLETED,
                    status::ATTACHED,
                    status::REJECTED,
                ],
                *removed_at,
            )
            .await?;
            // An expired message's files go without a trace of what they were.
            if *reason == RemovalReason::Expired {
                sqlx::query(
                    "UPDATE attachments SET filename = '', sha256 = NULL, width = NULL, \
                     height = NULL, duration_ms = NULL WHERE id = $1",
                )
                .bind(upload_id.to_string())
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

async fn set_status(
    conn: &mut AnyConnection,
    id: uuid::Uuid,
    to: &str,
    from: &[&str],
    at: time::OffsetDateTime,
) -> Result<(), ProjectionError> {
    let sql = format!(
        "UPDATE attachments SET status = $2, changed_at = $3 WHERE id = $1 AND status IN ({})",
        crate::placeholders(4, from.len())
    );
    let mut query = sqlx::query(&sql)
        .bind(id.to_string())
        .bind(to)
        .bind(format_time(at));
    for status in from {
        query = query.bind(*status);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct AttachmentRow {
    pub id: String,
    pub conversation_id: String,
    pub owner_id: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub object_key: String,
    pub thumbnail_key: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub duration_ms: Option<i64>,
    pub sha256: Option<String>,
    pub status: String,
    pub message_id: Option<String>,
    pub message_deleted_at: Option<String>,
    pub created_at: String,
    pub changed_at: String,
}

impl AttachmentRow {
    /// The row as a completion leaves it, exactly as this projector writes it (but for
    /// `created_at`, which the completion does not carry: its own time stands for it):
    /// `completeUpload` answers with it when the read models have not caught up with
    /// its write.
    pub fn completed(event: &UploadEvent) -> Option<Self> {
        let UploadEvent::UploadCompleted {
            upload_id,
            conversation_id,
            owner_id,
            filename,
            content_type,
            size,
            object_key,
            metadata,
            completed_at,
        } = event
        else {
            return None;
        };
        let at = format_time(*completed_at);
        Some(Self {
            id: upload_id.to_string(),
            conversation_id: conversation_id.to_string(),
            owner_id: owner_id.to_string(),
            filename: filename.clone(),
            content_type: content_type.clone(),
            size: i64::try_from(*size).unwrap_or(i64::MAX),
            object_key: object_key.clone(),
            thumbnail_key: metadata.thumbnail_key.clone(),
            width: to_i64(metadata.width),
            height: to_i64(metadata.height),
            duration_ms: to_i64(metadata.duration_ms),
            sha256: Some(metadata.sha256.clone()),
            status: status::COMPLETED.to_owned(),
            message_id: None,
            message_deleted_at: None,
            created_at: at.clone(),
            changed_at: at,
        })
    }

    /// The row as message `message_id` by `author_id`, which lists it, holds it. An
    /// upload is claimed for its message (`UploadAttached`) before the message is
    /// posted, so one the read model still shows completed, though a posted message
    /// lists it, is that message's: the read model has not caught up with the claim.
    /// `None` for someone else's upload, another message's, or one no longer served.
    pub fn held_by(mut self, message_id: &str, author_id: &str) -> Option<Self> {
        if self.owner_id != author_id {
            return None;
        }
        match self.status.as_str() {
            status::ATTACHED if self.message_id.as_deref() == Some(message_id) => Some(self),
            status::COMPLETED => {
                self.status = status::ATTACHED.to_owned();
                self.message_id = Some(message_id.to_owned());
                Some(self)
            }
            _ => None,
        }
    }

    /// Whether its objects may be downloaded: while completed (by its uploader, the
    /// only one who sees it then) or attached to a message that is not deleted. A
    /// deleted message's files stay stored for the grace period, but not served.
    pub fn served(&self) -> bool {
        self.status == status::COMPLETED
            || (self.status == status::ATTACHED && self.message_deleted_at.is_none())
    }
}

const SELECT: &str =
    "SELECT id, conversation_id, owner_id, filename, content_type, size, object_key, \
     thumbnail_key, width, height, duration_ms, sha256, status, message_id, message_deleted_at, \
     created_at, changed_at FROM attachments";

pub async fn by_id(db: &Db, id: &str) -> Result<Option<AttachmentRow>, ProjectionError> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.read)
        .await?)
}

/// The attachments a message carries and still serves (none once it is deleted).
pub async fn of_message(db: &Db, message_id: &str) -> Result<Vec<AttachmentRow>, ProjectionError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE message_id = $1 AND status = $2 AND message_deleted_at IS NULL"
    ))
    .bind(message_id)
    .bind(status::ATTACHED)
    .fetch_all(&db.read)
    .await?)
}

/// Ids of uploads attached to `message_ids` whose objects were not removed yet.
pub async fn not_removed_on(
    db: &Db,
    message_ids: &[String],
) -> Result<Vec<String>, ProjectionError> {
    let mut found = Vec::new();
    for chunk in message_ids.chunks(500) {
        let sql = format!(
            "SELECT id FROM attachments WHERE status <> $1 AND message_id IN ({})",
            crate::placeholders(2, chunk.len())
        );
        let mut query = sqlx::query_scalar(&sql).bind(status::REMOVED);
        for id in chunk {
            query = query.bind(id);
        }
        found.extend(query.fetch_all(&db.read).await?);
    }
    Ok(found)
}

/// Ids of `owner_id`'s uploads whose objects were not removed yet.
pub async fn not_removed_of(db: &Db, owner_id: &str) -> Result<Vec<String>, ProjectionError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM attachments WHERE owner_id = $1 AND status <> $2")
            .bind(owner_id)
            .bind(status::REMOVED)
            .fetch_all(&db.read)
            .await?,
    )
}

/// Ids of attachments of deleted messages whose objects are kept for the grace
/// period: the ones whose download URLs must stop working.
pub async fn of_deleted_messages(db: &Db, limit: i64) -> Result<Vec<String>, ProjectionError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM attachments WHERE status = $1 AND message_deleted_at IS NOT NULL \
         ORDER BY message_deleted_at DESC LIMIT $2",
    )
    .bind(status::ATTACHED)
    .bind(limit)
    .fetch_all(&db.read)
    .await?)
}

/// Uploads of `owner_id` still open: neither attached, refused nor removed.
pub async fn open_count(db: &Db, owner_id: &str) -> Result<i64, ProjectionError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM attachments WHERE owner_id = $1 AND status IN ($2, $3)",
    )
    .bind(owner_id)
    .bind(status::PENDING)
    .bind(status::COMPLETED)
    .fetch_one(&db.read)
    .await?;
    Ok(count)
}

/// Attachments claimed before `before` for a message the messages read model does not
/// hold: a `sendMessage` that stopped between claiming its attachments and posting
/// (the node crashed, or giving them back failed). Only meaningful once the messages
/// read model has reached a position after those claims.
pub async fn claimed_for_missing_messages(
    db: &Db,
    before: time::OffsetDateTime,
    limit: i64,
) -> Result<Vec<AttachmentRow>, ProjectionError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE status = $1 AND message_deleted_at IS NULL AND changed_at < $2 \
         AND NOT EXISTS (SELECT 1 FROM messages WHERE messages.id = attachments.message_id) \
         ORDER BY changed_at LIMIT $3"
    ))
    .bind(status::ATTACHED)
    .bind(format_time(before))
    .bind(limit)
    .fetch_all(&db.read)
    .await?)
}

/// Uploads left open (never completed, or never attached) since before `before`, and
/// attachments of messages deleted before `deleted_before`: what the sweeper removes.
pub async fn to_sweep(
    db: &Db,
    before: time::OffsetDateTime,
    deleted_before: time::OffsetDateTime,
    limit: i64,
) -> Result<Vec<AttachmentRow>, ProjectionError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} WHERE (status IN ($1, $2, $3) AND changed_at < $4) \
         OR (status = $5 AND message_deleted_at < $6) ORDER BY changed_at LIMIT $7"
    ))
    .bind(status::PENDING)
    .bind(status::COMPLETED)
    .bind(status::REJECTED)
    .bind(format_time(before))
    .bind(status::ATTACHED)
    .bind(format_time(deleted_before))
    .bind(limit)
    .fetch_all(&db.read)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(owner: &str, status: &str, message: Option<&str>) -> AttachmentRow {
        AttachmentRow {
            id: "a1".to_owned(),
            conversation_id: "c1".to_owned(),
            owner_id: owner.to_owned(),
            filename: "f.png".to_owned(),
            content_type: "image/png".to_owned(),
            size: 1,
            object_key: "files/a1".to_owned(),
            thumbnail_key: None,
            width: None,
            height: None,
            duration_ms: None,
            sha256: None,
            status: status.to_owned(),
            message_id: message.map(str::to_owned),
            message_deleted_at: None,
            created_at: "2026-01-01T00:00:00Z".to_owned(),
            changed_at: "2026-01-01T00:00:00Z".to_owned(),
        }
    }

    #[test]
    fn a_message_holds_only_its_authors_uploads_that_are_completed_or_its_own() {
        let held = row("u1", status::COMPLETED, None).held_by("m1", "u1");
        let held = held.expect("a completed upload of the author is the message's");
        assert_eq!(
            (held.status.as_str(), held.message_id.as_deref()),
            (status::ATTACHED, Some("m1"))
        );
        assert!(row("u1", status::ATTACHED, Some("m1"))
            .held_by("m1", "u1")
            .is_some());
        assert!(row("u2", status::COMPLETED, None)
            .held_by("m1", "u1")
            .is_none());
        assert!(row("u1", status::ATTACHED, Some("m2"))
            .held_by("m1", "u1")
            .is_none());
        for gone in [status::PENDING, status::REJECTED, status::REMOVED] {
            assert!(
                row("u1", gone, None).held_by("m1", "u1").is_none(),
                "{gone}"
            );
        }
    }
}
