//! Mutation resolvers. Each returns only after the read models include its effect.

use async_graphql::{Context, InputObject, Object, Result};

use super::error::ApiError;
use super::query::load_user;
use super::types::AuthPayload;
use super::{state, viewer};
use crate::auth::AuthTokens;

pub struct Mutation;

#[derive(InputObject)]
pub struct RegisterInput {
    pub username: String,
    pub password: String,
    pub display_name: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub username: String,
    pub password: String,
}

async fn payload(ctx: &Context<'_>, tokens: AuthTokens) -> Result<AuthPayload, ApiError> {
    state(ctx).settle(tokens.position).await;
    let user = load_user(ctx, &tokens.user_id.to_string())
        .await?
        .ok_or_else(|| ApiError::internal("user missing from the read model"))?;
    Ok(AuthPayload {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        user,
    })
}

#[Object]
impl Mutation {
    /// `register`: creates an account and signs it in.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<AuthPayload> {
        let state = state(ctx);
        let meta = state.meta(None);
        let tokens = state
            .accounts
            .register(&input.username, &input.password, &input.display_name, &meta)
            .await?;
        Ok(payload(ctx, tokens).await?)
    }

    /// `login`: exchanges a username and password for tokens.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<AuthPayload> {
        let state = state(ctx);
        let meta = state.meta(None);
        let tokens = state
            .accounts
            .login(&input.username, &input.password, &meta)
            .await?;
        Ok(payload(ctx, tokens).await?)
    }

    /// `refreshToken`: rotates a refresh token into a new token pair.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload> {
        let state = state(ctx);
        let meta = state.meta(None);
        let tokens = state.accounts.refresh(&refresh_token, &meta).await?;
        Ok(payload(ctx, tokens).await?)
    }

    /// `logout`: ends the refresh token's session; false if it was not open.
    async fn logout(&self, ctx: &Context<'_>, refresh_token: String) -> Result<bool> {
        let state = state(ctx);
        let meta = state.meta(None);
        Ok(state.accounts.logout(&refresh_token, &meta).await?)
    }

    /// `changePassword`: revokes every refresh token of the user.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let user_id = viewer(ctx)?;
        let state = state(ctx);
        let meta = state.meta(Some(user_id));
        let position = state
            .accounts
            .change_password(user_id, &current_password, &new_password, &meta)
            .await?;
        state.settle(position).await;
        Ok(true)
    }
}
