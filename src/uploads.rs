//! The upload command service behind `createUpload` and `completeUpload`, and the
//! sweeper that removes what is no longer served.
//!
//! It does the I/O the `Upload` aggregate must not: it reads the uploader's standing
//! from the conversation, asks the blob store for a signed upload URL, reads back what
//! arrived and inspects it (`blob::inspect`), stores the checked content and its
//! thumbnail under keys of their own, and deletes objects. The aggregate decides.

use std::sync::Arc;

use cqrs_es::AggregateError;
use parley_aggregates::conversation::{Conversation, ConversationServices};
use parley_aggregates::upload::{
    file_key, incoming_key, judge, thumbnail_key, RemovalReason, Standing, Status, Upload,
    UploadCommand, UploadError, UploadEvent,
};
use parley_projections::attachments::{self, status, AttachmentRow};
use parley_store::{log, CommandBus, CommandMeta, Db};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::blob::{inspect, BlobStore, Served, UploadTarget};
use crate::chat::{ChatError, Made, Written};

/// The limits uploads are held to, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_bytes: u64,
    pub max_open: u64,
    /// How long an upload URL stays valid.
    pub url_ttl: Duration,
    /// How long a download URL stays valid.
    pub download_ttl: Duration,
    /// How long the objects of a deleted message's attachments are kept.
    pub deleted_grace: Duration,
}

/// How old a claim on an attachment must be before the sweeper may give it back for
/// want of its message: far beyond any request's lifetime, so that no `sendMessage`
/// is still between claiming and posting.
const STRANDED_AFTER: Duration = Duration::hours(1);

pub struct Uploads {
    db: Db,
    uploads: CommandBus<Upload>,
    conversations: CommandBus<Conversation>,
    blobs: Arc<dyn BlobStore>,
    limits: UploadLimits,
    /// See [`Uploads::admit`].
    admission: Vec<tokio::sync::Mutex<()>>,
}

/// A created upload: where to send its bytes.
pub struct CreatedUpload {
    pub id: Uuid,
    pub target: UploadTarget,
    pub expires_at: OffsetDateTime,
}

