//! The API's one error type and its one mapping to GraphQL `extensions.code`.

use async_graphql::ErrorExtensions as _;
use cqrs_es::AggregateError;
use parley_aggregates::claim::NameError;
use parley_aggregates::conversation::ConversationError;
use parley_aggregates::message::MessageError;
use parley_aggregates::upload::UploadError;
use parley_aggregates::user::UserError;
use parley_aggregates::InputError;
use parley_projections::ProjectionError;
use parley_store::StoreError;

use crate::auth::AuthError;
use crate::chat::ChatError;

/// The error codes of the client contract (shared/API.md).
pub mod code {
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const CONFLICT: &str = "CONFLICT";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const RESUME_REQUIRED: &str = "RESUME_REQUIRED";
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
}

/// Deliberately not `Display`: async-graphql converts any `Display` type into an error
/// without a code, so keeping `ApiError` out of that blanket impl forces every `?` in a
/// resolver through the one mapping below, which always sets `extensions.code`.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    BadUserInput { field: String, message: String },
    Conflict(String),
    RateLimited(crate::rate::Limited),
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn unauthenticated() -> Self {
        Self::Unauthenticated("authentication required".to_owned())
    }

    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }

    /// The message clients see; internal causes are never shown.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(message)
            | Self::Forbidden(message)
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::BadUserInput { message, .. } => message.clone(),
            Self::RateLimited(limited) => format!(
                "too many requests; try again in {} s",
                limited.retry_after_secs()
            ),
            Self::Internal(_) => "internal server error".to_owned(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => code::UNAUTHENTICATED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::BadUserInput { .. } => code::BAD_USER_INPUT,
            Self::Conflict(_) => code::CONFLICT,
            Self::RateLimited(_) => code::RATE_LIMITED,
            Self::Internal(_) => code::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        if let ApiError::Internal(source) = &error {
            // The cause chain goes to the log; clients get a generic message.
            tracing::error!(error = %source, "internal error");
        }
        let code = error.code();
        let field = match &error {
            ApiError::BadUserInput { field, .. } => Some(field.clone()),
            _ => None,
        };
        let retry_after = match &error {
            ApiError::RateLimited(limited) => Some(limited.retry_after_secs()),
            _ => None,
        };
        async_graphql::Error::new(error.message()).extend_with(|_, extensions| {
            extensions.set("code", code);
            if let Some(field) = &field {
                extensions.set("field", field.as_str());
            }
            if let Some(seconds) = retry_after {
                extensions.set("retryAfter", seconds);
            }
        })
    }
}

impl From<crate::rate::Limited> for ApiError {
    fn from(limited: crate::rate::Limited) -> Self {
        Self::RateLimited(limited)
    }
}

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::Invalid(input) => input.into(),
            ConversationError::NotFound | ConversationError::TargetNotMember => {
                Self::NotFound(error.to_string())
            }
            ConversationError::NotMember
            | ConversationError::NotPublic
            | ConversationError::NotAllowed(_)
            | ConversationError::NotInvitee
            | ConversationError::Banned
            | ConversationError::TargetBanned
            | ConversationError::Muted => Self::Forbidden(error.to_string()),
            ConversationError::NotBanned | ConversationError::NotMuted => {
                Self::Conflict(error.to_string())
            }
            ConversationError::AlreadyExists
            | ConversationError::Full { .. }
            | ConversationError::AlreadyMember
            | ConversationError::AlreadyInvited
            | ConversationError::InvitationNotPending
            | ConversationError::ClientMessageIdReused => Self::Conflict(error.to_string()),
            ConversationError::AlreadyPosted { .. } => Self::Conflict(error.to_string()),
            ConversationError::Lookup(_) => Self::internal(error),
        }
    }
}

