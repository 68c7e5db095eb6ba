use time::OffsetDateTime;
use uuid::Uuid;

/// A refresh-token family to open.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub family_id: Uuid,
    pub token_hash: String,
    pub expires_at: OffsetDateTime,
}

/// Commands on a user account. `at` is the command service's clock.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// Creates the account and, when `session` is given, opens its first session
    /// (saving the password verification a separate login would cost).
    Register {
        user_id: Uuid,
        username: String,
        password: String,
        display_name: String,
        session: Option<NewSession>,
        at: OffsetDateTime,
    },
    /// Opens a refresh-token family. The command service verified the password against
    /// `verified_hash` (the account's hash as it loaded it) without holding the
    /// account's command lock, so a flood of logins never delays the account's other
    /// commands; a password changed since then refuses the login.
    Login {
        verified_hash: String,
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
    /// Erases the account: by its owner, who proves it with `password`, or by an
    /// operator (`password: None`, `operator` set) answering a legal request.
    Erase {
        password: Option<String>,
        operator: bool,
        reason: Option<String>,
        at: OffsetDateTime,
    },
}
