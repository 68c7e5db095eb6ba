use time::OffsetDateTime;
use uuid::Uuid;

/// Commands on a user account. `at` is the command service's clock.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        username: String,
        password: String,
        display_name: String,
        at: OffsetDateTime,
    },
    /// Verifies the password and opens a refresh-token family.
    Login {
        password: String,
        family_id: Uuid,
        token_hash: String,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// Rotates the family's secret; a stale secret revokes the family instead.
    Refresh {
        family_id: Uuid,
        presented_hash: String,
        new_hash: String,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
    },
    Logout {
        family_id: Uuid,
        presented_hash: String,
        at: OffsetDateTime,
    },
    ChangePassword {
        current_password: String,
        new_password: String,
        at: OffsetDateTime,
    },
}
