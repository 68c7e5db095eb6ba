//! The `UsernameClaim` aggregate, keyed by the normalised username.
//!
//! Registration claims the name here before the account exists. Two concurrent claims
//! of one name both try to append sequence 1 to the same stream; optimistic concurrency
//! lets exactly one win, and the retried loser then finds the name taken. That makes
//! case-insensitive uniqueness a property of the event store, not of a read model.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::values::Username;

#[derive(Debug, Clone)]
pub enum UsernameCommand {
    Claim {
        username: Username,
        user_id: Uuid,
        at: OffsetDateTime,
    },
    /// Gives the name back when the account it was claimed for could not be created.
    Release { user_id: Uuid, at: OffsetDateTime },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UsernameEvent {
    UsernameClaimed {
        username: Username,
        user_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        claimed_at: OffsetDateTime,
    },
    UsernameReleased {
        user_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        released_at: OffsetDateTime,
    },
}

impl DomainEvent for UsernameEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UsernameClaimed { .. } => "UsernameClaimed".to_owned(),
            Self::UsernameReleased { .. } => "UsernameReleased".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username is already taken")]
    Taken,
    #[error("username is not held by this user")]
    NotOwner,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsernameClaim {
    pub owner: Option<Uuid>,
}

impl Aggregate for UsernameClaim {
    const TYPE: &'static str = "UsernameClaim";
    type Command = UsernameCommand;
    type Event = UsernameEvent;
    type Error = UsernameError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UsernameCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UsernameError> {
        match command {
            UsernameCommand::Claim {
                username,
                user_id,
                at,
            } => {
                if self.owner.is_some() {
                    return Err(UsernameError::Taken);
                }
                sink.write(
                    UsernameEvent::UsernameClaimed {
                        username,
                        user_id,
                        claimed_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            UsernameCommand::Release { user_id, at } => {
                if self.owner != Some(user_id) {
                    return Err(UsernameError::NotOwner);
                }
                sink.write(
                    UsernameEvent::UsernameReleased {
                        user_id,
                        released_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: UsernameEvent) {
        match event {
            UsernameEvent::UsernameClaimed { user_id, .. } => self.owner = Some(user_id),
            UsernameEvent::UsernameReleased { .. } => self.owner = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    use super::*;

    fn claim(user: u128) -> UsernameCommand {
        UsernameCommand::Claim {
            username: Username::parse("alice", "username").expect("valid"),
            user_id: Uuid::from_u128(user),
            at: datetime!(2026-01-01 0:00 UTC),
        }
    }

    fn claimed(user: u128) -> UsernameEvent {
        UsernameEvent::UsernameClaimed {
            username: Username::parse("alice", "username").expect("valid"),
            user_id: Uuid::from_u128(user),
            claimed_at: datetime!(2026-01-01 0:00 UTC),
        }
    }

    #[tokio::test]
    async fn a_free_name_is_claimed() {
        TestFramework::<UsernameClaim>::with(())
            .given_no_previous_events()
            .when_async(claim(1))
            .await
            .then_expect_events(vec![claimed(1)]);
    }

    #[tokio::test]
    async fn only_the_owner_can_release_a_name_and_it_can_then_be_claimed() {
        let released = UsernameEvent::UsernameReleased {
            user_id: Uuid::from_u128(1),
            released_at: datetime!(2026-01-01 0:00 UTC),
        };
        TestFramework::<UsernameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(UsernameCommand::Release {
                user_id: Uuid::from_u128(1),
                at: datetime!(2026-01-01 0:00 UTC),
            })
            .await
            .then_expect_events(vec![released.clone()]);
        TestFramework::<UsernameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(UsernameCommand::Release {
                user_id: Uuid::from_u128(2),
                at: datetime!(2026-01-01 0:00 UTC),
            })
            .await
            .then_expect_error(UsernameError::NotOwner);
        TestFramework::<UsernameClaim>::with(())
            .given(vec![claimed(1), released])
            .when_async(claim(2))
            .await
            .then_expect_events(vec![claimed(2)]);
    }

    #[tokio::test]
    async fn a_taken_name_cannot_be_claimed_again() {
        TestFramework::<UsernameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(claim(2))
            .await
            .then_expect_error(UsernameError::Taken);
    }
}
