//! GraphQL object types over the read models.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{ComplexObject, Context, Enum, Object, Result, SimpleObject, ID};
use parley_projections::conversations::{
    self, ConversationRow, Founding, InvitationRow, MemberRow,
};
use parley_projections::messages::MessageRow;
use parley_projections::moderation::ModerationRow;
use parley_projections::notifications::NotificationRow;
use parley_projections::page::{self, Page};
use parley_projections::users::UserRow;
use time::OffsetDateTime;

use parley_aggregates::policy::ReadAccess;

use super::error::ApiError;
use super::loaders::Loaders;
use super::{state, viewer};
use crate::live::LiveEvent;

pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

/// Parses a stored RFC 3339 time.
pub(crate) fn time(raw: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(ApiError::internal)
}

fn load_error(error: std::sync::Arc<parley_projections::ProjectionError>) -> ApiError {
    ApiError::internal(error.to_string())
}

/// Builds a Relay connection from a read-model page.
pub(crate) fn connection<R, N>(page: Page<R>, node: impl Fn(R) -> N) -> Connection<String, N>
where
    N: async_graphql::OutputType,
{
    let mut connection = Connection::new(page.has_previous, page.has_next);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|(cursor, row)| Edge::new(cursor, node(row))),
    );
    connection
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ConversationKind {
    Direct,
    Group,
    Channel,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Visibility {
    Public,
    Private,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Role {
    Owner,
    Admin,
    Member,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum NotificationLevel {
    All,
    Mentions,
    None,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum NotificationKind {
    Mention,
    Reply,
    Reaction,
    Invitation,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

/// Maps a stored enum name to its GraphQL enum.
macro_rules! from_stored {
    ($ty:ident { $($text:literal => $variant:ident),+ $(,)? }) => {
        impl $ty {
            pub(crate) fn from_stored(raw: &str) -> Result<Self, ApiError> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    other => Err(ApiError::internal(format!("unknown {} {other:?}", stringify!($ty)))),
                }
            }
        }
    };
}

from_stored!(ConversationKind { "DIRECT" => Direct, "GROUP" => Group, "CHANNEL" => Channel });
from_stored!(Visibility { "PUBLIC" => Public, "PRIVATE" => Private });
from_stored!(Role { "OWNER" => Owner, "ADMIN" => Admin, "MEMBER" => Member });
from_stored!(NotificationLevel { "ALL" => All, "MENTIONS" => Mentions, "NONE" => None });
from_stored!(NotificationKind { "MENTION" => Mention, "REPLY" => Reply, "REACTION" => Reaction, "INVITATION" => Invitation });
from_stored!(PresenceStatus { "ONLINE" => Online, "AWAY" => Away, "OFFLINE" => Offline });
from_stored!(InvitationStatus { "PENDING" => Pending, "ACCEPTED" => Accepted, "DECLINED" => Declined, "REVOKED" => Revoked });

/// A user's presence: `ONLINE` while connected or heartbeating, `AWAY` when the
/// client said so, `OFFLINE` otherwise. `lastSeenAt` is when the user last went
/// offline (null if never seen).
#[derive(SimpleObject, Clone)]
pub struct Presence {
    pub status: PresenceStatus,
    pub last_seen_at: Option<OffsetDateTime>,
}

impl Presence {
    pub(crate) fn new(status: &str, last_seen_at: Option<i64>) -> Result<Self, ApiError> {
        Ok(Self {
            status: PresenceStatus::from_stored(status)?,
            last_seen_at: last_seen_at.and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            }),
        })
    }
}

/// A Parley account. An erased account keeps its id, with `deleted: true` and an
/// empty username and display name.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct User {
    pub id: ID,
    pub username: String,
    pub display_name: String,
    /// The account was erased (`deleteAccount`, or an operator's erasure).
    pub deleted: bool,
}

#[ComplexObject]
impl User {
    async fn presence(&self, ctx: &Context<'_>) -> Result<Presence> {
        let row = loaders(ctx)
            .presence
            .load_one(self.id.to_string())
            .await
            .map_err(load_error)?;
        Ok(match row {
            Some(row) => Presence::new(&row.status, row.last_seen_at)?,
            None => Presence::new("OFFLINE", None)?,
        })
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        let deleted = row.erased_at.is_some();
        Self {
            id: ID(row.id),
            // The read model keeps the id in the username's place, for uniqueness.
            username: if deleted { String::new() } else { row.username },
            display_name: row.display_name,
            deleted,
        }
    }
}

