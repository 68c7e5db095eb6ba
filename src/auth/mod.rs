//! Accounts and authentication: password hashing, access and refresh tokens, and the
//! account operations (register, login, refresh, logout, change password).

mod password;
mod revocations;
mod service;
mod tokens;

pub use password::Argon2Hasher;
pub use revocations::Revocations;
pub use service::{Accounts, AuthError, AuthTokens};
pub use tokens::{AccessClaims, Grant, RefreshToken, TokenKeys};
