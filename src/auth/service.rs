//! The account operations behind `register`, `login`, `refreshToken`, `logout` and
//! `changePassword`.

use std::sync::Arc;

use parley_aggregates::claim::{
    NameClaim, NameCommand, NameError, UsernameClaims, ABANDONED_AFTER,
};
use parley_aggregates::user::{
    NewSession, PasswordHasher as _, User, UserCommand, UserError, UserEvent, UserServices,
};
use parley_aggregates::values::{DisplayName, Password, Username};
use parley_projections::users::UserRow;
use parley_store::LogPosition;
use uuid::Uuid;

use super::{Argon2Hasher, Grant, RefreshToken, Revocations, TokenKeys};
use parley_store::{CommandBus, CommandMeta, Keyring};

/// Why an account operation was refused or failed. The GraphQL layer maps each to a
/// code (`graphql/error.rs`); deliberately not `Display`, like `ChatError`.
#[derive(Debug)]
pub enum AuthError {
    User(UserError),
    Name(parley_aggregates::claim::NameError),
    Input(parley_aggregates::InputError),
    /// Another node changed the account first, every time it was retried.
    Concurrent,
    Store(Box<dyn std::error::Error + Send + Sync>),
}

impl From<UserError> for AuthError {
    fn from(error: UserError) -> Self {
        Self::User(error)
    }
}

impl From<parley_aggregates::claim::NameError> for AuthError {
    fn from(error: parley_aggregates::claim::NameError) -> Self {
        Self::Name(error)
    }
}

impl From<parley_aggregates::InputError> for AuthError {
    fn from(error: parley_aggregates::InputError) -> Self {
        Self::Input(error)
    }
}

impl<E> From<cqrs_es::AggregateError<E>> for AuthError
where
    E: std::error::Error + Send + Sync + 'static,
    AuthError: From<E>,
{
    fn from(error: cqrs_es::AggregateError<E>) -> Self {
        match error {
            cqrs_es::AggregateError::UserError(error) => error.into(),
            cqrs_es::AggregateError::AggregateConflict => Self::Concurrent,
            cqrs_es::AggregateError::DatabaseConnectionError(e)
            | cqrs_es::AggregateError::DeserializationError(e)
            | cqrs_es::AggregateError::UnexpectedError(e) => Self::Store(e),
        }
    }
}

/// Tokens handed to a client after register, login or refresh.
pub struct AuthTokens {
    pub user_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    /// Where the operation's events sit, for read-your-writes.
    pub position: Option<LogPosition>,
    /// The account's read-model row as `register` made it (`None` for other
    /// operations): the answer when the read models miss the consistency wait.
    pub registered: Option<UserRow>,
}

pub struct Accounts {
    users: CommandBus<User>,
    names: CommandBus<NameClaim>,
    /// Digests usernames for their claims.
    keyring: Arc<Keyring>,
    hasher: Argon2Hasher,
    keys: TokenKeys,
    revocations: Arc<Revocations>,
}