impl From<MessageError> for ApiError {
    fn from(error: MessageError) -> Self {
        match error {
            MessageError::Invalid(input) => input.into(),
            MessageError::NotMember | MessageError::NotAllowed(_) => {
                Self::Forbidden(error.to_string())
            }
            MessageError::Deleted => Self::Conflict(error.to_string()),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        match error {
            UploadError::Invalid(input) => input.into(),
            UploadError::NotFound | UploadError::Gone => Self::NotFound(error.to_string()),
            UploadError::NotMember | UploadError::Muted => Self::Forbidden(error.to_string()),
            // Content that is not what it claims is bad input to the upload it completes.
            UploadError::Refused(_) => Self::BadUserInput {
                field: "uploadId".to_owned(),
                message: error.to_string(),
            },
            UploadError::TooManyOpen { .. }
            | UploadError::NotArrived
            | UploadError::NotCompleted
            | UploadError::AlreadyAttached => Self::Conflict(error.to_string()),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        match error {
            ChatError::Conversation(error) => error.into(),
            ChatError::Message(error) => error.into(),
            ChatError::Name(error) => error.into(),
            ChatError::Upload(error) => error.into(),
            ChatError::Input(error) => error.into(),
            ChatError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            ChatError::SlugTaken(slug) => {
                Self::Conflict(format!("the slug '{slug}' is already taken"))
            }
            ChatError::Concurrent => {
                Self::Conflict("the resource was changed concurrently; try again".to_owned())
            }
            ChatError::Corrupt(reason) => Self::internal(reason),
            ChatError::Store(error) => Self::Internal(error),
        }
    }
}

/// A resolver's `?` on a service call goes through the one mapping above.
impl From<ChatError> for async_graphql::Error {
    fn from(error: ChatError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::User(error) => error.into(),
            AuthError::Name(error) => error.into(),
            AuthError::Input(error) => error.into(),
            AuthError::Concurrent => {
                Self::Conflict("the account was changed concurrently; try again".to_owned())
            }
            AuthError::Store(error) => Self::Internal(error),
        }
    }
}

impl From<AuthError> for async_graphql::Error {
    fn from(error: AuthError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<crate::privacy::PrivacyError> for ApiError {
    fn from(error: crate::privacy::PrivacyError) -> Self {
        use crate::privacy::PrivacyError;
        match error {
            PrivacyError::Auth(error) => error.into(),
            PrivacyError::Chat(error) => error.into(),
            error => Self::internal(error),
        }
    }
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        Self::BadUserInput {
            field: error.field.to_owned(),
            message: format!("{}: {}", error.field, error.message),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::Invalid(input) => input.into(),
            UserError::AlreadyRegistered => Self::Conflict(error.to_string()),
            UserError::NotRegistered => Self::NotFound(error.to_string()),
            UserError::InvalidCredentials | UserError::InvalidRefreshToken => {
                Self::Unauthenticated(error.to_string())
            }
            UserError::Hashing(_) => Self::internal(error.to_string()),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(error: NameError) -> Self {
        match error {
            NameError::Taken => Self::Conflict(error.to_string()),
            NameError::NotOwner => Self::Forbidden(error.to_string()),
        }
    }
}

impl<E> From<AggregateError<E>> for ApiError
where
    E: std::error::Error + Send + Sync + 'static,
    ApiError: From<E>,
{
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(error) => error.into(),
            AggregateError::AggregateConflict => {
                Self::Conflict("the resource was changed concurrently; try again".to_owned())
            }
            AggregateError::DatabaseConnectionError(e)
            | AggregateError::DeserializationError(e)
            | AggregateError::UnexpectedError(e) => Self::Internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidCursor => Self::BadUserInput {
                field: "after".to_owned(),
                message: "invalid cursor".to_owned(),
            },
            other => Self::internal(other),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Store(error) => error.into(),
            ProjectionError::InvalidCursor => Self::BadUserInput {
                field: "after".to_owned(),
                message: "invalid cursor".to_owned(),
            },
            ProjectionError::InvalidPageSize => Self::BadUserInput {
                field: "first".to_owned(),
                message: "page sizes must not be negative".to_owned(),
            },
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(error: ApiError) -> String {
        let error: async_graphql::Error = error.into();
        error
            .extensions
            .and_then(|ext| ext.get("code").cloned())
            .map(|value| value.to_string().trim_matches('"').to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn every_error_carries_its_contract_code() {
        assert_eq!(
            code_of(UserError::InvalidCredentials.into()),
            "UNAUTHENTICATED"
        );
        assert_eq!(
            code_of(UserError::InvalidRefreshToken.into()),
            "UNAUTHENTICATED"
        );
        assert_eq!(code_of(NameError::Taken.into()), "CONFLICT");
        assert_eq!(code_of(UploadError::NotFound.into()), "NOT_FOUND");
        assert_eq!(code_of(UploadError::Gone.into()), "NOT_FOUND");
        assert_eq!(code_of(UploadError::NotMember.into()), "FORBIDDEN");
        assert_eq!(code_of(UploadError::Muted.into()), "FORBIDDEN");
        assert_eq!(
            code_of(UploadError::Refused("x".to_owned()).into()),
            "BAD_USER_INPUT"
        );
        assert_eq!(code_of(UploadError::NotArrived.into()), "CONFLICT");
        assert_eq!(code_of(UploadError::NotCompleted.into()), "CONFLICT");
        assert_eq!(code_of(UploadError::AlreadyAttached.into()), "CONFLICT");
        assert_eq!(
            code_of(UploadError::TooManyOpen { max: 1 }.into()),
            "CONFLICT"
        );
        assert_eq!(
            code_of(InputError::new("username", "too short").into()),
            "BAD_USER_INPUT"
        );
        assert_eq!(
            code_of(AggregateError::<UserError>::AggregateConflict.into()),
            "CONFLICT"
        );
        assert_eq!(
            code_of(ApiError::internal(std::io::Error::other("disk on fire"))),
            "INTERNAL_SERVER_ERROR"
        );
        assert_eq!(code_of(ApiError::Forbidden("no".into())), "FORBIDDEN");
        assert_eq!(code_of(ApiError::NotFound("no".into())), "NOT_FOUND");
        let limited = crate::rate::Limited {
            retry_after: std::time::Duration::from_millis(1_500),
        };
        let error: async_graphql::Error = ApiError::from(limited).into();
        let extensions = error.extensions.expect("extensions");
        assert_eq!(
            extensions.get("code").map(ToString::to_string),
            Some("\"RATE_LIMITED\"".to_owned())
        );
        assert_eq!(
            extensions.get("retryAfter").map(ToString::to_string),
            Some("2".to_owned())
        );
        assert_eq!(
            code_of(ProjectionError::InvalidCursor.into()),
            "BAD_USER_INPUT"
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let error: async_graphql::Error =
            ApiError::internal(std::io::Error::other("secret path")).into();
        assert!(!error.message.contains("secret"));
    }

    #[test]
    fn input_errors_name_their_field() {
        let error: async_graphql::Error =
            ApiError::from(InputError::new("displayName", "empty")).into();
        let field = error.extensions.and_then(|ext| ext.get("field").cloned());
        assert_eq!(
            field.map(|v| v.to_string()),
            Some("\"displayName\"".to_owned())
        );
    }

    #[test]
    fn every_domain_and_service_error_maps_to_its_code() {
        use parley_aggregates::conversation::ConversationError as C;
        use parley_aggregates::message::MessageError as M;
        let input = || InputError::new("body", "empty");
        let cases: Vec<(ApiError, &str)> = vec![
            (C::Invalid(input()).into(), "BAD_USER_INPUT"),
            (C::NotFound.into(), "NOT_FOUND"),
            (C::TargetNotMember.into(), "NOT_FOUND"),
            (C::AlreadyExists.into(), "CONFLICT"),
            (C::NotMember.into(), "FORBIDDEN"),
            (C::NotPublic.into(), "FORBIDDEN"),
            (C::NotAllowed("no").into(), "FORBIDDEN"),
            (C::AlreadyMember.into(), "CONFLICT"),
            (C::Banned.into(), "FORBIDDEN"),
            (C::TargetBanned.into(), "FORBIDDEN"),
            (C::Muted.into(), "FORBIDDEN"),
            (C::NotBanned.into(), "CONFLICT"),
            (C::NotMuted.into(), "CONFLICT"),
            (C::AlreadyInvited.into(), "CONFLICT"),
            (C::InvitationNotPending.into(), "CONFLICT"),
            (C::NotInvitee.into(), "FORBIDDEN"),
            (C::Full { max: 2 }.into(), "CONFLICT"),
            (C::ClientMessageIdReused.into(), "CONFLICT"),
            (
                C::AlreadyPosted {
                    message_id: uuid::Uuid::nil(),
                }
                .into(),
                "CONFLICT",
            ),
            (M::Invalid(input()).into(), "BAD_USER_INPUT"),
            (M::NotMember.into(), "FORBIDDEN"),
            (M::NotAllowed("no").into(), "FORBIDDEN"),
            (M::Deleted.into(), "CONFLICT"),
            (UserError::Invalid(input()).into(), "BAD_USER_INPUT"),
            (UserError::AlreadyRegistered.into(), "CONFLICT"),
            (UserError::NotRegistered.into(), "NOT_FOUND"),
            (UserError::InvalidCredentials.into(), "UNAUTHENTICATED"),
            (UserError::InvalidRefreshToken.into(), "UNAUTHENTICATED"),
            (
                UserError::Hashing("x".into()).into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (NameError::Taken.into(), "CONFLICT"),
            (NameError::NotOwner.into(), "FORBIDDEN"),
            (ChatError::Conversation(C::Muted).into(), "FORBIDDEN"),
            (ChatError::Message(M::Deleted).into(), "CONFLICT"),
            (ChatError::Name(NameError::Taken).into(), "CONFLICT"),
            (ChatError::Input(input()).into(), "BAD_USER_INPUT"),
            (ChatError::NotFound("message").into(), "NOT_FOUND"),
            (ChatError::SlugTaken("general".into()).into(), "CONFLICT"),
            (ChatError::Concurrent.into(), "CONFLICT"),
            (
                ChatError::Corrupt("bad row".into()).into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (
                ChatError::Store(Box::new(std::io::Error::other("db"))).into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (
                AuthError::User(UserError::InvalidCredentials).into(),
                "UNAUTHENTICATED",
            ),
            (AuthError::Name(NameError::Taken).into(), "CONFLICT"),
            (AuthError::Input(input()).into(), "BAD_USER_INPUT"),
            (AuthError::Concurrent.into(), "CONFLICT"),
            (
                AuthError::Store(Box::new(std::io::Error::other("db"))).into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (ProjectionError::InvalidPageSize.into(), "BAD_USER_INPUT"),
            (ProjectionError::InvalidCursor.into(), "BAD_USER_INPUT"),
            (StoreError::InvalidCursor.into(), "BAD_USER_INPUT"),
            (
                ProjectionError::Store(StoreError::InvalidCursor).into(),
                "BAD_USER_INPUT",
            ),
            (
                StoreError::Database(sqlx::Error::PoolClosed).into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (
                StoreError::Decode {
                    position: "0.1".into(),
                    event_type: "X".into(),
                    source: serde_json::from_str::<u8>("x").expect_err("not a number"),
                }
                .into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (
                ProjectionError::Database(sqlx::Error::PoolClosed).into(),
                "INTERNAL_SERVER_ERROR",
            ),
            (
                ApiError::RateLimited(crate::rate::Limited {
                    retry_after: std::time::Duration::from_secs(3),
                }),
                "RATE_LIMITED",
            ),
            (ApiError::Unauthenticated("no".into()), "UNAUTHENTICATED"),
            (
                ApiError::BadUserInput {
                    field: "x".into(),
                    message: "no".into(),
                },
                "BAD_USER_INPUT",
            ),
            (ApiError::Conflict("no".into()), "CONFLICT"),
        ];
        for (error, code) in cases {
            let shown = format!("{error:?}");
            assert_eq!(code_of(error), code, "{shown}");
        }
    }
}
