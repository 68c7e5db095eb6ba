//! Query resolvers.

use async_graphql::connection::Connection;
use async_graphql::{Context, Object, Result, ID};
use parley_projections::page::page_size;
use parley_projections::{conversations, messages, moderation, notifications, users};

use super::error::ApiError;
use parley_aggregates::policy::{self, ReadAccess};
use parley_aggregates::values::{parse_search_query, Slug};

use super::parse_id;
use super::types::{
    connection, loaders, my_role, readable_conversation, require_access, user,
    visible_conversation, Conversation, ConversationKind, Invitation, InvitationStatus, Message,
    ModerationAction, Notification, User,
};
use super::{state, viewer};

pub struct Query;

/// Now, by the server's clock, as the read models compare times.
fn now_ms(ctx: &Context<'_>) -> i64 {
    parley_projections::access::unix_ms(state(ctx).clock.now())
}

fn kind_name(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "DIRECT",
        ConversationKind::Group => "GROUP",
        ConversationKind::Channel => "CHANNEL",
    }
}

/// A message the viewer may read, or `NOT_FOUND` / `FORBIDDEN`.
pub(crate) async fn readable_message(ctx: &Context<'_>, id: &str) -> Result<Message, ApiError> {
    let id = parse_id(id, "message")?;
    let row = loaders(ctx)
        .messages
        .load_one(id.to_string())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound("message not found".to_owned()))?;
    readable_conversation(ctx, &row.conversation_id).await?;
    Ok(Message::from(row))
}

