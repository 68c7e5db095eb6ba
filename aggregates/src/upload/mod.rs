//! The `Upload` aggregate: one file a member sends towards a conversation, from the
//! signed upload URL it is given (`UploadCreated`), through the server's check of what
//! actually arrived (`UploadCompleted` with its metadata, or `UploadRejected`), to the
//! one message that carries it (`UploadAttached`) and the removal of its objects
//! (`AttachmentRemoved`).
//!
//! The bytes themselves are never seen here: the command service inspects the stored
//! object and hands the facts it found ([`Arrived`]) to `Complete`, and this aggregate
//! decides whether they match what was declared. Object keys are derived from the
//! upload's id alone, so no user input ever reaches a storage path.

mod values;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::{allows, Action, Role};
use crate::values::InputError;
pub use values::{ContentType, Filename};

/// How long an upload may stay unused (never completed, or completed and never
/// attached) before its objects are removed.
pub const ABANDONED_AFTER: time::Duration = time::Duration::hours(24);

/// Most attachments one message may carry.
pub const MAX_PER_MESSAGE: usize = 10;

/// Where the client's bytes land. Replaced by [`file_key`] once checked, so a signed
/// upload URL that is still valid can never change what was verified.
pub fn incoming_key(upload_id: Uuid) -> String {
    format!("incoming/{upload_id}")
}

/// Where the checked (and, for images, re-encoded) content is served from.
pub fn file_key(upload_id: Uuid) -> String {
    format!("files/{upload_id}")
}

/// Where an image's thumbnail is served from.
pub fn thumbnail_key(upload_id: Uuid) -> String {
    format!("thumbs/{upload_id}")
}

/// The uploader's standing in the conversation, looked up by the command service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// `None` when not a member.
    pub role: Option<Role>,
    pub muted: bool,
}

/// What the command service found stored under the incoming key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrived {
    pub size: u64,
    /// The type read from the content's first bytes; `None` when they name no known
    /// binary format (text, SVG, HTML …).
    pub sniffed_type: Option<String>,
    /// Whether the content is a program: a native executable or library, or a script
    /// starting with `#!`.
    pub executable: bool,
    /// Set when the content is an image that could not be decoded within the limits
    /// (corrupt, or larger than allowed when decoded: a decompression bomb).
    pub undecodable: Option<String>,
    pub metadata: Metadata,
}

/// What a completed upload is known to be. Every field defaults, so metadata whose key
/// was destroyed (crypto-shredding) reads as nothing known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// SHA-256 of the content as served, hex.
    pub sha256: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    /// Set when a thumbnail was stored (at [`thumbnail_key`]).
    pub thumbnail_key: Option<String>,
}

/// Why a removal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalReason {
    /// Never completed, or never attached, within [`ABANDONED_AFTER`].
    Abandoned,
    /// The message carrying it was deleted, and the grace period has passed.
    MessageDeleted,
    /// Its owner's account was erased.
    AccountErased,
    /// The message carrying it passed its conversation's retention window.
    Expired,
}

