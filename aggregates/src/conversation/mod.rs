//! The `Conversation` aggregate: a direct conversation, group or channel, its members
//! and pending invitations, and the posting of messages into it.
//!
//! Posting lives here because a message's `seq` and the poster's membership must be
//! decided together; everything that happens to a message afterwards (edits, deletion,
//! reactions) lives in the `Message` aggregate, so a busy conversation's stream carries
//! only posts and membership changes. The state stays bounded: members (by id and role,
//! never by name), pending invitations, bans and mutes.

mod aggregate;
mod commands;
mod decide;
mod error;
mod events;
pub mod mentions;
mod moderation;

pub use aggregate::{fingerprint, ClientRecord, Conversation, MemberInfo, CLIENT_ID_RETENTION};
pub use commands::{
    ConversationCommand, ConversationServices, LookupFailed, MemberRef, NoPosts, PostedLookup,
    ReplyTarget,
};
pub use decide::MAX_RETENTION_DAYS;
pub use error::ConversationError;
pub use events::{ConversationEvent, ConversationKind, InitialMember, Visibility};

/// The id of the direct conversation between two users: the same for both orders, so
/// two concurrent "create" calls race for one stream and exactly one creates it.
pub fn direct_conversation_id(a: uuid::Uuid, b: uuid::Uuid) -> uuid::Uuid {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(low.as_bytes());
    name[16..].copy_from_slice(high.as_bytes());
    uuid::Uuid::new_v5(&DIRECT_NAMESPACE, &name)
}

const DIRECT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7061_726c_6579_2d64_6972_6563_7400_0001);

#[cfg(test)]
mod tests;
