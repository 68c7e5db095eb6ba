use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::aggregate::ClientRecord;

use super::events::Visibility;
use super::mentions::Named;
use crate::policy::Role;
use crate::values::Slug;

/// A user as the conversation records them: by id alone. Names live with the account,
/// where an erasure can remove them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub user_id: Uuid,
}

/// The message a new message replies to, as looked up by the command service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub author_id: Uuid,
}

#[derive(Debug, Clone)]
pub enum ConversationCommand {
    CreateDirect {
        creator: MemberRef,
        other: MemberRef,
        at: OffsetDateTime,
    },
    CreateGroup {
        creator: MemberRef,
        title: String,
        members: Vec<MemberRef>,
        at: OffsetDateTime,
    },
    /// `slug` has already been claimed for this conversation.
    CreateChannel {
        creator: MemberRef,
        name: String,
        slug: Slug,
        description: Option<String>,
        visibility: Visibility,
        at: OffsetDateTime,
    },
    Join {
        user: MemberRef,
        at: OffsetDateTime,
    },
    Leave {
        user_id: Uuid,
        at: OffsetDateTime,
    },
    Update {
        actor_id: Uuid,
        title: Option<String>,
        description: Option<String>,
        at: OffsetDateTime,
    },
    /// Sets how many days messages are kept (`None`: the server's default); owners
    /// and admins.
    SetRetention {
        actor_id: Uuid,
        days: Option<i64>,
        at: OffsetDateTime,
    },
    /// Records that messages posted before `before` expired (the retention sweeper).
    Expire {
        before: OffsetDateTime,
        at: OffsetDateTime,
    },
    Invite {
        invitation_id: Uuid,
        inviter_id: Uuid,
        invitee: MemberRef,
        at: OffsetDateTime,
    },
    AcceptInvitation {
        invitation_id: Uuid,
        user: MemberRef,
        at: OffsetDateTime,
    },
    DeclineInvitation {
        invitation_id: Uuid,
        user_id: Uuid,
        at: OffsetDateTime,
    },
    RevokeInvitation {
        invitation_id: Uuid,
        actor_id: Uuid,
        at: OffsetDateTime,
    },
    SetMemberRole {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        role: Role,
        reason: Option<String>,
        at: OffsetDateTime,
    },
    TransferOwnership {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        at: OffsetDateTime,
    },
    Kick {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        at: OffsetDateTime,
    },
    /// `until: None` bans indefinitely. The user need not be a member.
    Ban {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    },
    Unban {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        at: OffsetDateTime,
    },
    /// `until: None` mutes indefinitely.
    Mute {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        until: Option<OffsetDateTime>,
        at: OffsetDateTime,
    },
    Unmute {
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        at: OffsetDateTime,
    },
    PostMessage {
        message_id: Uuid,
        author_id: Uuid,
        body: String,
        reply_to: Option<ReplyTarget>,
        client_message_id: Option<String>,
        attachment_ids: Vec<Uuid>,
        /// The accounts the body's `@names` belong to, from the service's directory.
        named: Named,
        at: OffsetDateTime,
    },
}

/// Settings the conversation rules depend on, and where earlier posts are found.
#[derive(Clone)]
pub struct ConversationServices {
    pub max_body_chars: usize,
    /// Members plus pending invitations a conversation may hold: the aggregate (and
    /// every snapshot of it) carries them all.
    pub max_members: usize,
    /// Users one `createGroup` may name.
    pub max_group_invites: usize,
    /// Earlier posts by `clientMessageId`.
    pub posted: Arc<dyn PostedLookup>,
}

impl std::fmt::Debug for ConversationServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationServices")
            .field("max_body_chars", &self.max_body_chars)
            .field("max_members", &self.max_members)
            .field("max_group_invites", &self.max_group_invites)
            .finish_non_exhaustive()
    }
}

/// Finds an author's latest post in a conversation under a `clientMessageId`.
///
/// The log keeps every post's `clientMessageId`, so the aggregate need not: were it
/// state, every post would load and snapshot a week of ids, and a post would cost more
/// the busier its conversation. The lookup runs while the command holds its
/// conversation, and an append by anyone else meanwhile fails the sequence check and
/// runs the command again, so a retry racing its original still finds it.
#[async_trait::async_trait]
pub trait PostedLookup: Send + Sync {
    async fn find(
        &self,
        conversation_id: Uuid,
        author_id: Uuid,
        client_message_id: &str,
    ) -> Result<Option<ClientRecord>, LookupFailed>;
}

/// The earlier posts could not be read; the post is refused rather than risk a
/// duplicate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("earlier posts could not be read: {0}")]
pub struct LookupFailed(pub String);

/// A lookup for commands that never post (expiry, tests of other rules).
pub struct NoPosts;

#[async_trait::async_trait]
impl PostedLookup for NoPosts {
    async fn find(&self, _: Uuid, _: Uuid, _: &str) -> Result<Option<ClientRecord>, LookupFailed> {
        Ok(None)
    }
}

impl ConversationServices {
    pub const DEFAULT_MAX_MEMBERS: usize = 10_000;
    pub const DEFAULT_MAX_GROUP_INVITES: usize = 256;
}

impl Default for ConversationServices {
    fn default() -> Self {
        Self {
            max_body_chars: crate::values::MessageBody::DEFAULT_MAX,
            max_members: Self::DEFAULT_MAX_MEMBERS,
            max_group_invites: Self::DEFAULT_MAX_GROUP_INVITES,
            posted: Arc::new(NoPosts),
        }
    }
}