#[derive(Debug, Clone)]
pub enum UploadCommand {
    Create {
        upload_id: Uuid,
        owner_id: Uuid,
        conversation_id: Uuid,
        standing: Standing,
        filename: String,
        content_type: String,
        size: i64,
        max_bytes: u64,
        /// The owner's uploads not yet attached nor removed, counted by the service.
        open_uploads: u64,
        max_open_uploads: u64,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// The service found the object; the aggregate judges it.
    Complete {
        actor_id: Uuid,
        arrived: Arrived,
        at: OffsetDateTime,
    },
    /// Records a refusal judged by `Complete`, so the upload stops counting as open.
    Reject { reason: String, at: OffsetDateTime },
    /// Claims the upload for one message, before the message is posted.
    Attach {
        actor_id: Uuid,
        conversation_id: Uuid,
        message_id: Uuid,
        /// A retried post with the same client id finds its own claim and goes on.
        client_message_id: Option<String>,
        at: OffsetDateTime,
    },
    /// Gives up a claim whose message was not posted after all.
    Detach {
        message_id: Uuid,
        at: OffsetDateTime,
    },
    /// Records that the objects were deleted from the blob store.
    Remove {
        reason: RemovalReason,
        at: OffsetDateTime,
    },
}

/// Events of the `Upload` aggregate. Names and payloads are frozen once shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UploadEvent {
    UploadCreated {
        upload_id: Uuid,
        conversation_id: Uuid,
        owner_id: Uuid,
        filename: String,
        content_type: String,
        size: u64,
        object_key: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    UploadCompleted {
        upload_id: Uuid,
        conversation_id: Uuid,
        owner_id: Uuid,
        filename: String,
        content_type: String,
        size: u64,
        object_key: String,
        metadata: Metadata,
        #[serde(with = "time::serde::rfc3339")]
        completed_at: OffsetDateTime,
    },
    UploadRejected {
        upload_id: Uuid,
        conversation_id: Uuid,
        owner_id: Uuid,
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        rejected_at: OffsetDateTime,
    },
    UploadAttached {
        upload_id: Uuid,
        conversation_id: Uuid,
        owner_id: Uuid,
        message_id: Uuid,
        client_message_id: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        attached_at: OffsetDateTime,
    },
    UploadDetached {
        upload_id: Uuid,
        conversation_id: Uuid,
        message_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        detached_at: OffsetDateTime,
    },
    AttachmentRemoved {
        upload_id: Uuid,
        conversation_id: Uuid,
        owner_id: Uuid,
        reason: RemovalReason,
        #[serde(with = "time::serde::rfc3339")]
        removed_at: OffsetDateTime,
    },
}

impl DomainEvent for UploadEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UploadCreated { .. } => "UploadCreated",
            Self::UploadCompleted { .. } => "UploadCompleted",
            Self::UploadRejected { .. } => "UploadRejected",
            Self::UploadAttached { .. } => "UploadAttached",
            Self::UploadDetached { .. } => "UploadDetached",
            Self::AttachmentRemoved { .. } => "AttachmentRemoved",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Invalid(#[from] InputError),
    /// Unknown, or another user's: the two are not told apart.
    #[error("upload not found")]
    NotFound,
    #[error("you are not a member of this conversation")]
    NotMember,
    #[error("you cannot post in this conversation while muted")]
    Muted,
    #[error("too many uploads in progress ({max}); complete or send them first")]
    TooManyOpen { max: u64 },
    #[error("the upload's content has not arrived (or did not match its declared size)")]
    NotArrived,
    /// What arrived is not what was declared, or is not allowed at all.
    #[error("{0}")]
    Refused(String),
    #[error("the upload is not complete")]
    NotCompleted,
    #[error("the attachment is already part of a message")]
    AlreadyAttached,
    #[error("the upload was refused or removed")]
    Gone,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    New,
    Pending,
    Completed,
    Attached,
    Rejected,
    Removed,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub id: Option<Uuid>,
    pub status: Status,
    pub owner_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub metadata: Option<Metadata>,
    pub message_id: Option<Uuid>,
    pub client_message_id: Option<String>,
    /// When the upload stopped being open work: created, completed, or its message
    /// deleted; the sweeper measures its deadlines from here.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
}

impl Upload {
    /// The owner, checked: someone else's upload is reported as not found.
    fn owned_by(&self, actor_id: Uuid) -> Result<(Uuid, Uuid, Uuid), UploadError> {
        match (self.id, self.owner_id, self.conversation_id) {
            (Some(id), Some(owner), Some(conversation)) if owner == actor_id => {
                Ok((id, owner, conversation))
            }
            _ => Err(UploadError::NotFound),
        }
    }

