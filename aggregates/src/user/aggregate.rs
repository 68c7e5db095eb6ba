use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{UserCommand, UserError, UserEvent, UserServices};
use crate::values::{DisplayName, Password, Username};

/// At most this many open sessions per user; starting another evicts the oldest, so
/// the aggregate's state (and snapshot) stays bounded however often a user logs in.
pub const MAX_SESSIONS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub token_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<Uuid>,
    pub username: Option<Username>,
    pub display_name: Option<DisplayName>,
    pub password_hash: String,
    pub sessions: BTreeMap<Uuid, Session>,
    /// Erased accounts take no command again.
    #[serde(default)]
    pub erased: bool,
}

impl User {
    fn active_session(&self, family_id: Uuid, at: OffsetDateTime) -> Option<&Session> {
        self.sessions
            .get(&family_id)
            .filter(|session| session.expires_at > at)
    }

    fn require_registered(&self) -> Result<(), UserError> {
        if self.id.is_some() && !self.erased {
            Ok(())
        } else {
            Err(UserError::NotRegistered)
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = UserServices;

    async fn handle(
        &mut self,
        command: UserCommand,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        match command {
            UserCommand::Register {
                user_id,
                username,
                password,
                display_name,
                session,
                at,
            } => {
                if self.id.is_some() {
                    return Err(UserError::AlreadyRegistered);
                }
                let username = Username::parse(&username, "username")?;
                let display_name = DisplayName::parse(&display_name, "displayName")?;
                let password = Password::parse(&password, "password")?;
                let password_hash = services
                    .hasher
                    .hash(password.expose())
                    .await
                    .map_err(UserError::Hashing)?;
                sink.write(
                    UserEvent::UserRegistered {
                        user_id,
                        username,
                        display_name,
                        password_hash,
                        registered_at: at,
                    },
                    self,
                )
                .await;
                if let Some(session) = session {
                    sink.write(
                        UserEvent::SessionStarted {
                            family_id: session.family_id,
                            token_hash: session.token_hash,
                            expires_at: session.expires_at,
                            started_at: at,
                        },
                        self,
                    )
                    .await;
                }
            }
            UserCommand::Login {
                verified_hash,
                family_id,
                token_hash,
                expires_at,
                at,
            } => {
                self.require_registered()
                    .map_err(|_| UserError::InvalidCredentials)?;
                if verified_hash != self.password_hash {
                    return Err(UserError::InvalidCredentials);
                }
                sink.write(
                    UserEvent::SessionStarted {
                        family_id,
                        token_hash,
                        expires_at,
                        started_at: at,
                    },
                    self,
                )
                .await;
            }
            UserCommand::Refresh {
                family_id,
                presented_hash,
                new_hash,
                expires_at,
                at,
            } => {
                self.require_registered()
                    .map_err(|_| UserError::InvalidRefreshToken)?;
                let Some(session) = self.active_session(family_id, at) else {
                    return Err(UserError::InvalidRefreshToken);
                };
                // Hashes of 256-bit random secrets are compared, not the secrets, so a
                // timing difference reveals nothing an attacker can steer.
                let event = if session.token_hash == presented_hash {
                    UserEvent::SessionRefreshed {
                        family_id,
                        token_hash: new_hash,
                        expires_at,
                        refreshed_at: at,
                    }
                } else {
                    UserEvent::RefreshTokenReused {
                        family_id,
                        detected_at: at,
                    }
                };
                sink.write(event, self).await;
            }
            UserCommand::Logout {
                family_id,
                presented_hash,
                at,
            } => {
                let matches = self
                    .active_session(family_id, at)
                    .is_some_and(|session| session.token_hash == presented_hash);
                if !matches {
                    return Err(UserError::InvalidRefreshToken);
                }
                sink.write(
                    UserEvent::SessionEnded {
                        family_id,
                        ended_at: at,
                    },
                    self,
                )
                .await;
            }
            UserCommand::ChangePassword {
                current_password,
                new_password,
                at,
            } => {
                self.require_registered()?;
                let new_password = Password::parse(&new_password, "newPassword")?;
                if !services
                    .hasher
                    .verify(&current_password, &self.password_hash)
                    .await
                {
                    return Err(crate::InputError::new(
                        "currentPassword",
                        "does not match the current password",
                    )
                    .into());
                }
                let password_hash = services
                    .hasher
                    .hash(new_password.expose())
                    .await
                    .map_err(UserError::Hashing)?;
                sink.write(
                    UserEvent::PasswordChanged {
                        password_hash,
                        changed_at: at,
                    },
                    self,
                )
                .await;
            }
            UserCommand::Erase {
                password,
                operator,
                reason,
                at,
            } => {
                self.require_registered()?;
                // An operator answers a request someone made: the record says which.
                let reason = crate::values::parse_reason(reason.as_deref(), operator)?;
                let erased_by = match (password, operator) {
                    (_, true) => None,
                    (Some(password), false) => {
                        if !services.hasher.verify(&password, &self.password_hash).await {
                            return Err(crate::InputError::new(
                                "password",
                                "does not match the current password",
                            )
                            .into());
                        }
                        self.id
                    }
                    (None, false) => {
                        return Err(crate::InputError::new("password", "is required").into())
                    }
                };
                let user_id = self.id.ok_or(UserError::NotRegistered)?;
                sink.write(
                    UserEvent::AccountErased {
                        user_id,
                        erased_by,
                        reason,
                        erased_at: at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered {
                user_id,
                username,
                display_name,
                password_hash,
                ..
            } => {
                self.id = Some(user_id);
                self.username = Some(username);
                self.display_name = Some(display_name);
                self.password_hash = password_hash;
            }
            UserEvent::SessionStarted {
                family_id,
                token_hash,
                expires_at,
                started_at,
            } => {
                self.sessions
                    .retain(|_, session| session.expires_at > started_at);
                while self.sessions.len() >= MAX_SESSIONS {
                    let oldest = self
                        .sessions
                        .iter()
                        .min_by_key(|(_, session)| session.started_at)
                        .map(|(id, _)| *id);
                    match oldest {
                        Some(id) => self.sessions.remove(&id),
                        None => break,
                    };
                }
                self.sessions.insert(
                    family_id,
                    Session {
                        token_hash,
                        expires_at,
                        started_at,
                    },
                );
            }
            UserEvent::SessionRefreshed {
                family_id,
                token_hash,
                expires_at,
                ..
            } => {
                if let Some(session) = self.sessions.get_mut(&family_id) {
                    session.token_hash = token_hash;
                    session.expires_at = expires_at;
                }
            }
            UserEvent::RefreshTokenReused { family_id, .. }
            | UserEvent::SessionEnded { family_id, .. } => {
                self.sessions.remove(&family_id);
            }
            UserEvent::PasswordChanged { password_hash, .. } => {
                self.password_hash = password_hash;
                self.sessions.clear();
            }
            UserEvent::AccountErased { .. } => {
                self.erased = true;
                self.display_name = None;
                self.password_hash.clear();
                self.sessions.clear();
            }
        }
    }
}
