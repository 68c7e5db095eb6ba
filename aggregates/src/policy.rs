//! The one permission policy: what each role may do in groups and channels.
//!
//! Direct conversations have no moderation: both participants are plain members and
//! nobody may manage the other.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Admin => "ADMIN",
            Self::Member => "MEMBER",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "OWNER" => Some(Self::Owner),
            "ADMIN" => Some(Self::Admin),
            "MEMBER" => Some(Self::Member),
            _ => None,
        }
    }
}

/// Something a member may try to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Post,
    React,
    Invite,
    UpdateDetails,
    DeleteOthersMessage,
}

/// Whether `role` may perform `action`. Moderation of people (kick, ban, roles) has its
/// own rules that also compare the target's role.
pub fn allows(role: Role, action: Action) -> bool {
    match action {
        Action::Post | Action::React | Action::Invite => true,
        Action::UpdateDetails | Action::DeleteOthersMessage => role >= Role::Admin,
    }
}

/// Who reads a conversation's moderation log: its owners and admins (`role` is the
/// reader's, `None` for a non-member).
pub fn may_read_moderation_log(role: Option<Role>) -> bool {
    role.is_some_and(|role| role >= Role::Admin)
}

/// Who shows as typing in a conversation: its members.
pub fn may_type(role: Option<Role>) -> bool {
    role.is_some()
}

/// How much of a conversation a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadAccess {
    /// Nothing: not even that the conversation exists, when asked for it by id.
    None,
    /// What a pending invitee needs to decide: kind, title, slug, description,
    /// visibility and who invited them; no messages, members, counts or activity.
    Preview,
    /// Everything: messages, members, counts, typing and receipts.
    Full,
}

/// What the read rule needs to know about one user and one conversation, as of the
/// moment of reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Standing {
    /// A public channel, which any signed-in user may read unless banned from it.
    pub public_channel: bool,
    pub member: bool,
    /// A ban in force now (an expired ban no longer counts).
    pub banned: bool,
    /// A pending invitation addressed to the user.
    pub invited: bool,
}

/// The one read rule: every path that shows conversation content asks it.
///
/// A ban wins over everything (a banned user reads nothing of the conversation, public
/// or not, until the ban ends); then members and, for public channels, anyone signed
/// in read it all; a pending invitee only previews it.
pub fn read_access(standing: Standing) -> ReadAccess {
    if standing.banned {
        ReadAccess::None
    } else if standing.member || standing.public_channel {
        ReadAccess::Full
    } else if standing.invited {
        ReadAccess::Preview
    } else {
        ReadAccess::None
    }
}

/// Every combination of facts a standing can hold, for tests that check another
/// encoding of the read rule (SQL filters, say) against [`read_access`].
pub fn all_standings() -> Vec<Standing> {
    let mut all = Vec::with_capacity(16);
    for bits in 0u8..16 {
        all.push(Standing {
            public_channel: bits & 1 != 0,
            member: bits & 2 != 0,
            banned: bits & 4 != 0,
            invited: bits & 8 != 0,
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owners_and_admins_read_the_moderation_log_and_only_members_type() {
        assert!(may_read_moderation_log(Some(Role::Owner)));
        assert!(may_read_moderation_log(Some(Role::Admin)));
        assert!(!may_read_moderation_log(Some(Role::Member)));
        assert!(!may_read_moderation_log(None));
        assert!(may_type(Some(Role::Member)));
        assert!(!may_type(None));
    }

    #[test]
    fn members_and_anyone_in_a_public_channel_read_everything() {
        let member = Standing {
            member: true,
            ..Standing::default()
        };
        let passer_by = Standing {
            public_channel: true,
            ..Standing::default()
        };
        assert_eq!(read_access(member), ReadAccess::Full);
        assert_eq!(read_access(passer_by), ReadAccess::Full);
    }

    #[test]
    fn a_ban_hides_everything_even_in_a_public_channel() {
        for standing in all_standings().into_iter().filter(|s| s.banned) {
            assert_eq!(read_access(standing), ReadAccess::None, "{standing:?}");
        }
    }

    #[test]
    fn a_pending_invitee_of_a_private_conversation_only_previews_it() {
        let invitee = Standing {
            invited: true,
            ..Standing::default()
        };
        assert_eq!(read_access(invitee), ReadAccess::Preview);
        assert_eq!(read_access(Standing::default()), ReadAccess::None);
    }

    #[test]
    fn only_admins_and_owners_manage_details_and_others_messages() {
        for action in [Action::UpdateDetails, Action::DeleteOthersMessage] {
            assert!(!allows(Role::Member, action));
            assert!(allows(Role::Admin, action));
            assert!(allows(Role::Owner, action));
        }
        for action in [Action::Post, Action::React, Action::Invite] {
            assert!(allows(Role::Member, action));
        }
    }
}
