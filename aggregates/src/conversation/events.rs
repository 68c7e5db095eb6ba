use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationKind {
    Direct,
    Group,
    Channel,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "DIRECT",
            Self::Group => "GROUP",
            Self::Channel => "CHANNEL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "PUBLIC",
            Self::Private => "PRIVATE",
        }
    }
}

/// A member a conversation starts with. Version 1 also carried the `username`; it is
/// dropped on reading (see [`ConversationEvent::NAMELESS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialMember {
    pub user_id: Uuid,
    pub role: Role,
}

/// Events of the `Conversation` aggregate. Names and payloads are frozen once shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationCreated {
        conversation_id: Uuid,
        kind: ConversationKind,
        title: Option<String>,
        slug: Option<String>,
        description: Option<String>,
        visibility: Visibility,
        creator_id: Uuid,
        members: Vec<InitialMember>,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    MemberJoined {
        conversation_id: Uuid,
        user_id: Uuid,
        role: Role,
        invitation_id: Option<Uuid>,
        /// The conversation's last `seq` at joining: earlier messages are not unread.
        last_seq: u64,
        #[serde(with = "time::serde::rfc3339")]
        joined_at: OffsetDateTime,
    },
    MemberLeft {
        conversation_id: Uuid,
        user_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        left_at: OffsetDateTime,
    },
    ConversationUpdated {
        conversation_id: Uuid,
        title: Option<String>,
        description: Option<String>,
        updated_by: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        updated_at: OffsetDateTime,
    },
    InvitationSent {
        conversation_id: Uuid,
        invitation_id: Uuid,
        inviter_id: Uuid,
        invitee_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        sent_at: OffsetDateTime,
    },
    InvitationAccepted {
        conversation_id: Uuid,
        invitation_id: Uuid,
        invitee_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        accepted_at: OffsetDateTime,
    },
    InvitationDeclined {
        conversation_id: Uuid,
        invitation_id: Uuid,
        invitee_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        declined_at: OffsetDateTime,
    },
    InvitationRevoked {
        conversation_id: Uuid,
        invitation_id: Uuid,
        invitee_id: Uuid,
        revoked_by: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        revoked_at: OffsetDateTime,
    },
    MemberRoleChanged {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        from: Role,
        to: Role,
        reason: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        changed_at: OffsetDateTime,
    },
    /// The new owner becomes `OWNER`; the previous owner becomes `ADMIN`.
    OwnershipTransferred {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        transferred_at: OffsetDateTime,
    },
    MemberKicked {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        kicked_at: OffsetDateTime,
    },
    /// Removes the user if a member; blocks joining, invitations and posting until
    /// `until` (forever when `None`).
    MemberBanned {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        #[serde(with = "time::serde::rfc3339::option")]
        until: Option<OffsetDateTime>,
        #[serde(with = "time::serde::rfc3339")]
        banned_at: OffsetDateTime,
    },
    MemberUnbanned {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        unbanned_at: OffsetDateTime,
    },
    /// Blocks posting and reacting until `until` (forever when `None`).
    MemberMuted {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: String,
        #[serde(with = "time::serde::rfc3339::option")]
        until: Option<OffsetDateTime>,
        #[serde(with = "time::serde::rfc3339")]
        muted_at: OffsetDateTime,
    },
    MemberUnmuted {
        conversation_id: Uuid,
        action_id: Uuid,
        actor_id: Uuid,
        user_id: Uuid,
        reason: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        unmuted_at: OffsetDateTime,
    },
    /// How many days the conversation keeps messages; `None` returns to the server's
    /// default.
    RetentionSet {
        conversation_id: Uuid,
        days: Option<u32>,
        set_by: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        set_at: OffsetDateTime,
    },
    /// Messages posted before `before` passed the retention window: read models drop
    /// them, and their keys are destroyed.
    MessagesExpired {
        conversation_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        before: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        expired_at: OffsetDateTime,
    },
    MessagePosted {
        conversation_id: Uuid,
        message_id: Uuid,
        seq: u64,
        author_id: Uuid,
        body: String,
        /// `PLAIN` today; recorded so richer formats need no upcaster.
        format: String,
        reply_to_id: Option<Uuid>,
        reply_to_author_id: Option<Uuid>,
        mentions: Vec<Uuid>,
        client_message_id: Option<String>,
        attachment_ids: Vec<Uuid>,
        #[serde(with = "time::serde::rfc3339")]
        posted_at: OffsetDateTime,
    },
}

impl ConversationEvent {
    /// The stored type name of `MessagesExpired`.
    pub const EXPIRED: &'static str = "MessagesExpired";

    /// The stored type names of the events that make or end a membership, for reading
    /// just those from a conversation's stream.
    pub const MEMBERSHIP: [&'static str; 5] = [
        "ConversationCreated",
        "MemberJoined",
        "MemberLeft",
        "MemberKicked",
        "MemberBanned",
    ];

    /// The events whose version 1 named members by `username` (in `members` of
    /// `ConversationCreated`, at the top of `MemberJoined`); version 2 names them by id
    /// alone, and an upcaster drops the names from version 1 when it is read.
    pub const NAMELESS: [&'static str; 2] = ["ConversationCreated", "MemberJoined"];
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ConversationCreated { .. } => "ConversationCreated",
            Self::MemberJoined { .. } => "MemberJoined",
            Self::MemberLeft { .. } => "MemberLeft",
            Self::ConversationUpdated { .. } => "ConversationUpdated",
            Self::InvitationSent { .. } => "InvitationSent",
            Self::InvitationAccepted { .. } => "InvitationAccepted",
            Self::InvitationDeclined { .. } => "InvitationDeclined",
            Self::InvitationRevoked { .. } => "InvitationRevoked",
            Self::MemberRoleChanged { .. } => "MemberRoleChanged",
            Self::OwnershipTransferred { .. } => "OwnershipTransferred",
            Self::MemberKicked { .. } => "MemberKicked",
            Self::MemberBanned { .. } => "MemberBanned",
            Self::MemberUnbanned { .. } => "MemberUnbanned",
            Self::MemberMuted { .. } => "MemberMuted",
            Self::MemberUnmuted { .. } => "MemberUnmuted",
            Self::MessagePosted { .. } => "MessagePosted",
            Self::RetentionSet { .. } => "RetentionSet",
            Self::MessagesExpired { .. } => Self::EXPIRED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::ConversationCreated { .. } | Self::MemberJoined { .. } => "2",
            _ => "1",
        }
        .to_owned()
    }
}
