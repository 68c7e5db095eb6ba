//! Mutation resolvers. Each waits (bounded) for the read models to include its effect;
//! past the wait it still succeeds, answering with what its own events made.

use async_graphql::{Context, InputObject, Object, Result, ID};
use parley_aggregates::conversation::{ConversationEvent, Visibility as DomainVisibility};
use parley_aggregates::member::NotificationLevel as DomainLevel;
use parley_aggregates::policy::Role as DomainRole;
use parley_projections::attachments::{self, AttachmentRow};
use parley_projections::conversations::{self, Founding, InvitationRow};
use parley_projections::messages::MessageRow;
use parley_projections::moderation;
use time::OffsetDateTime;

use super::error::ApiError;
use super::parse_id;
use super::types::{
    my_role, readable_conversation, user, Attachment, AuthPayload, Conversation, HttpHeader,
    Invitation, Message, ModerationAction, NotificationLevel, PresenceStatus, Role, Upload, User,
    Visibility,
};
use super::{client_ip, state, viewer};
use crate::app::AppState;
use crate::auth::{AuthError, AuthTokens};
use crate::chat::{ChatError, Made, Moderation, Sent, Written};
use crate::live::Signal;
use parley_aggregates::upload::{UploadError, MAX_PER_MESSAGE as MAX_ATTACHMENTS};
use parley_aggregates::user::UserError;
use parley_aggregates::InputError;
use parley_store::CommandMeta;
use std::future::Future;
use std::sync::Arc;

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

#[derive(InputObject)]
pub struct CreateGroupInput {
    pub title: String,
    pub member_ids: Vec<ID>,
}

#[derive(InputObject)]
pub struct CreateChannelInput {
    pub name: String,
    pub slug: Option<String>,
    pub description: Option<String>,
    pub visibility: Visibility,
}