pub(crate) async fn user(ctx: &Context<'_>, id: &str) -> Result<Option<User>, ApiError> {
    Ok(loaders(ctx)
        .users
        .load_one(id.to_owned())
        .await
        .map_err(load_error)?
        .map(User::from))
}

/// A user a live event or signal names, as looked up once for all its subscribers
/// (subscriptions outlive a request's loaders).
pub(crate) fn named_user(row: Option<UserRow>) -> Result<User, ApiError> {
    row.map(User::from)
        .ok_or_else(|| ApiError::internal("user missing from the read model"))
}

async fn required_user(ctx: &Context<'_>, id: &str) -> Result<User, ApiError> {
    user(ctx, id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("user {id} missing from the read model")))
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

/// The viewer's role in a conversation; `None` when not a member.
pub(crate) async fn my_role(
    ctx: &Context<'_>,
    conversation_id: &str,
) -> Result<Option<parley_aggregates::policy::Role>, ApiError> {
    let member = loaders(ctx)
        .memberships
        .load_one(conversation_id.to_owned())
        .await
        .map_err(load_error)?;
    member
        .map(|m| {
            parley_aggregates::policy::Role::parse(&m.role)
                .ok_or_else(|| ApiError::internal(format!("unknown role {:?}", m.role)))
        })
        .transpose()
}

/// The viewer's access to a conversation by the one read rule (the policy's
/// `read_access`), judged now; `NOT_FOUND` for a conversation that does not exist.
pub(crate) async fn access(
    ctx: &Context<'_>,
    conversation_id: &str,
) -> Result<ReadAccess, ApiError> {
    viewer(ctx)?;
    loaders(ctx)
        .access
        .load_one(conversation_id.to_owned())
        .await
        .map_err(load_error)?
        .ok_or_else(|| ApiError::NotFound("conversation not found".to_owned()))
}

/// `FORBIDDEN` unless the viewer has at least `least` access to the conversation.
pub(crate) async fn require_access(
    ctx: &Context<'_>,
    conversation_id: &str,
    least: ReadAccess,
) -> Result<(), ApiError> {
    let access = access(ctx, conversation_id).await?;
    if access >= least {
        return Ok(());
    }
    Err(ApiError::Forbidden(match access {
        ReadAccess::Preview => {
            "you are invited to this conversation; accept the invitation to read it".to_owned()
        }
        _ => "you may not read this conversation".to_owned(),
    }))
}

/// A conversation the viewer may at least `least` see, or `NOT_FOUND` / `FORBIDDEN`.
pub(crate) async fn visible_conversation(
    ctx: &Context<'_>,
    id: &str,
    least: ReadAccess,
) -> Result<ConversationRow, ApiError> {
    require_access(ctx, id, least).await?;
    loaders(ctx)
        .conversations
        .load_one(id.to_owned())
        .await
        .map_err(load_error)?
        .ok_or_else(|| ApiError::NotFound("conversation not found".to_owned()))
}

/// A conversation whose content the viewer may read, or `NOT_FOUND` / `FORBIDDEN`.
pub(crate) async fn readable_conversation(
    ctx: &Context<'_>,
    id: &str,
) -> Result<ConversationRow, ApiError> {
    visible_conversation(ctx, id, ReadAccess::Full).await
}

/// A direct conversation, group or channel. Wherever it is reached from (a query by id,
/// an invitation, a notification, an event), its content — `lastMessage`,
/// `lastActivityAt`, `members`, `unreadCount`, `mentionCount` — is shown only to those
/// the read rule lets read it; the rest describes the conversation to anyone who
/// reached it.
pub struct Conversation {
    row: ConversationRow,
    /// Its first members, when the read models did not show it yet to whoever answers
    /// with it (the mutation that created it, `myEvents` telling its members): they stand
    /// in for the read model's members, to the members' eyes.
    founding: Option<Arc<[MemberRow]>>,
}