impl Accounts {
    pub fn new(
        db: &parley_store::Db,
        hasher: Argon2Hasher,
        keys: TokenKeys,
        revocations: Arc<Revocations>,
    ) -> Self {
        Self {
            users: CommandBus::new(db, UserServices::new(Arc::new(hasher.clone()))),
            names: CommandBus::new(db, ()),
            keyring: db.keys.clone(),
            hasher,
            keys,
            revocations,
        }
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The user's open sessions, to end on this node at once when an erasure ends
    /// them (other nodes learn it from the log).
    pub async fn open_sessions(&self, user_id: Uuid) -> Result<Vec<Uuid>, AuthError> {
        Ok(self
            .users
            .load(&user_id.to_string())
            .await?
            .sessions
            .into_keys()
            .collect())
    }

    /// Ends `sessions` on this node now.
    pub fn revoke(&self, sessions: Vec<Uuid>) {
        self.revocations.end(sessions);
    }

    /// What an access token grants: well signed, unexpired, and its session still open.
    pub fn verify_access(&self, token: &str) -> Option<Grant> {
        self.keys
            .verify_access(token)
            .filter(|grant| self.revocations.allows(grant))
    }

    /// Ended sessions, as they end (on this node or another).
    pub fn ended_sessions(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.revocations.subscribe()
    }

    /// Whether the grant's session is still open.
    pub fn still_open(&self, grant: &Grant) -> bool {
        self.revocations.allows(grant)
    }

    fn tokens(
        &self,
        refresh: &RefreshToken,
        meta: &CommandMeta,
        position: Option<LogPosition>,
    ) -> Result<AuthTokens, AuthError> {
        Ok(AuthTokens {
            user_id: refresh.user_id,
            access_token: self
                .keys
                .issue_access(refresh.user_id, refresh.family_id, meta.at)
                .map_err(|error| AuthError::Store(Box::new(error)))?,
            refresh_token: refresh.encode(),
            position,
            registered: None,
        })
    }

    /// `register`: claims the username, creates the account and opens a session.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        display_name: &str,
        meta: &CommandMeta,
    ) -> Result<AuthTokens, AuthError> {
        // Validate everything before claiming, so bad input claims nothing.
        let name = Username::parse(username, "username")?;
        DisplayName::parse(display_name, "displayName")?;
        Password::parse(password, "password")?;

        let user_id = Uuid::now_v7();
        let claims = self.claims_of(&name);
        if let Some(legacy) = &claims.legacy {
            if self.holds_legacy(legacy, meta.at).await? {
                return Err(NameError::Taken.into());
            }
        }
        let claim = claims.current;
        // A claim whose account was never created (the process died in between) is
        // taken over once old enough; the holder's own stream says whether it exists.
        let abandoned_by = match self.names.load(&claim).await?.owner {
            Some(holder) if self.users.load(&holder.to_string()).await?.id.is_none() => {
                Some(holder)
            }
            _ => None,
        };
        self.names
            .execute(
                &claim,
                NameCommand::Claim {
                    name: claims.key,
                    owner_id: user_id,
                    abandoned_by,
                    at: meta.at,
                },
                meta,
            )
            .await?;
        let meta = CommandMeta {
            actor_id: Some(user_id),
            ..meta.clone()
        };
        let refresh = RefreshToken::generate(user_id, Uuid::now_v7());
        let registered = self
            .users
            .execute(
                &user_id.to_string(),
                UserCommand::Register {
                    user_id,
                    username: username.to_owned(),
                    password: password.to_owned(),
                    display_name: display_name.to_owned(),
                    session: Some(NewSession {
                        family_id: refresh.family_id,
                        token_hash: refresh.secret_hash(),
                        expires_at: meta.at + self.keys.refresh_ttl,
                    }),
                    at: meta.at,
                },
                &meta,
            )
            .await;
        match registered {
            Ok(committed) => Ok(AuthTokens {
                registered: committed
                    .events
                    .iter()
                    .find_map(|envelope| UserRow::registered(&envelope.payload)),
                ..self.tokens(&refresh, &meta, committed.position)?
            }),
            Err(error) => {
                // Input was validated above, so this is a storage failure: give the
                // name back rather than leave it claimed by an account that never was.
                let release = NameCommand::Release {
                    owner_id: user_id,
                    at: meta.at,
                };
                if let Err(release_error) = self.names.execute(&claim, release, &meta).await {
                    tracing::error!(%user_id, error = %release_error,
                        "could not release the username of a failed registration");
                }
                Err(error.into())
            }
        }
    }

    /// Where `name`'s claim is kept.
    fn claims_of(&self, name: &Username) -> UsernameClaims {
        UsernameClaims::new(name.as_str(), self.keyring.name_digest(name.as_str()))
    }

    /// Who holds `name`, under its digest or, claimed before digests, under the name.
    async fn holder(&self, name: &Username) -> Result<Option<Uuid>, AuthError> {
        let claims = self.claims_of(name);
        if let Some(owner) = self.names.load(&claims.current).await?.owner {
            return Ok(Some(owner));
        }
        match &claims.legacy {
            Some(legacy) => Ok(self.names.load(legacy).await?.owner),
            None => Ok(None),
        }
    }

    /// Whether a claim made before digests still holds its name: its account exists, or
    /// it is too young to count as abandoned. (No new claim is made there, so checking
    /// before claiming the digest leaves no race.)
    async fn holds_legacy(
        &self,
        legacy: &str,
        at: time::OffsetDateTime,
    ) -> Result<bool, AuthError> {
        let claim = self.names.load(legacy).await?;
        let Some(holder) = claim.owner else {
            return Ok(false);
        };
        let young = claim
            .claimed_at
            .is_some_and(|claimed| claimed + ABANDONED_AFTER > at);
        Ok(young || self.users.load(&holder.to_string()).await?.id.is_some())
    }