#[derive(InputObject)]
pub struct UpdateConversationInput {
    pub conversation_id: ID,
    pub title: Option<String>,
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct SendMessageInput {
    pub conversation_id: ID,
    pub body: String,
    pub reply_to_id: Option<ID>,
    pub client_message_id: Option<String>,
    pub attachment_ids: Option<Vec<ID>>,
}

#[derive(InputObject)]
pub struct CreateUploadInput {
    pub conversation_id: ID,
    /// Shown to downloaders; any path is dropped.
    pub filename: String,
    /// The media type the bytes will be sent with, such as `image/png`.
    pub content_type: String,
    /// The exact number of bytes that will be sent.
    pub size: i32,
}

/// Runs a command as the signed-in viewer, stamped with the request's metadata, and
/// returns what it wrote once every read model shows it (read-your-writes). The one way
/// a resolver writes.
async fn write<T, F, Fut>(ctx: &Context<'_>, command: F) -> Result<T, ApiError>
where
    F: FnOnce(Arc<AppState>, uuid::Uuid, CommandMeta) -> Fut,
    Fut: Future<Output = Result<Written<T>, ChatError>>,
{
    let me = viewer(ctx)?;
    let state = state(ctx).clone();
    let meta = state.meta(Some(me));
    let written = command(state.clone(), me, meta).await?;
    state.settle(written.position).await;
    Ok(written.value)
}

/// The read model's row for what a write made, or else the row the write's own events
/// make. The write stands either way: past the consistency wait, or behind a failed
/// projector, the mutation still succeeds (the lag is logged and counted), so a client
/// never retries a write that was taken as one that failed.
fn stored_or_made<Row>(
    stored: Option<Row>,
    made: Option<Row>,
    what: &str,
) -> Result<Row, ApiError> {
    stored
        .or(made)
        .ok_or_else(|| ApiError::internal(format!("{what} missing from the read model")))
}

/// A conversation a mutation wrote. The aggregate authorised the write, so read access
/// is not judged again (its content is, field by field); a creation the read models do
/// not show yet is answered as it was founded.
async fn conversation(
    ctx: &Context<'_>,
    id: uuid::Uuid,
    made: Option<Founding>,
) -> Result<Conversation, ApiError> {
    let stored = conversations::by_id(&state(ctx).db, &id.to_string()).await?;
    match (stored, made) {
        (Some(row), _) => Ok(Conversation::from(row)),
        (None, Some(founding)) => Ok(Conversation::from(founding)),
        (None, None) => Err(ApiError::internal(
            "conversation missing from the read model",
        )),
    }
}

/// The message a mutation wrote. The aggregate authorised the write; read access is not
/// checked again, so a post accepted just before its author was banned is still
/// answered with the message rather than an error.
async fn message(
    ctx: &Context<'_>,
    id: uuid::Uuid,
    made: Option<MessageRow>,
) -> Result<Message, ApiError> {
    let stored = parley_projections::messages::by_id(&state(ctx).db, &id.to_string()).await?;
    Ok(Message::from(stored_or_made(stored, made, "message")?))
}

async fn invitation(
    ctx: &Context<'_>,
    id: uuid::Uuid,
    made: Option<InvitationRow>,
) -> Result<Invitation, ApiError> {
    let stored = conversations::invitation(&state(ctx).db, &id.to_string()).await?;
    Ok(Invitation(stored_or_made(stored, made, "invitation")?))
}

/// An invitation a mutation answered: as the read model holds it, with the answer
/// applied should the read model not show it yet.
async fn answered(
    ctx: &Context<'_>,
    made: Made<ConversationEvent>,
) -> Result<Invitation, ApiError> {
    let stored = conversations::invitation(&state(ctx).db, &made.id.to_string()).await?;
    let row = stored_or_made(stored, None, "invitation")?;
    Ok(Invitation(match &made.row {
        Some(answer) => row.answered(answer),
        None => row,
    }))
}

async fn payload(ctx: &Context<'_>, tokens: AuthTokens) -> Result<AuthPayload, ApiError> {
    state(ctx).settle(tokens.position).await;
    let user = match user(ctx, &tokens.user_id.to_string()).await? {
        Some(user) => user,
        None => User::from(stored_or_made(None, tokens.registered, "user")?),
    };
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
        state
            .rate
            .register(client_ip(ctx))
            .map_err(ApiError::from)?;
        let meta = state.meta(None);
        let tokens = state
            .accounts
            .register(&input.username, &input.password, &input.display_name, &meta)
            .await?;
        Ok(payload(ctx, tokens).await?)
    }

    /// `login`: exchanges a username and password for tokens. Failures slow down the
    /// account and the address they come from.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<AuthPayload> {
        let state = state(ctx);
        let (ip, account) = (client_ip(ctx), input.username.trim().to_lowercase());
        state
            .rate
            .may_try_login(&account, ip)
            .map_err(ApiError::from)?;
        let meta = state.meta(None);
        let tokens = match state
            .accounts
            .login(&input.username, &input.password, &meta)
            .await
        {
            Ok(tokens) => tokens,
            Err(error) => {
                if let AuthError::User(UserError::InvalidCredentials) = error {
                    state.rate.login_failed(&account, ip);
                }
                return Err(error.into());
            }
        };
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

    /// `deleteAccount`: erases the caller. Their sessions end, their display name,
    /// messages (which stay in place as erased tombstones) and files become unreadable
    /// everywhere, the event log included; moderation history keeps their id.
    async fn delete_account(&self, ctx: &Context<'_>, password: String) -> Result<bool> {
        let user_id = viewer(ctx)?;
        let state = state(ctx);
        let meta = state.meta(Some(user_id));
        let open = state.accounts.open_sessions(user_id).await?;
        let (erasure, position) = state
            .privacy
            .erase(user_id, Some(&password), None, &meta)
            .await
            .map_err(ApiError::from)?;
        state.accounts.revoke(open);
        state.settle(position).await;
        state
            .privacy
            .shred(&erasure, state.clock.now())
            .await
            .map_err(ApiError::from)?;
        Ok(true)
    }

    /// `createDirectConversation`: the existing one if any.
    async fn create_direct_conversation(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
    ) -> Result<Conversation> {
        let other = parse_id(&user_id, "user")?;
        let made = write(ctx, |s, me, meta| async move {
            s.chat.create_direct(me, other, &meta).await
        })
        .await?;
        Ok(conversation(ctx, made.id, made.row).await?)
    }

    /// `createGroup`: the creator is its owner.
    async fn create_group(
        &self,
        ctx: &Context<'_>,
        input: CreateGroupInput,
    ) -> Result<Conversation> {
        let member_ids: Vec<String> = input.member_ids.iter().map(|id| id.to_string()).collect();
        let made = write(ctx, |s, me, meta| async move {
            s.chat
                .create_group(me, &input.title, &member_ids, &meta)
                .await
        })
        .await?;
        Ok(conversation(ctx, made.id, made.row).await?)
    }

    /// `createChannel`: the slug is derived from the name unless given.
    async fn create_channel(
        &self,
        ctx: &Context<'_>,
        input: CreateChannelInput,
    ) -> Result<Conversation> {
        let visibility = match input.visibility {
            Visibility::Public => DomainVisibility::Public,
            Visibility::Private => DomainVisibility::Private,
        };
        let made = write(ctx, |s, me, meta| async move {
            let slug = input.slug.as_deref();
            let chat = &s.chat;
            chat.create_channel(me, &input.name, slug, input.description, visibility, &meta)
                .await
        })
        .await?;
        Ok(conversation(ctx, made.id, made.row).await?)
    }

    /// `joinChannel`: public channels only.
    async fn join_channel(&self, ctx: &Context<'_>, conversation_id: ID) -> Result<Conversation> {
        let id = parse_id(&conversation_id, "conversation")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.join(me, id, &meta).await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `leaveConversation`.
    async fn leave_conversation(&self, ctx: &Context<'_>, conversation_id: ID) -> Result<bool> {
        let id = parse_id(&conversation_id, "conversation")?;
        Ok(write(ctx, |s, me, meta| async move {
            s.chat.leave(me, id, &meta).await
        })
        .await?)
    }

    /// `updateConversation`: owners and admins.
    async fn update_conversation(
        &self,
        ctx: &Context<'_>,
        input: UpdateConversationInput,
    ) -> Result<Conversation> {
        let id = parse_id(&input.conversation_id, "conversation")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat
                .update(me, id, input.title, input.description, &meta)
                .await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `setRetention`: how many days the conversation keeps messages (1 to 36,500);
    /// `null` returns to the server's default. Owners and admins.
    async fn set_retention(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        days: Option<i32>,
    ) -> Result<Conversation> {
        let id = parse_id(&conversation_id, "conversation")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat
                .set_retention(me, id, days.map(i64::from), &meta)
                .await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `setNotificationLevel`.
    async fn set_notification_level(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        level: NotificationLevel,
    ) -> Result<Conversation> {
        let level = match level {
            NotificationLevel::All => DomainLevel::All,
            NotificationLevel::Mentions => DomainLevel::Mentions,
            NotificationLevel::None => DomainLevel::None,
        };
        let id = parse_id(&conversation_id, "conversation")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.set_notification_level(me, id, level, &meta).await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `inviteMember`.
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
    ) -> Result<Invitation> {
        let (id, user) = (
            parse_id(&conversation_id, "conversation")?,
            parse_id(&user_id, "user")?,
        );
        let made = write(ctx, |s, me, meta| async move {
            s.chat.invite(me, id, user, &meta).await
        })
        .await?;
        Ok(invitation(ctx, made.id, made.row).await?)
    }

    /// `acceptInvitation`: the invitee joins.
    async fn accept_invitation(
        &self,
        ctx: &Context<'_>,
        invitation_id: ID,
    ) -> Result<Conversation> {
        let id = parse_id(&invitation_id, "invitation")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.accept(me, id, &meta).await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `declineInvitation`.
    async fn decline_invitation(&self, ctx: &Context<'_>, invitation_id: ID) -> Result<Invitation> {
        let id = parse_id(&invitation_id, "invitation")?;
        let made = write(ctx, |s, me, meta| async move {
            s.chat.decline(me, id, &meta).await
        })
        .await?;
        Ok(answered(ctx, made).await?)
    }

    /// `revokeInvitation`: the inviter or an admin.
    async fn revoke_invitation(&self, ctx: &Context<'_>, invitation_id: ID) -> Result<Invitation> {
        let id = parse_id(&invitation_id, "invitation")?;
        let made = write(ctx, |s, me, meta| async move {
            s.chat.revoke(me, id, &meta).await
        })
        .await?;
        Ok(answered(ctx, made).await?)
    }

    /// `sendMessage`: a retry with the same `clientMessageId` returns the first message.
    async fn send_message(&self, ctx: &Context<'_>, input: SendMessageInput) -> Result<Message> {
        let conversation_id = parse_id(&input.conversation_id, "conversation")?;
        let reply_to = input
            .reply_to_id
            .as_ref()
            .map(|id| parse_id(id, "message"))
            .transpose()?;
        let attachments = parley_aggregates::values::parse_id_list(
            &input
                .attachment_ids
                .unwrap_or_default()
                .iter()
                .map(|id| id.as_str())
                .collect::<Vec<_>>(),
            "attachmentIds",
            MAX_ATTACHMENTS,
        )
        .map_err(ApiError::from)?;
        let (body, client_message_id) = (input.body, input.client_message_id);
        let sent = write(ctx, |s, me, meta| async move {
            s.chat
                .send(
                    me,
                    conversation_id,
                    body,
                    reply_to,
                    client_message_id,
                    attachments,
                    &meta,
                )
                .await
        })
        .await?;
        // A new post is answered with its row as posted (the read models hold the same
        // by now, unless they missed the consistency wait), saving a read per message.
        match sent {
            Sent::Posted(Made { row: Some(row), .. }) => Ok(Message::from(row)),
            Sent::Posted(Made { id, row: None }) => Ok(message(ctx, id, None).await?),
            Sent::Retried { id, as_posted } => Ok(message(ctx, id, as_posted).await?),
        }
    }

    /// `createUpload`: a signed URL for one upload of exactly the declared size and
    /// type to a conversation the viewer may post in.
    async fn create_upload(&self, ctx: &Context<'_>, input: CreateUploadInput) -> Result<Upload> {
        let conversation_id = parse_id(&input.conversation_id, "conversation")?;
        let uploads = state(ctx).uploads.clone();
        let _admitted = uploads.admit(viewer(ctx)?).await;
        let created = write(ctx, |s, me, meta| async move {
            s.uploads
                .create(
                    me,
                    conversation_id,
                    &input.filename,
                    &input.content_type,
                    i64::from(input.size),
                    &meta,
                )
                .await
        })
        .await?;
        Ok(Upload {
            id: ID(created.id.to_string()),
            upload_url: created.target.url,
            method: created.target.method.to_owned(),
            headers: created
                .target
                .headers
                .into_iter()
                .map(|(name, value)| HttpHeader { name, value })
                .collect(),
            expires_at: created.expires_at,
        })
    }

    /// `completeUpload`: checks what arrived (size, real type, image limits) and makes
    /// it an attachment for `sendMessage`, or refuses and deletes it.
    async fn complete_upload(&self, ctx: &Context<'_>, upload_id: ID) -> Result<Attachment> {
        let id = parse_id(&upload_id, "upload")?;
        let me = viewer(ctx)?;
        let state = state(ctx).clone();
        let meta = state.meta(Some(me));
        let made = match state.uploads.complete(me, id, &meta).await {
            Ok(written) => {
                state.settle(written.position).await;
                written.value
            }
            Err(error) => {
                // A refusal is recorded (the upload ends, and stops counting as open):
                // it too is answered only once the read models show it.
                if matches!(error, ChatError::Upload(UploadError::Refused(_))) {
                    let head = parley_store::log::head(&state.db)
                        .await
                        .map_err(ApiError::from)?;
                    state.settle(Some(head)).await;
                }
                return Err(ApiError::from(error).into());
            }
        };
        let stored = attachments::by_id(&state.db, &id.to_string())
            .await
            .map_err(ApiError::from)?;
        // A row still pending is one the completion has not reached yet.
        let row = match (stored, made.row) {
            (Some(stored), Some(made)) if stored.status == attachments::status::PENDING => {
                AttachmentRow {
                    created_at: stored.created_at,
                    ..made
                }
            }
            (stored, made) => stored_or_made(stored, made, "attachment")?,
        };
        Ok(Attachment::from_row(ctx, row).await?)
    }

    /// `editMessage`: the author only; earlier bodies are kept in `edits`.
    async fn edit_message(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        body: String,
    ) -> Result<Message> {
        let id = parse_id(&message_id, "message")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.edit(me, id, body, &meta).await
        })
        .await?;
        Ok(message(ctx, id, None).await?)
    }

    /// `deleteMessage`: the author, or a moderator with a reason.
    async fn delete_message(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        reason: Option<String>,
    ) -> Result<Message> {
        let id = parse_id(&message_id, "message")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.delete(me, id, reason, &meta).await
        })
        .await?;
        // The deletion stands either way; the sweeper withholds what this leaves out.
        if let Err(error) = state(ctx).uploads.withhold_message(id).await {
            tracing::warn!(?error, "cannot withhold a deleted message's attachments");
        }
        Ok(message(ctx, id, None).await?)
    }

    /// `addReaction`: idempotent.
    async fn add_reaction(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        emoji: String,
    ) -> Result<Message> {
        let id = parse_id(&message_id, "message")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.react(me, id, emoji, true, &meta).await
        })
        .await?;
        Ok(message(ctx, id, None).await?)
    }

    /// `removeReaction`: idempotent.
    async fn remove_reaction(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        emoji: String,
    ) -> Result<Message> {
        let id = parse_id(&message_id, "message")?;
        let id = write(ctx, |s, me, meta| async move {
            s.chat.react(me, id, emoji, false, &meta).await
        })
        .await?;
        Ok(message(ctx, id, None).await?)
    }

    /// `markRead`: forward only; an older message changes nothing.
    async fn mark_read(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        message_id: ID,
    ) -> Result<Conversation> {
        let (id, message) = (
            parse_id(&conversation_id, "conversation")?,
            parse_id(&message_id, "message")?,
        );
        let id = write(ctx, |s, me, meta| async move {
            s.chat.mark_read(me, id, message, &meta).await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `markUnread`: moves the marker to just before the message.
    async fn mark_unread(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        message_id: ID,
    ) -> Result<Conversation> {
        let (id, message) = (
            parse_id(&conversation_id, "conversation")?,
            parse_id(&message_id, "message")?,
        );
        let id = write(ctx, |s, me, meta| async move {
            s.chat.mark_unread(me, id, message, &meta).await
        })
        .await?;
        Ok(conversation(ctx, id, None).await?)
    }

    /// `markNotificationsRead`: how many became read.
    async fn mark_notifications_read(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<i32> {
        let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
        Ok(write(ctx, |s, me, meta| async move {
            s.chat.mark_notifications_read(me, &ids, &meta).await
        })
        .await?)
    }

    /// `markAllNotificationsRead`: how many became read.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> Result<i32> {
        Ok(write(ctx, |s, me, meta| async move {
            s.chat.mark_all_notifications_read(me, &meta).await
        })
        .await?)
    }

    /// `setTyping`: members only. Typing ends by itself about six seconds after the
    /// last `true`, so a client repeats `true` while the user keeps typing.
    async fn set_typing(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        typing: bool,
    ) -> Result<bool> {
        let me = viewer(ctx)?;
        let id = parse_id(&conversation_id, "conversation")?;
        readable_conversation(ctx, &id.to_string()).await?;
        let state = state(ctx);
        if !parley_aggregates::policy::may_type(my_role(ctx, &id.to_string()).await?) {
            return Err(
                ApiError::Forbidden("only members can type in a conversation".to_owned()).into(),
            );
        }
        state
            .signals
            .publish(Signal::Typing {
                conversation_id: id,
                user_id: me,
                typing,
            })
            .await;
        Ok(true)
    }

    /// `heartbeat`: keeps the caller online for a minute without a WebSocket.
    async fn heartbeat(&self, ctx: &Context<'_>) -> Result<bool> {
        let me = viewer(ctx)?;
        state(ctx).presence.heartbeat(me, None).await?;
        Ok(true)
    }

    /// `setPresence`: `ONLINE` or `AWAY` (also a heartbeat). `OFFLINE` is not a choice:
    /// a user is offline when their connections and heartbeats stop.
    async fn set_presence(&self, ctx: &Context<'_>, status: PresenceStatus) -> Result<User> {
        let me = viewer(ctx)?;
        let away = match status {
            PresenceStatus::Online => false,
            PresenceStatus::Away => true,
            PresenceStatus::Offline => {
                return Err(ApiError::from(InputError::new(
                    "status",
                    "must be ONLINE or AWAY; OFFLINE follows from closing connections",
                ))
                .into())
            }
        };
        state(ctx).presence.heartbeat(me, Some(away)).await?;
        Ok(user(ctx, &me.to_string())
            .await?
            .ok_or_else(|| ApiError::internal("the signed-in user is missing"))?)
    }

    /// `setMemberRole`: the owner only; `OWNER` moves with `transferOwnership`.
    async fn set_member_role(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        role: Role,
        reason: Option<String>,
    ) -> Result<ModerationAction> {
        let role = match role {
            Role::Owner => DomainRole::Owner,
            Role::Admin => DomainRole::Admin,
            Role::Member => DomainRole::Member,
        };
        Ok(moderate(
            ctx,
            conversation_id,
            user_id,
            Moderation::SetRole(role),
            reason,
        )
        .await?)
    }

    /// `transferOwnership`: the previous owner becomes an admin.
    async fn transfer_ownership(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        reason: Option<String>,
    ) -> Result<ModerationAction> {
        Ok(moderate(
            ctx,
            conversation_id,
            user_id,
            Moderation::TransferOwnership,
            reason,
        )
        .await?)
    }

    /// `kickMember`: removes a member; they may rejoin or be invited again.
    async fn kick_member(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        reason: String,
    ) -> Result<ModerationAction> {
        Ok(moderate(
            ctx,
            conversation_id,
            user_id,
            Moderation::Kick,
            Some(reason),
        )
        .await?)
    }

    /// `banMember`: removes the user and keeps them out until `until` (forever without).
    async fn ban_member(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        reason: String,
        until: Option<OffsetDateTime>,
    ) -> Result<ModerationAction> {
        Ok(moderate(
            ctx,
            conversation_id,
            user_id,
            Moderation::Ban { until },
            Some(reason),
        )
        .await?)
    }

    /// `unbanMember`.
    async fn unban_member(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        reason: Option<String>,
    ) -> Result<ModerationAction> {
        Ok(moderate(ctx, conversation_id, user_id, Moderation::Unban, reason).await?)
    }

    /// `muteMember`: the member cannot post or react until `until` (forever without).
    async fn mute_member(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        reason: String,
        until: Option<OffsetDateTime>,
    ) -> Result<ModerationAction> {
        Ok(moderate(
            ctx,
            conversation_id,
            user_id,
            Moderation::Mute { until },
            Some(reason),
        )
        .await?)
    }

    /// `unmuteMember`.
    async fn unmute_member(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        user_id: ID,
        reason: Option<String>,
    ) -> Result<ModerationAction> {
        Ok(moderate(ctx, conversation_id, user_id, Moderation::Unmute, reason).await?)
    }
}

async fn moderate(
    ctx: &Context<'_>,
    conversation_id: ID,
    user_id: ID,
    action: Moderation,
    reason: Option<String>,
) -> Result<ModerationAction, ApiError> {
    let conversation_id = parse_id(&conversation_id, "conversation")?;
    let user_id = parse_id(&user_id, "user")?;
    let made = write(ctx, |s, me, meta| async move {
        s.chat
            .moderate(me, conversation_id, user_id, action, reason, &meta)
            .await
    })
    .await?;
    let stored = moderation::by_id(&state(ctx).db, &made.id.to_string()).await?;
    Ok(ModerationAction(stored_or_made(
        stored,
        made.row,
        "moderation action",
    )?))
}