impl From<ConversationRow> for Conversation {
    fn from(row: ConversationRow) -> Self {
        Self {
            row,
            founding: None,
        }
    }
}

impl From<Founding> for Conversation {
    fn from(founding: Founding) -> Self {
        Self {
            row: founding.conversation,
            founding: Some(founding.members.into()),
        }
    }
}

impl Conversation {
    /// The viewer's membership.
    async fn membership(&self, ctx: &Context<'_>) -> Result<Option<MemberRow>, ApiError> {
        if let Some(founding) = &self.founding {
            let viewer = viewer(ctx)?.to_string();
            return Ok(founding.iter().find(|m| m.user_id == viewer).cloned());
        }
        loaders(ctx)
            .memberships
            .load_one(self.row.id.clone())
            .await
            .map_err(load_error)
    }

    /// `FORBIDDEN` unless the viewer may read the content (a founding member may).
    async fn require_readable(&self, ctx: &Context<'_>) -> Result<(), ApiError> {
        if self.founding.is_some() && self.membership(ctx).await?.is_some() {
            return Ok(());
        }
        require_access(ctx, &self.row.id, ReadAccess::Full).await
    }
}

#[Object]
impl Conversation {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    async fn kind(&self) -> Result<ConversationKind> {
        Ok(ConversationKind::from_stored(&self.row.kind)?)
    }

    /// The group's title or channel's name; null for direct conversations.
    async fn title(&self) -> Option<&str> {
        self.row.title.as_deref()
    }

    async fn slug(&self) -> Option<&str> {
        self.row.slug.as_deref()
    }

    async fn description(&self) -> Option<&str> {
        self.row.description.as_deref()
    }

    async fn visibility(&self) -> Result<Visibility> {
        Ok(Visibility::from_stored(&self.row.visibility)?)
    }

    /// Days messages are kept before they expire: the conversation's own window
    /// (`setRetention`), else the server's; null keeps them forever.
    async fn retention_days(&self, ctx: &Context<'_>) -> Option<i64> {
        self.row
            .retention_days
            .or_else(|| super::state(ctx).config.retention_days.map(i64::from))
    }

    async fn created_at(&self) -> Result<OffsetDateTime> {
        Ok(time(&self.row.created_at)?)
    }

    /// The viewer's role; null when not a member.
    async fn my_role(&self, ctx: &Context<'_>) -> Result<Option<Role>> {
        let member = self.membership(ctx).await?;
        Ok(member.map(|m| Role::from_stored(&m.role)).transpose()?)
    }

    /// The viewer's notification level; null when not a member.
    async fn notification_level(&self, ctx: &Context<'_>) -> Result<Option<NotificationLevel>> {
        let member = self.membership(ctx).await?;
        Ok(member
            .map(|m| NotificationLevel::from_stored(&m.notification_level))
            .transpose()?)
    }

    /// Messages by others after the viewer's read marker, not deleted.
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i32> {
        self.require_readable(ctx).await?;
        let counts = loaders(ctx)
            .counts
            .load_one(self.row.id.clone())
            .await
            .map_err(load_error)?;
        Ok(counts.map_or(0, |c| i32::try_from(c.unread).unwrap_or(i32::MAX)))
    }

    /// Unread messages that mention the viewer or reply to the viewer's messages.
    async fn mention_count(&self, ctx: &Context<'_>) -> Result<i32> {
        self.require_readable(ctx).await?;
        let counts = loaders(ctx)
            .counts
            .load_one(self.row.id.clone())
            .await
            .map_err(load_error)?;
        Ok(counts.map_or(0, |c| i32::try_from(c.mentions).unwrap_or(i32::MAX)))
    }

    async fn last_message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        self.require_readable(ctx).await?;
        let Some(id) = &self.row.last_message_id else {
            return Ok(None);
        };
        let row = loaders(ctx)
            .messages
            .load_one(id.clone())
            .await
            .map_err(load_error)?;
        Ok(row.map(Message::from))
    }

    async fn last_activity_at(&self, ctx: &Context<'_>) -> Result<OffsetDateTime> {
        self.require_readable(ctx).await?;
        Ok(time(&self.row.last_activity_at)?)
    }

    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Member>> {
        self.require_readable(ctx).await?;
        let limit = page::page_size(first).map_err(ApiError::from)?;
        let page = match &self.founding {
            Some(founding) => conversations::members_page(founding, after.as_deref(), limit),
            None => {
                conversations::members(&state(ctx).db, &self.row.id, after.as_deref(), limit).await
            }
        }
        .map_err(ApiError::from)?;
        Ok(connection(page, Member))
    }
}

