//! Accounts and authentication: password hashing, access and refresh tokens, and the
//! account operations (register, login, refresh, logout, change password).

mod password;
mod service;
mod tokens;

pub use password::Argon2Hasher;
pub use service::{Accounts, AuthTokens};
pub use tokens::{AccessClaims, RefreshToken, TokenKeys};