    /// `login`: wrong password and unknown user fail alike, after the same work.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        meta: &CommandMeta,
    ) -> Result<AuthTokens, AuthError> {
        let owner = match Username::parse(username, "username") {
            Ok(name) => self.holder(&name).await?,
            Err(_) => None,
        };
        let Some(user_id) = owner else {
            self.hasher.verify_dummy(password).await;
            return Err(UserError::InvalidCredentials.into());
        };
        let meta = CommandMeta {
            actor_id: Some(user_id),
            ..meta.clone()
        };
        self.start_session(user_id, password, &meta).await
    }

    async fn start_session(
        &self,
        user_id: Uuid,
        password: &str,
        meta: &CommandMeta,
    ) -> Result<AuthTokens, AuthError> {
        // Verified here, outside the account's command lock: a flood of logins to one
        // account must not hold up its refreshes or anyone else's commands.
        let verified_hash = self.users.load(&user_id.to_string()).await?.password_hash;
        if !self.hasher.verify(password, &verified_hash).await {
            return Err(UserError::InvalidCredentials.into());
        }
        let refresh = RefreshToken::generate(user_id, Uuid::now_v7());
        let committed = self
            .users
            .execute(
                &user_id.to_string(),
                UserCommand::Login {
                    verified_hash,
                    family_id: refresh.family_id,
                    token_hash: refresh.secret_hash(),
                    expires_at: meta.at + self.keys.refresh_ttl,
                    at: meta.at,
                },
                meta,
            )
            .await?;
        self.tokens(&refresh, meta, committed.position)
    }

    /// `refreshToken`: rotates the token; a replayed old token revokes its family.
    pub async fn refresh(&self, raw: &str, meta: &CommandMeta) -> Result<AuthTokens, AuthError> {
        let presented =
            RefreshToken::parse(raw).ok_or(AuthError::User(UserError::InvalidRefreshToken))?;
        let next = RefreshToken::generate(presented.user_id, presented.family_id);
        let meta = CommandMeta {
            actor_id: Some(presented.user_id),
            ..meta.clone()
        };
        let committed = self
            .users
            .execute(
                &presented.user_id.to_string(),
                UserCommand::Refresh {
                    family_id: presented.family_id,
                    presented_hash: presented.secret_hash(),
                    new_hash: next.secret_hash(),
                    expires_at: meta.at + self.keys.refresh_ttl,
                    at: meta.at,
                },
                &meta,
            )
            .await?;
        let reused = committed
            .events
            .iter()
            .any(|event| matches!(event.payload, UserEvent::RefreshTokenReused { .. }));
        if reused {
            tracing::warn!(user_id = %presented.user_id, family_id = %presented.family_id,
                "refresh token reuse detected; session family revoked");
            self.revocations.end([presented.family_id]);
            return Err(UserError::InvalidRefreshToken.into());
        }
        self.tokens(&next, &meta, committed.position)
    }

    /// `logout`: ends the token's session. False when it was not an open session.
    pub async fn logout(&self, raw: &str, meta: &CommandMeta) -> Result<bool, AuthError> {
        let Some(presented) = RefreshToken::parse(raw) else {
            return Ok(false);
        };
        let meta = CommandMeta {
            actor_id: Some(presented.user_id),
            ..meta.clone()
        };
        let result = self
            .users
            .execute(
                &presented.user_id.to_string(),
                UserCommand::Logout {
                    family_id: presented.family_id,
                    presented_hash: presented.secret_hash(),
                    at: meta.at,
                },
                &meta,
            )
            .await;
        match result {
            Ok(_) => {
                self.revocations.end([presented.family_id]);
                Ok(true)
            }
            Err(cqrs_es::AggregateError::UserError(_)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// `changePassword`: needs the current password; revokes every refresh token.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current_password: &str,
        new_password: &str,
        meta: &CommandMeta,
    ) -> Result<Option<LogPosition>, AuthError> {
        // The sessions the change ends; one started meanwhile reaches this node (and
        // every other) through the log a moment later.
        let open: Vec<Uuid> = self
            .users
            .load(&user_id.to_string())
            .await?
            .sessions
            .into_keys()
            .collect();
        let committed = self
            .users
            .execute(
                &user_id.to_string(),
                UserCommand::ChangePassword {
                    current_password: current_password.to_owned(),
                    new_password: new_password.to_owned(),
                    at: meta.at,
                },
                meta,
            )
            .await?;
        self.revocations.end(open);
        Ok(committed.position)
    }
}
