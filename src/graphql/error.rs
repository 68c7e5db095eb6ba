//! The API's one error type and its one mapping to GraphQL `extensions.code`.

use async_graphql::ErrorExtensions as _;
use cqrs_es::AggregateError;
use parley_aggregates::claim::NameError;
use parley_aggregates::user::UserError;
use parley_aggregates::InputError;
use parley_projections::ProjectionError;

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

    /// Stored data that fails a rule it passed when written: a bug, not bad input.
    pub fn internal_input(error: InputError) -> Self {
        Self::internal(error.to_string())
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

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        match error {
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
}