/// A member of a conversation.
pub struct Member(pub MemberRow);

#[Object]
impl Member {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(required_user(ctx, &self.0.user_id).await?)
    }

    async fn role(&self) -> Result<Role> {
        Ok(Role::from_stored(&self.0.role)?)
    }

    async fn joined_at(&self) -> Result<OffsetDateTime> {
        Ok(time(&self.0.joined_at)?)
    }

    /// Until when the member is muted; null when not muted. An indefinite mute reads
    /// as 9999-12-31T23:59:59Z (see `muted`).
    async fn muted_until(&self, ctx: &Context<'_>) -> Result<Option<OffsetDateTime>> {
        if !self.0.muted_at(state(ctx).clock.now()) {
            return Ok(None);
        }
        Ok(Some(match self.0.muted_until_ms {
            Some(ms) => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(ApiError::internal)?,
            None => time::macros::datetime!(9999-12-31 23:59:59 UTC),
        }))
    }

    /// Whether the member is muted now.
    async fn muted(&self, ctx: &Context<'_>) -> bool {
        self.0.muted_at(state(ctx).clock.now())
    }
}

#[derive(SimpleObject)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i32,
    pub reacted_by_me: bool,
}

#[derive(SimpleObject)]
pub struct MessageEdit {
    /// The body before this edit.
    pub body: String,
    pub edited_at: OffsetDateTime,
}

/// A file attached to a message.
#[derive(SimpleObject)]
pub struct Attachment {
    pub id: ID,
    pub filename: String,
    pub content_type: String,
    pub size: i32,
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub duration_ms: Option<i32>,
}

impl Attachment {
    /// The attachment as its reader sees it, with download URLs signed for a short
    /// while. Only called for readers of the conversation (or the uploader); an
    /// attachment no longer served gets no URL at all.
    pub async fn from_row(
        ctx: &Context<'_>,
        row: parley_projections::attachments::AttachmentRow,
    ) -> Result<Self, ApiError> {
        if !row.served() {
            return Err(ApiError::NotFound("attachment not found".to_owned()));
        }
        let state = state(ctx);
        let now = state.clock.now();
        let url = state
            .uploads
            .download_url(&row, &row.object_key, &row.content_type, now)
            .await?;
        let thumbnail_url = match &row.thumbnail_key {
            Some(key) => Some(
                state
                    .uploads
                    .download_url(&row, key, "image/png", now)
                    .await?,
            ),
            None => None,
        };
        let small = |value: Option<i64>| value.and_then(|v| i32::try_from(v).ok());
        Ok(Self {
            id: ID(row.id.clone()),
            size: i32::try_from(row.size).unwrap_or(i32::MAX),
            width: small(row.width),
            height: small(row.height),
            duration_ms: small(row.duration_ms),
            filename: row.filename,
            content_type: row.content_type,
            url,
            thumbnail_url,
        })
    }
}

/// A request header an upload must carry exactly as given.
#[derive(SimpleObject)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// Where and how to send an upload's bytes: one `method` request to `uploadUrl` with
/// `headers`, before `expiresAt`; then `completeUpload`.
#[derive(SimpleObject)]
pub struct Upload {
    pub id: ID,
    pub upload_url: String,
    pub method: String,
    pub headers: Vec<HttpHeader>,
    pub expires_at: OffsetDateTime,
}

/// A message. A deleted message keeps its id and place, with `deleted: true` and no body;
/// so does an erased author's message, with `erased: true`.
pub struct Message(pub MessageRow, Option<Arc<LiveEvent>>);

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Self(row, None)
    }
}

impl Message {
    /// The message as delivered with `event`: its subscribers share the lookups of the
    /// users it names, one query for all of them instead of one each.
    pub(crate) fn delivered(row: MessageRow, event: Arc<LiveEvent>) -> Self {
        Self(row, Some(event))
    }

