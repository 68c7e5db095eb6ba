use crate::values::InputError;

/// Why a user command was refused. Messages are safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Invalid(#[from] InputError),
    #[error("this account already exists")]
    AlreadyRegistered,
    #[error("no such user")]
    NotRegistered,
    /// Wrong password or unknown user: one message for both, by design.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}
