use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::Role;
use crate::values::Username;

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialMember {
    pub user_id: Uuid,
    pub username: Username,
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
        username: Username,
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
    pub fn conversation_id(&self) -> Uuid {
        match self {
            Self::ConversationCreated {
                conversation_id, ..
            }
            | Self::MemberJoined {
                conversation_id, ..
            }
            | Self::MemberLeft {
                conversation_id, ..
            }
            | Self::ConversationUpdated {
                conversation_id, ..
            }
            | Self::InvitationSent {
                conversation_id, ..
            }
            | Self::InvitationAccepted {
                conversation_id, ..
            }
            | Self::InvitationDeclined {
                conversation_id, ..
            }
            | Self::InvitationRevoked {
                conversation_id, ..
            }
            | Self::MessagePosted {
                conversation_id, ..
            } => *conversation_id,
        }
    }
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
            Self::MessagePosted { .. } => "MessagePosted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