    async fn user(&self, ctx: &Context<'_>, id: &str) -> Result<Option<User>, ApiError> {
        match &self.1 {
            Some(event) => Ok(event.user(&state(ctx).db, id).await?.map(User::from)),
            None => user(ctx, id).await,
        }
    }
}

#[Object]
impl Message {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn conversation_id(&self) -> ID {
        ID(self.0.conversation_id.clone())
    }

    /// 1, 2, 3 … within the conversation, so a client can see a gap.
    async fn seq(&self) -> i32 {
        i32::try_from(self.0.seq).unwrap_or(i32::MAX)
    }

    async fn author(&self, ctx: &Context<'_>) -> Result<User> {
        let id = &self.0.author_id;
        Ok(self
            .user(ctx, id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("user {id} missing from the read model")))?)
    }

    async fn body(&self) -> Option<&str> {
        self.0.body.as_deref()
    }

    /// `PLAIN`.
    async fn format(&self) -> &str {
        &self.0.format
    }

    async fn created_at(&self) -> Result<OffsetDateTime> {
        Ok(time(&self.0.created_at)?)
    }

    async fn edited_at(&self) -> Result<Option<OffsetDateTime>> {
        Ok(self.0.edited_at.as_deref().map(time).transpose()?)
    }

    async fn deleted(&self) -> bool {
        self.0.deleted != 0
    }

    /// Its author's account was erased: the message keeps its place, without text.
    async fn erased(&self) -> bool {
        self.0.erased != 0
    }

    async fn reply_to(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        let Some(id) = &self.0.reply_to_id else {
            return Ok(None);
        };
        Ok(loaders(ctx)
            .messages
            .load_one(id.clone())
            .await
            .map_err(load_error)?
            .map(Message::from))
    }

    async fn reply_count(&self) -> i32 {
        i32::try_from(self.0.reply_count).unwrap_or(i32::MAX)
    }

    async fn reactions(&self, ctx: &Context<'_>) -> Result<Vec<ReactionCount>> {
        let rows = loaders(ctx)
            .reactions
            .load_one(self.0.id.clone())
            .await
            .map_err(load_error)?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(|r| ReactionCount {
                emoji: r.emoji,
                count: i32::try_from(r.count).unwrap_or(i32::MAX),
                reacted_by_me: r.reacted_by_viewer > 0,
            })
            .collect())
    }

    async fn mentions(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        let ids = self.0.mention_ids();
        if self.1.is_some() {
            let mut mentioned = Vec::with_capacity(ids.len());
            for id in &ids {
                mentioned.extend(self.user(ctx, id).await?);
            }
            return Ok(mentioned);
        }
        let found = loaders(ctx)
            .users
            .load_many(ids.clone())
            .await
            .map_err(load_error)?;
        Ok(ids
            .iter()
            .filter_map(|id| found.get(id).cloned().map(User::from))
            .collect())
    }

    /// Files sent with the message, in the order sent; none once it is deleted.
    async fn attachments(&self, ctx: &Context<'_>) -> Result<Vec<Attachment>> {
        let order = self.0.attachment_id_list();
        if order.is_empty() || self.0.deleted != 0 {
            return Ok(Vec::new());
        }
        let db = &state(ctx).db;
        let mut rows = match &self.1 {
            Some(event) => event.attachments(db, &self.0.id).await,
            None => parley_projections::attachments::of_message(db, &self.0.id).await,
        }
        .map_err(ApiError::from)?;
        // Files the attachments read model does not show as this message's yet (it
        // lags, or failed), though the message's own event lists them.
        for id in &order {
            if rows.iter().any(|row| row.id == *id) {
                continue;
            }
            let found = parley_projections::attachments::by_id(db, id)
                .await
                .map_err(ApiError::from)?;
            rows.extend(found.and_then(|row| row.held_by(&self.0.id, &self.0.author_id)));
        }
        rows.sort_by_key(|row| order.iter().position(|id| *id == row.id));
        let mut attachments = Vec::with_capacity(rows.len());
        for row in rows {
            attachments.push(Attachment::from_row(ctx, row).await?);
        }
        Ok(attachments)
    }

    /// How many other members have read this message.
    async fn read_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let count = loaders(ctx)
            .read_counts
            .load_one(self.0.id.clone())
            .await
            .map_err(load_error)?;
        Ok(count.map_or(0, |c| i32::try_from(c).unwrap_or(i32::MAX)))
    }

    /// Earlier bodies, oldest first.
    async fn edits(&self, ctx: &Context<'_>) -> Result<Vec<MessageEdit>> {
        let rows = loaders(ctx)
            .edits
            .load_one(self.0.id.clone())
            .await
            .map_err(load_error)?;
        let mut edits = Vec::new();
        for row in rows.unwrap_or_default() {
            edits.push(MessageEdit {
                body: row.body,
                edited_at: time(&row.edited_at)?,
            });
        }
        Ok(edits)
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ModerationKind {
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    DeleteMessage,
    RoleChange,
    OwnershipTransfer,
}

from_stored!(ModerationKind {
    "KICK" => Kick, "BAN" => Ban, "UNBAN" => Unban, "MUTE" => Mute, "UNMUTE" => Unmute,
    "DELETE_MESSAGE" => DeleteMessage, "ROLE_CHANGE" => RoleChange, "OWNERSHIP_TRANSFER" => OwnershipTransfer,
});

/// A recorded moderation action.
pub struct ModerationAction(pub ModerationRow);

#[Object]
impl ModerationAction {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn conversation_id(&self) -> ID {
        ID(self.0.conversation_id.clone())
    }

    async fn action(&self) -> Result<ModerationKind> {
        Ok(ModerationKind::from_stored(&self.0.action)?)
    }

    async fn actor(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(required_user(ctx, &self.0.actor_id).await?)
    }

    async fn target(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match &self.0.target_id {
            Some(id) => Ok(user(ctx, id).await?),
            None => Ok(None),
        }
    }

    /// The deleted message's id, for `DELETE_MESSAGE`; its body is never shown.
    async fn message_id(&self) -> Option<ID> {
        self.0.message_id.clone().map(ID)
    }

    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// When a ban or mute ends by itself; null when indefinite or not applicable.
    async fn expires_at(&self) -> Result<Option<OffsetDateTime>> {
        Ok(self.0.expires_at.as_deref().map(time).transpose()?)
    }

    async fn occurred_at(&self) -> Result<OffsetDateTime> {
        Ok(time(&self.0.occurred_at)?)
    }
}

pub struct Notification(pub NotificationRow);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn kind(&self) -> Result<NotificationKind> {
        Ok(NotificationKind::from_stored(&self.0.kind)?)
    }

    async fn conversation(&self, ctx: &Context<'_>) -> Result<Option<Conversation>> {
        let row = loaders(ctx)
            .conversations
            .load_one(self.0.conversation_id.clone())
            .await
            .map_err(load_error)?;
        Ok(row.map(Conversation::from))
    }

    /// The message concerned; only while the viewer may read its conversation.
    async fn message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        let Some(id) = &self.0.message_id else {
            return Ok(None);
        };
        require_access(ctx, &self.0.conversation_id, ReadAccess::Full).await?;
        Ok(loaders(ctx)
            .messages
            .load_one(id.clone())
            .await
            .map_err(load_error)?
            .map(Message::from))
    }

    async fn actor(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(required_user(ctx, &self.0.actor_id).await?)
    }

    async fn created_at(&self) -> Result<OffsetDateTime> {
        Ok(time(&self.0.created_at)?)
    }

    async fn read(&self) -> bool {
        self.0.read != 0
    }
}

pub struct Invitation(pub InvitationRow);

#[Object]
impl Invitation {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn conversation(&self, ctx: &Context<'_>) -> Result<Option<Conversation>> {
        let row = loaders(ctx)
            .conversations
            .load_one(self.0.conversation_id.clone())
            .await
            .map_err(load_error)?;
        Ok(row.map(Conversation::from))
    }

    async fn inviter(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(required_user(ctx, &self.0.inviter_id).await?)
    }

    async fn invitee(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(required_user(ctx, &self.0.invitee_id).await?)
    }

    async fn status(&self) -> Result<InvitationStatus> {
        Ok(InvitationStatus::from_stored(&self.0.status)?)
    }

    async fn created_at(&self) -> Result<OffsetDateTime> {
        Ok(time(&self.0.created_at)?)
    }
}