impl Uploads {
    pub fn new(
        db: &Db,
        services: ConversationServices,
        blobs: Arc<dyn BlobStore>,
        limits: UploadLimits,
    ) -> Self {
        Self {
            db: db.clone(),
            uploads: CommandBus::new(db, ()),
            conversations: CommandBus::new(db, services),
            blobs,
            limits,
            admission: (0..16).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Held by `createUpload` from counting the user's open uploads until the new one
    /// is in the read model, so that concurrent calls on this node cannot pass the
    /// limit together. Users share a few locks; holding one costs one append.
    pub async fn admit(&self, user: Uuid) -> tokio::sync::MutexGuard<'_, ()> {
        let slot = user.as_u128() % self.admission.len() as u128;
        self.admission[usize::try_from(slot).unwrap_or_default()]
            .lock()
            .await
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn limits(&self) -> UploadLimits {
        self.limits
    }

    /// `createUpload`: a member who may post gets a URL for exactly the declared size
    /// and type.
    pub async fn create(
        &self,
        viewer: Uuid,
        conversation_id: Uuid,
        filename: &str,
        content_type: &str,
        size: i64,
        meta: &CommandMeta,
    ) -> Result<Written<CreatedUpload>, ChatError> {
        let conversation = self
            .conversations
            .load(&conversation_id.to_string())
            .await?;
        if conversation.id.is_none() {
            return Err(ChatError::NotFound("conversation"));
        }
        let standing = Standing {
            role: conversation.role_of(viewer).ok(),
            muted: conversation.is_muted(viewer, meta.at),
        };
        let open = attachments::open_count(&self.db, &viewer.to_string()).await?;
        let upload_id = Uuid::now_v7();
        let expires_at = meta.at + self.limits.url_ttl;
        let committed = self
            .uploads
            .execute(
                &upload_id.to_string(),
                UploadCommand::Create {
                    upload_id,
                    owner_id: viewer,
                    conversation_id,
                    standing,
                    filename: filename.to_owned(),
                    content_type: content_type.to_owned(),
                    size,
                    max_bytes: self.limits.max_bytes,
                    open_uploads: u64::try_from(open).unwrap_or_default(),
                    max_open_uploads: self.limits.max_open,
                    expires_at,
                    at: meta.at,
                },
                meta,
            )
            .await?;
        // The type as the aggregate normalised it is the one the URL signs.
        let Some(UploadEvent::UploadCreated {
            content_type, size, ..
        }) = committed.events.first().map(|e| &e.payload)
        else {
            return Err(ChatError::Corrupt(
                "createUpload recorded no upload".to_owned(),
            ));
        };
        let target = self
            .blobs
            .upload_target(&incoming_key(upload_id), content_type, *size, expires_at)
            .await
            .map_err(blob_error)?;
        Ok(Written {
            value: CreatedUpload {
                id: upload_id,
                target,
                expires_at,
            },
            position: committed.position,
        })
    }

    /// `completeUpload`: checks what arrived and records it as an attachment, or
    /// refuses it and deletes it.
    pub async fn complete(
        &self,
        viewer: Uuid,
        upload_id: Uuid,
        meta: &CommandMeta,
    ) -> Result<Written<Made<AttachmentRow>>, ChatError> {
        let upload = self.uploads.load(&upload_id.to_string()).await?;
        if upload.owner_id != Some(viewer) {
            return Err(UploadError::NotFound.into());
        }
        match upload.status {
            Status::Pending => {}
            // A retry: the first completion may still be settling.
            Status::Completed => {
                return Ok(Written {
                    value: Made::existing(upload_id),
                    position: Some(log::head(&self.db).await?),
                })
            }
            // Its files are the message's now, served (or not) as the message is.
            Status::Attached => return Err(UploadError::AlreadyAttached.into()),
            Status::New => return Err(UploadError::NotFound.into()),
            Status::Rejected | Status::Removed => return Err(UploadError::Gone.into()),
        }
        let incoming = incoming_key(upload_id);
        let Some(size) = self.blobs.size(&incoming).await.map_err(blob_error)? else {
            return Err(UploadError::NotArrived.into());
        };
        let inspected = if size == upload.size {
            let bytes = self
                .blobs
                .read(&incoming, upload.size)
                .await
                .map_err(blob_error)?
                .ok_or(UploadError::NotArrived)?;
            let thumb = thumbnail_key(upload_id);
            Some(
                tokio::task::spawn_blocking(move || inspect::inspect(bytes, &thumb))
                    .await
                    .map_err(|e| ChatError::Store(Box::new(e)))?,
            )
        } else {
            None
        };
        let arrived = match &inspected {
            Some(inspected) => inspected.arrived.clone(),
            // Not read at all: the size alone refuses it.
            None => parley_aggregates::upload::Arrived {
                size,
                sniffed_type: None,
                executable: false,
                undecodable: None,
                metadata: Default::default(),
            },
        };
        // Judged here first only to avoid storing what the aggregate will refuse.
        if let (Ok(()), Some(inspected)) = (
            judge(&upload.content_type, upload.size, &arrived),
            inspected,
        ) {
            let file = file_key(upload_id);
            let served = |content_type| Served {
                filename: &upload.filename,
                content_type,
            };
            self.blobs
                .write(&file, inspected.content, served(&upload.content_type))
                .await
                .map_err(blob_error)?;
            if let Some(thumbnail) = inspected.thumbnail {
                self.blobs
                    .write(&thumbnail_key(upload_id), thumbnail, served("image/png"))
                    .await
                    .map_err(blob_error)?;
            }
        }
        let command = UploadCommand::Complete {
            actor_id: viewer,
            arrived,
            at: meta.at,
        };
        match self
            .uploads
            .execute(&upload_id.to_string(), command, meta)
            .await
        {
            Ok(committed) => {
                self.delete_quietly(&incoming).await;
                Ok(Written {
                    value: Made::of(upload_id, &committed, AttachmentRow::completed),
                    position: committed.position,
                })
            }
            Err(AggregateError::UserError(UploadError::Refused(reason))) => {
                let reject = UploadCommand::Reject {
                    reason: reason.clone(),
                    at: meta.at,
                };
                self.uploads
                    .execute(&upload_id.to_string(), reject, meta)
                    .await?;
                self.delete_objects(upload_id).await;
                Err(UploadError::Refused(reason).into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Gives back attachments claimed by a `sendMessage` that never posted its message
    /// (it stopped in between: a crash, or a failed release), so that they can be sent
    /// again or, unsent, are swept as abandoned. Claims younger than [`STRANDED_AFTER`]
    /// are left alone, as is everything while the messages read model is behind the log.
    async fn release_stranded(&self, now: OffsetDateTime) -> Result<(), ChatError> {
        let head = log::head(&self.db).await?;
        let messages = parley_projections::runner::load_checkpoint(&self.db, "messages").await?;
        if messages.is_none_or(|checkpoint| checkpoint.position < head) {
            return Ok(());
        }
        let stranded =
            attachments::claimed_for_missing_messages(&self.db, now - STRANDED_AFTER, 500).await?;
        for row in stranded {
            let Some(Ok(message_id)) = row.message_id.as_deref().map(Uuid::parse_str) else {
                continue;
            };
            let meta = CommandMeta::new(None, now);
            let detach = UploadCommand::Detach {
                message_id,
                at: now,
            };
            self.uploads.execute(&row.id, detach, &meta).await?;
            tracing::warn!(upload = %row.id, %message_id, "released an attachment claimed by a message never posted");
        }
        Ok(())
    }

    async fn delete_quietly(&self, key: &str) {
        if let Err(error) = self.blobs.delete(key).await {
            tracing::warn!(%error, key, "cannot delete an object; the sweeper will retry");
        }
    }

    /// Deletes every object an upload may have; `false` if one could not be.
    async fn delete_objects(&self, upload_id: Uuid) -> bool {
        let mut all = true;
        let (file, thumbnail) = (file_key(upload_id), thumbnail_key(upload_id));
        let withheld = [&file, &thumbnail].map(|key| crate::blob::withheld_key(key));
        for key in [incoming_key(upload_id), file, thumbnail]
            .into_iter()
            .chain(withheld.into_iter().flatten())
        {
            if let Err(error) = self.blobs.delete(&key).await {
                tracing::warn!(%error, key, "cannot delete an object");
                all = false;
            }
        }
        all
    }

    /// Notes, before an abandoned upload's removal is recorded, that its objects are
    /// to go (`blob_purges`): whatever stops the sweep between recording the removal and
    /// deleting them, a later sweep finds them there.
    async fn note_purge(&self, id: Uuid, now: OffsetDateTime) -> Result<(), ChatError> {
        sqlx::query(
            "INSERT INTO blob_purges (upload_id, noted_at) VALUES ($1, $2) \
             ON CONFLICT (upload_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(parley_store::format_time(now))
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Deletes the objects of the uploads noted in `blob_purges` whose removal was
    /// recorded, and forgets each once that is done. A noted upload that was not removed
    /// (sent meanwhile, or the sweep stopped before recording) is only forgotten: a
    /// sent one keeps its objects, an abandoned one is found by the sweep again. What
    /// cannot be deleted now stays noted for the next sweep.
    async fn purge_noted(&self) -> Result<(), ChatError> {
        let noted: Vec<String> =
            sqlx::query_scalar("SELECT upload_id FROM blob_purges ORDER BY noted_at LIMIT 500")
                .fetch_all(&self.db.read)
                .await?;
        for id in noted {
            let removed = match Uuid::parse_str(&id) {
                Ok(upload_id) => {
                    let upload = self.uploads.load(&id).await?;
                    (upload.status == Status::Removed).then_some(upload_id)
                }
                Err(_) => None,
            };
            if let Some(upload_id) = removed {
                if !self.delete_objects(upload_id).await {
                    continue;
                }
            }
            sqlx::query("DELETE FROM blob_purges WHERE upload_id = $1")
                .bind(&id)
                .execute(&self.db.write)
                .await?;
        }
        Ok(())
    }

    /// Stops the download URLs already issued for a deleted message's attachments from
    /// serving them (no new ones are issued). Called once the deletion is settled;
    /// every sweep does it again for all deleted messages in their grace period, for
    /// what a crash or a failed call left out.
    pub async fn withhold_message(&self, message_id: Uuid) -> Result<(), ChatError> {
        let ids = attachments::not_removed_on(&self.db, &[message_id.to_string()]).await?;
        self.withhold(&ids).await;
        Ok(())
    }

    async fn withhold(&self, ids: &[String]) {
        for id in ids {
            let Ok(upload_id) = Uuid::parse_str(id) else {
                continue;
            };
            for key in [file_key(upload_id), thumbnail_key(upload_id)] {
                if let Err(error) = self.blobs.withhold(&key).await {
                    tracing::warn!(%error, key, "cannot withhold an object; the sweeper will retry");
                }
            }
        }
    }

    /// Removes the objects of uploads left open for [`ABANDONED_AFTER`] and of
    /// attachments whose message was deleted more than the grace period ago, recording
    /// each removal. Returns how many were removed.
    ///
    /// [`ABANDONED_AFTER`]: parley_aggregates::upload::ABANDONED_AFTER
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<usize, ChatError> {
        self.purge_noted().await?;
        self.withhold(&attachments::of_deleted_messages(&self.db, 500).await?)
            .await;
        self.release_stranded(now).await?;
        let rows = attachments::to_sweep(
            &self.db,
            now - parley_aggregates::upload::ABANDONED_AFTER,
            now - self.limits.deleted_grace,
            500,
        )
        .await?;
        let mut removed = 0;
        let mut last = None;
        for row in rows {
            let Ok(id) = Uuid::parse_str(&row.id) else {
                continue;
            };
            let abandoned = row.status != status::ATTACHED;
            // A deleted message's files are deleted before the removal is recorded, so
            // that a failed deletion is found again by the next sweep. An abandoned
            // upload can still be sent until its removal is recorded (the aggregate
            // then refuses it), so its bytes go only after, and it is noted first, so
            // that they are found again if they cannot go now.
            if !abandoned && !self.delete_objects(id).await {
                continue;
            }
            if abandoned {
                self.note_purge(id, now).await?;
            }
            let reason = if abandoned {
                RemovalReason::Abandoned
            } else {
                RemovalReason::MessageDeleted
            };
            let meta = CommandMeta::new(None, now);
            let committed = self
                .uploads
                .execute(&row.id, UploadCommand::Remove { reason, at: now }, &meta)
                .await?;
            // No event: removed already, or sent since the row was read (a noted one
            // is settled by the next sweep's `purge_noted`).
            if committed.events.is_empty() {
                continue;
            }
            last = committed.position.or(last);
            removed += 1;
        }
        // The objects of what this sweep removed as abandoned, with what earlier ones
        // could not delete.
        self.purge_noted().await?;
        if removed > 0 {
            tracing::info!(removed, ?last, "swept attachments");
        }
        let strays = self.sweep_incoming(now).await?;
        if strays > 0 {
            tracing::info!(strays, "deleted upload bytes no upload was waiting for");
        }
        Ok(removed)
    }

    /// Removes the objects of every upload of `owner_id` not removed yet, recording
    /// each removal with `reason`. Returns how many were removed.
    pub async fn remove_owned_by(
        &self,
        owner_id: Uuid,
        reason: RemovalReason,
        now: OffsetDateTime,
    ) -> Result<usize, ChatError> {
        let ids = attachments::not_removed_of(&self.db, &owner_id.to_string()).await?;
        self.remove(&ids, reason, now).await
    }

    /// Removes the objects of the uploads attached to `message_ids`, recording each
    /// removal with `reason`. Returns how many were removed.
    pub async fn remove_attached_to(
        &self,
        message_ids: &[String],
        reason: RemovalReason,
        now: OffsetDateTime,
    ) -> Result<usize, ChatError> {
        let ids = attachments::not_removed_on(&self.db, message_ids).await?;
        self.remove(&ids, reason, now).await
    }

    async fn remove(
        &self,
        ids: &[String],
        reason: RemovalReason,
        now: OffsetDateTime,
    ) -> Result<usize, ChatError> {
        let mut removed = 0;
        for id in ids {
            let Ok(upload_id) = Uuid::parse_str(id) else {
                continue;
            };
            if !self.delete_objects(upload_id).await {
                continue;
            }
            let meta = CommandMeta::new(None, now);
            let committed = self
                .uploads
                .execute(id, UploadCommand::Remove { reason, at: now }, &meta)
                .await?;
            removed += usize::from(!committed.events.is_empty());
        }
        Ok(removed)
    }

    /// Deletes objects under `incoming/` whose upload is no longer open and whose upload
    /// URL has expired: bytes sent again to a URL still valid after the upload was
    /// completed, refused or removed (a presigned S3 PUT cannot be revoked), or a body
    /// that finished arriving after its upload was completed. Once the URL has expired
    /// nothing can land there again, so one deletion is final. The upload's own record
    /// does not change: what it serves, if anything, is under `files/`. An open upload's
    /// bytes are left to `completeUpload`, or to the sweep of abandoned uploads.
    /// Returns how many were deleted.
    async fn sweep_incoming(&self, now: OffsetDateTime) -> Result<usize, ChatError> {
        let keys = self
            .blobs
            .list("incoming", 1000)
            .await
            .map_err(blob_error)?;
        let mut deleted = 0;
        for key in keys {
            let Ok((_, id)) = crate::blob::parse_key(&key) else {
                continue;
            };
            // Not yet in the read model: just created, so its URL is valid.
            let Some(row) = attachments::by_id(&self.db, &id.to_string()).await? else {
                continue;
            };
            let created = OffsetDateTime::parse(
                &row.created_at,
                &time::format_description::well_known::Rfc3339,
            );
            let url_expired = created.is_ok_and(|at| at + self.limits.url_ttl < now);
            if row.status == status::PENDING || !url_expired {
                continue;
            }
            match self.blobs.delete(&key).await {
                Ok(()) => deleted += 1,
                Err(error) => tracing::warn!(%error, key, "cannot delete an object"),
            }
        }
        Ok(deleted)
    }

    /// A signed URL for `key` of `row`, valid for the download TTL from `now`.
    pub async fn download_url(
        &self,
        row: &AttachmentRow,
        key: &str,
        content_type: &str,
        now: OffsetDateTime,
    ) -> Result<String, ChatError> {
        self.blobs
            .download_url(
                key,
                crate::blob::Served {
                    filename: &row.filename,
                    content_type,
                },
                now + self.limits.download_ttl,
            )
            .await
            .map_err(blob_error)
    }
}

fn blob_error(error: crate::blob::BlobError) -> ChatError {
    ChatError::Store(Box::new(error))
}
