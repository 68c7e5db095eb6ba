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

#[cfg(test)]
mod tests {
    use super::*;

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
