use uuid::Uuid;

use crate::values::InputError;

/// Why a conversation command was refused. Messages are safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error(transparent)]
    Invalid(#[from] InputError),
    #[error("conversation not found")]
    NotFound,
    #[error("this conversation already exists")]
    AlreadyExists,
    #[error("you are not a member of this conversation")]
    NotMember,
    #[error("this channel is private; you need an invitation")]
    NotPublic,
    #[error("{0}")]
    NotAllowed(&'static str),
    #[error("the user is already a member")]
    AlreadyMember,
    #[error("the user is not a member of this conversation")]
    TargetNotMember,
    #[error("you are banned from this conversation")]
    Banned,
    #[error("the user is banned from this conversation")]
    TargetBanned,
    #[error("you are muted in this conversation")]
    Muted,
    #[error("the user is not banned")]
    NotBanned,
    #[error("the user is not muted")]
    NotMuted,
    #[error("the user already has a pending invitation")]
    AlreadyInvited,
    #[error("the invitation is not pending")]
    InvitationNotPending,
    #[error("only the invitee can answer an invitation")]
    NotInvitee,
    #[error("this conversation has reached its limit of {max} members and pending invitations")]
    Full { max: usize },
    #[error("clientMessageId was already used for a different message")]
    ClientMessageIdReused,
    #[error(transparent)]
    Lookup(#[from] super::commands::LookupFailed),
    /// A retry of an already posted message: the caller answers with that message.
    #[error("already posted as {message_id}")]
    AlreadyPosted { message_id: Uuid },
}