    fn ids(&self) -> Result<(Uuid, Uuid, Uuid), UploadError> {
        match (self.id, self.owner_id, self.conversation_id) {
            (Some(id), Some(owner), Some(conversation)) => Ok((id, owner, conversation)),
            _ => Err(UploadError::NotFound),
        }
    }
}

const PROGRAMS: &str = "programs and scripts cannot be attached";

/// Whether `arrived` is what was declared, and allowed at all. `Err` names why not,
/// in words safe to show the uploader. The filename is judged apart, by the aggregate.
pub fn judge(declared_type: &str, declared_size: u64, arrived: &Arrived) -> Result<(), String> {
    if arrived.size != declared_size {
        return Err(format!(
            "{} bytes arrived where {declared_size} were declared",
            arrived.size
        ));
    }
    let sniffed = arrived.sniffed_type.as_deref();
    if arrived.executable
        || values::is_program_type(declared_type)
        || sniffed.is_some_and(values::is_program_sniffed)
    {
        return Err(PROGRAMS.to_owned());
    }
    match sniffed {
        // Text formats are recognised by a guess at their first characters (an `<html`
        // here, an `<?xml` there), which says nothing against a declared text type:
        // they are served as downloads whatever they are.
        Some(found) if values::is_text_type(found) && !values::is_binary_type(declared_type) => {}
        // Likewise a certificate, found by a PEM header or two bytes that begin any DER
        // structure.
        Some(found)
            if values::is_certificate_type(found) && !values::is_binary_type(declared_type) => {}
        // Only a declared type that is rendered inline must be what the content is; an
        // unspecified one is served as a download, and programs were refused above.
        Some(_) if values::is_unspecified_type(declared_type) => {}
        Some(found) if !values::same_type(declared_type, found) => {
            return Err(format!(
                "the content is {found}, not the declared {declared_type}"
            ));
        }
        None if values::is_binary_type(declared_type) => {
            return Err(format!("the content is not {declared_type}"));
        }
        _ => {}
    }
    if let Some(reason) = &arrived.undecodable {
        return Err(format!("the image cannot be read: {reason}"));
    }
    Ok(())
}

impl Aggregate for Upload {
    const TYPE: &'static str = "Upload";
    type Command = UploadCommand;
    type Event = UploadEvent;
    type Error = UploadError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UploadCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UploadError> {
        let event = match command {
            UploadCommand::Create {
                upload_id,
                owner_id,
                conversation_id,
                standing,
                filename,
                content_type,
                size,
                max_bytes,
                open_uploads,
                max_open_uploads,
                expires_at,
                at,
            } => {
                if self.id.is_some() {
                    return Err(UploadError::NotFound);
                }
                let role = standing.role.ok_or(UploadError::NotMember)?;
                if !allows(role, Action::Post) || standing.muted {
                    return Err(UploadError::Muted);
                }
                let filename = Filename::parse(&filename, "filename")?;
                // A desktop runs such a file by its name whatever its bytes: refused
                // before any bytes are sent.
                if values::is_program_name(filename.as_str()) {
                    return Err(InputError::new("filename", PROGRAMS).into());
                }
                let content_type = ContentType::parse(&content_type, "contentType")?;
                let size = u64::try_from(size)
                    .ok()
                    .filter(|size| (1..=max_bytes).contains(size))
                    .ok_or_else(|| {
                        InputError::new("size", format!("must be between 1 and {max_bytes} bytes"))
                    })?;
                if open_uploads >= max_open_uploads {
                    return Err(UploadError::TooManyOpen {
                        max: max_open_uploads,
                    });
                }
                UploadEvent::UploadCreated {
                    upload_id,
                    conversation_id,
                    owner_id,
                    filename: filename.into_string(),
                    content_type: content_type.into_string(),
                    size,
                    object_key: incoming_key(upload_id),
                    expires_at,
                    created_at: at,
                }
            }
            UploadCommand::Complete {
                actor_id,
                arrived,
                at,
            } => {
                let (upload_id, owner_id, conversation_id) = self.owned_by(actor_id)?;
                match self.status {
                    Status::Pending => {}
                    // A retried completion answers with what the first one found.
                    Status::Completed | Status::Attached => return Ok(()),
                    Status::New => return Err(UploadError::NotFound),
                    Status::Rejected | Status::Removed => return Err(UploadError::Gone),
                }
                // `Create` refuses such names now; an upload created before it did may
                // still be pending.
                if values::is_program_name(&self.filename) {
                    return Err(UploadError::Refused(PROGRAMS.to_owned()));
                }
                judge(&self.content_type, self.size, &arrived).map_err(UploadError::Refused)?;
                UploadEvent::UploadCompleted {
                    upload_id,
                    conversation_id,
                    owner_id,
                    filename: self.filename.clone(),
                    content_type: self.content_type.clone(),
                    size: arrived.size,
                    object_key: file_key(upload_id),
                    metadata: arrived.metadata,
                    completed_at: at,
                }
            }
            UploadCommand::Reject { reason, at } => {
                let (upload_id, owner_id, conversation_id) = self.ids()?;
                if self.status != Status::Pending {
                    return Ok(());
                }
                UploadEvent::UploadRejected {
                    upload_id,
                    conversation_id,
                    owner_id,
                    reason,
                    rejected_at: at,
                }
            }
            UploadCommand::Attach {
                actor_id,
                conversation_id,
                message_id,
                client_message_id,
                at,
            } => {
                let (upload_id, owner_id, own_conversation) = self.owned_by(actor_id)?;
                if own_conversation != conversation_id {
                    return Err(InputError::new(
                        "attachmentIds",
                        "an attachment was uploaded to another conversation",
                    )
                    .into());
                }
                match self.status {
                    Status::Completed => {}
                    Status::Pending => return Err(UploadError::NotCompleted),
                    Status::Attached => {
                        let retry = client_message_id.is_some()
                            && self.client_message_id == client_message_id;
                        return if retry {
                            Ok(())
                        } else {
                            Err(UploadError::AlreadyAttached)
                        };
                    }
                    Status::New => return Err(UploadError::NotFound),
                    Status::Rejected | Status::Removed => return Err(UploadError::Gone),
                }
                UploadEvent::UploadAttached {
                    upload_id,
                    conversation_id,
                    owner_id,
                    message_id,
                    client_message_id,
                    attached_at: at,
                }
            }
            UploadCommand::Detach { message_id, at } => {
                let (upload_id, _, conversation_id) = self.ids()?;
                if self.status != Status::Attached || self.message_id != Some(message_id) {
                    return Ok(());
                }
                UploadEvent::UploadDetached {
                    upload_id,
                    conversation_id,
                    message_id,
                    detached_at: at,
                }
            }
            UploadCommand::Remove { reason, at } => {
                let (upload_id, owner_id, conversation_id) = self.ids()?;
                // An upload sent just now is no longer abandoned: the sweep's verdict
                // was read before the message claimed it, and its bytes must stay.
                let sent_meanwhile =
                    reason == RemovalReason::Abandoned && self.status == Status::Attached;
                if self.status == Status::Removed || sent_meanwhile {
                    return Ok(());
                }
                UploadEvent::AttachmentRemoved {
                    upload_id,
                    conversation_id,
                    owner_id,
                    reason,
                    removed_at: at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: UploadEvent) {
        match event {
            UploadEvent::UploadCreated {
                upload_id,
                conversation_id,
                owner_id,
                filename,
                content_type,
                size,
                created_at,
                ..
            } => {
                self.id = Some(upload_id);
                self.owner_id = Some(owner_id);
                self.conversation_id = Some(conversation_id);
                self.filename = filename;
                self.content_type = content_type;
                self.size = size;
                self.status = Status::Pending;
                self.since = Some(created_at);
            }
            UploadEvent::UploadCompleted {
                metadata,
                completed_at,
                ..
            } => {
                self.status = Status::Completed;
                self.metadata = Some(metadata);
                self.since = Some(completed_at);
            }
            UploadEvent::UploadRejected { .. } => self.status = Status::Rejected,
            UploadEvent::UploadAttached {
                message_id,
                client_message_id,
                ..
            } => {
                self.status = Status::Attached;
                self.message_id = Some(message_id);
                self.client_message_id = client_message_id;
            }
            UploadEvent::UploadDetached { .. } => {
                self.status = Status::Completed;
                self.message_id = None;
                self.client_message_id = None;
            }
            UploadEvent::AttachmentRemoved { .. } => self.status = Status::Removed,
        }
    }
}

#[cfg(test)]
mod tests;
