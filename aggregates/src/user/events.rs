use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::values::{DisplayName, Username};

/// Events of the `User` aggregate. Names and payloads are frozen once shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        user_id: Uuid,
        username: Username,
        display_name: DisplayName,
        password_hash: String,
        #[serde(with = "time::serde::rfc3339")]
        registered_at: OffsetDateTime,
    },
    SessionStarted {
        family_id: Uuid,
        token_hash: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        started_at: OffsetDateTime,
    },
    SessionRefreshed {
        family_id: Uuid,
        token_hash: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        refreshed_at: OffsetDateTime,
    },
    /// A rotated-away secret was presented again; the family is revoked.
    RefreshTokenReused {
        family_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        detected_at: OffsetDateTime,
    },
    SessionEnded {
        family_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        ended_at: OffsetDateTime,
    },
    /// Revokes every session of the user.
    PasswordChanged {
        password_hash: String,
        #[serde(with = "time::serde::rfc3339")]
        changed_at: OffsetDateTime,
    },
    /// The account and its personal content are erased (the user's own request, or an
    /// operator's with `erased_by: None`). Ends every session; the store destroys the
    /// user's data keys once this is recorded.
    AccountErased {
        user_id: Uuid,
        erased_by: Option<Uuid>,
        reason: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        erased_at: OffsetDateTime,
    },
}

impl UserEvent {
    /// The stored type name of `AccountErased`, for reading just those from the log.
    pub const ERASED: &'static str = "AccountErased";
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SessionRefreshed { .. } => "SessionRefreshed",
            Self::RefreshTokenReused { .. } => "RefreshTokenReused",
            Self::SessionEnded { .. } => "SessionEnded",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::AccountErased { .. } => Self::ERASED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
