//! GraphQL object types.

use async_graphql::{SimpleObject, ID};
use parley_projections::users::UserRow;

/// A Parley account.
#[derive(SimpleObject, Clone)]
pub struct User {
    pub id: ID,
    pub username: String,
    pub display_name: String,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: ID(row.id),
            username: row.username,
            display_name: row.display_name,
        }
    }
}

/// Tokens for a signed-in session.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Short-lived JWT for the `Authorization: Bearer` header.
    pub access_token: String,
    /// Single-use token for `refreshToken`; each use returns a new one.
    pub refresh_token: String,
    pub user: User,
}