#[Object]
impl Query {
    /// `me`: the signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let user_id = viewer(ctx)?;
        Ok(user(ctx, &user_id.to_string()).await?)
    }

    /// The current end of the event log. Take it before loading history and pass it as
    /// a subscription's `after`: nothing that happens in between is missed.
    async fn live_cursor(&self, ctx: &Context<'_>) -> Result<String> {
        viewer(ctx)?;
        let head = parley_store::log::head(&state(ctx).db)
            .await
            .map_err(ApiError::from)?;
        Ok(head.to_cursor())
    }

    /// `user`: a user by id.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        viewer(ctx)?;
        let id = parse_id(&id, "user")?;
        Ok(Some(user(ctx, &id.to_string()).await?.ok_or_else(
            || ApiError::NotFound("user not found".to_owned()),
        )?))
    }

    /// `searchUsers`: by username or display-name prefix.
    async fn search_users(
        &self,
        ctx: &Context<'_>,
        query: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, User>> {
        viewer(ctx)?;
        let query = parse_search_query(&query, "query").map_err(ApiError::from)?;
        let page = users::search(
            &state(ctx).db,
            query,
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, User::from))
    }

    /// `conversations`: the viewer's, most recent activity first.
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        kind: Option<ConversationKind>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Conversation>> {
        let me = viewer(ctx)?;
        let page = conversations::for_user(
            &state(ctx).db,
            &me.to_string(),
            kind.map(kind_name),
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Conversation::from))
    }

    /// `conversation`: one the viewer may read, or preview as a pending invitee.
    async fn conversation(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Conversation>> {
        viewer(ctx)?;
        let id = parse_id(&id, "conversation")?;
        Ok(Some(Conversation::from(
            visible_conversation(ctx, &id.to_string(), ReadAccess::Preview).await?,
        )))
    }

    /// `conversationBySlug`: a channel by its slug.
    async fn conversation_by_slug(
        &self,
        ctx: &Context<'_>,
        slug: String,
    ) -> Result<Option<Conversation>> {
        viewer(ctx)?;
        let not_found = || ApiError::NotFound("conversation not found".to_owned());
        // What cannot be a slug names no channel (and a NUL no database takes).
        let slug = Slug::parse(&slug, "slug").map_err(|_| not_found())?;
        let row = conversations::by_slug(&state(ctx).db, slug.as_str())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(not_found)?;
        require_access(ctx, &row.id, ReadAccess::Preview).await?;
        Ok(Some(Conversation::from(row)))
    }

    /// `searchConversations`: by title or slug, among public channels and the viewer's own.
    async fn search_conversations(
        &self,
        ctx: &Context<'_>,
        query: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Conversation>> {
        let me = viewer(ctx)?;
        let query = parse_search_query(&query, "query").map_err(ApiError::from)?;
        let page = conversations::search(
            &state(ctx).db,
            &me.to_string(),
            now_ms(ctx),
            query,
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Conversation::from))
    }

    /// `publicChannels`: newest first.
    async fn public_channels(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Conversation>> {
        let me = viewer(ctx)?;
        let page = conversations::public_channels(
            &state(ctx).db,
            &me.to_string(),
            now_ms(ctx),
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Conversation::from))
    }

    /// `messages`: oldest to newest; `last: 50` is the newest fifty.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Connection<String, Message>> {
        viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?;
        readable_conversation(ctx, &id.to_string()).await?;
        let first = first
            .map(|n| page_size(Some(n)))
            .transpose()
            .map_err(ApiError::from)?;
        let last = last
            .map(|n| page_size(Some(n)))
            .transpose()
            .map_err(ApiError::from)?;
        let page = messages::history(
            &state(ctx).db,
            &id.to_string(),
            first,
            after.as_deref(),
            last,
            before.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Message::from))
    }

    /// `message`: one the viewer may read.
    async fn message(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Message>> {
        viewer(ctx)?;
        Ok(Some(readable_message(ctx, &id).await?))
    }

    /// `thread`: replies to a message, oldest first.
    async fn thread(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Message>> {
        viewer(ctx)?;
        let root = readable_message(ctx, &message_id).await?;
        let page = messages::thread(
            &state(ctx).db,
            &root.0.id,
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Message::from))
    }

    /// `searchMessages`: full text, only in conversations the viewer may read.
    async fn search_messages(
        &self,
        ctx: &Context<'_>,
        query: String,
        conversation_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Message>> {
        let me = viewer(ctx)?;
        let query = parse_search_query(&query, "query").map_err(ApiError::from)?;
        let conversation = match conversation_id {
            Some(id) => {
                let id = parse_id(&id, "conversation")?;
                Some(readable_conversation(ctx, &id.to_string()).await?.id)
            }
            None => None,
        };
        let page = messages::search(
            &state(ctx).db,
            &me.to_string(),
            now_ms(ctx),
            query,
            conversation.as_deref(),
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Message::from))
    }

    /// `moderationLog`: owners and admins only, newest first.
    async fn moderation_log(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ModerationAction>> {
        viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?.to_string();
        readable_conversation(ctx, &id).await?;
        if !policy::may_read_moderation_log(my_role(ctx, &id).await?) {
            return Err(ApiError::Forbidden(
                "only owners and admins can read the moderation log".to_owned(),
            )
            .into());
        }
        let page = moderation::log(
            &state(ctx).db,
            &id,
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, ModerationAction))
    }

    /// `notifications`: the viewer's, newest first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        unread_only: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Notification>> {
        let me = viewer(ctx)?;
        let page = notifications::for_user(
            &state(ctx).db,
            &me.to_string(),
            unread_only.unwrap_or(false),
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Notification))
    }

    /// `invitations`: addressed to the viewer, newest first.
    async fn invitations(
        &self,
        ctx: &Context<'_>,
        status: Option<InvitationStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Invitation>> {
        let me = viewer(ctx)?;
        let status = status.map(|s| match s {
            InvitationStatus::Pending => "PENDING",
            InvitationStatus::Accepted => "ACCEPTED",
            InvitationStatus::Declined => "DECLINED",
            InvitationStatus::Revoked => "REVOKED",
        });
        let page = conversations::invitations_for(
            &state(ctx).db,
            &me.to_string(),
            status,
            after.as_deref(),
            page_size(first).map_err(ApiError::from)?,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Invitation))
    }
}
