//! Query resolvers.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result, ID};

use super::error::ApiError;
use super::types::User;
use super::{viewer, UserLoader};

pub struct Query;

/// Loads a user through the request's dataloader.
pub(crate) async fn load_user(ctx: &Context<'_>, id: &str) -> Result<Option<User>, ApiError> {
    let loader = ctx.data_unchecked::<DataLoader<UserLoader>>();
    loader
        .load_one(id.to_owned())
        .await
        .map(|row| row.map(User::from))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[Object]
impl Query {
    /// `me`: the signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let user_id = viewer(ctx)?;
        Ok(load_user(ctx, &user_id.to_string()).await?)
    }

    /// `user`: a user by id; null when there is none.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        viewer(ctx)?;
        let Ok(id) = uuid::Uuid::parse_str(&id) else {
            return Ok(None);
        };
        Ok(load_user(ctx, &id.to_string()).await?)
    }
}
