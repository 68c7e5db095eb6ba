//! The `User` aggregate: an account, its password hash and its refresh-token sessions.
//!
//! Sessions are token families: a refresh token names its family and carries a secret
//! whose SHA-256 the family remembers. Each refresh rotates the secret; presenting a
//! secret the family no longer holds means a token was stolen and replayed, so the whole
//! family is revoked.

mod aggregate;
mod commands;
mod error;
mod events;
mod services;

pub use aggregate::{Session, User, MAX_SESSIONS};
pub use commands::{NewSession, UserCommand};
pub use error::UserError;
pub use events::UserEvent;
pub use services::{PasswordHasher, UserServices};

#[cfg(test)]
mod tests;
