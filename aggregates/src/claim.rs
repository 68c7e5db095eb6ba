//! The `NameClaim` aggregate: unique names, keyed `username:<digest of the name>` (see
//! [`UsernameClaims`]) or `slug:<slug>`.
//!
//! Registration claims a username (and channel creation a slug) here before the thing
//! named exists. Two concurrent claims of one name both try to append sequence 1 to the
//! same stream; optimistic concurrency lets exactly one win, and the retried loser then
//! finds the name taken. Uniqueness is a property of the event store, not of a read model.
//!
//! A process can die between claiming a name and creating what it names. Such a claim
//! is not held forever: once it is older than [`ABANDONED_AFTER`] and the command
//! service found that its holder was never created, the next claim takes it over.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// How long a claim may wait for what it names to be created before it counts as
/// abandoned (creation follows a claim within milliseconds).
pub const ABANDONED_AFTER: time::Duration = time::Duration::minutes(1);

#[derive(Debug, Clone)]
pub enum NameCommand {
    /// `abandoned_by`: the holder the command service looked up and found never
    /// created (it checked the holder's own stream), if any.
    Claim {
        name: String,
        owner_id: Uuid,
        abandoned_by: Option<Uuid>,
        at: OffsetDateTime,
    },
    /// Gives the name back when what it was claimed for could not be created.
    Release { owner_id: Uuid, at: OffsetDateTime },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NameEvent {
    NameClaimed {
        name: String,
        owner_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        claimed_at: OffsetDateTime,
    },
    NameReleased {
        owner_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        released_at: OffsetDateTime,
    },
}

impl DomainEvent for NameEvent {
    fn event_type(&self) -> String {
        match self {
            Self::NameClaimed { .. } => "NameClaimed".to_owned(),
            Self::NameReleased { .. } => "NameReleased".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("this name is already taken")]
    Taken,
    #[error("this name is not held by this owner")]
    NotOwner,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameClaim {
    pub owner: Option<Uuid>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub claimed_at: Option<OffsetDateTime>,
}

/// Where a username's claim is kept. A claim's stream id and its `NameClaimed.name`
/// are the name's keyed digest (the store's `Keyring::name_digest`), so the log never
/// holds a username: usernames are personal data an erasure must be able to remove.
/// Names claimed before claims were digested are held under the name itself, which
/// registration and login still consult.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameClaims {
    /// What a new claim is recorded as: the digest (the name itself without one).
    pub key: String,
    /// The stream a new claim goes to.
    pub current: String,
    /// The stream of a claim made before digests, if digests are in use.
    pub legacy: Option<String>,
}

impl UsernameClaims {
    pub fn new(username: &str, digest: Option<String>) -> Self {
        let legacy = format!("username:{username}");
        match digest {
            Some(digest) => Self {
                current: format!("username:{digest}"),
                key: digest,
                legacy: Some(legacy),
            },
            None => Self {
                key: username.to_owned(),
                current: legacy,
                legacy: None,
            },
        }
    }
}

/// The claim id of a channel slug.
pub fn slug_claim(slug: &str) -> String {
    format!("slug:{slug}")
}

impl Aggregate for NameClaim {
    const TYPE: &'static str = "NameClaim";
    type Command = NameCommand;
    type Event = NameEvent;
    type Error = NameError;
    type Services = ();

    async fn handle(
        &mut self,
        command: NameCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NameError> {
        match command {
            NameCommand::Claim {
                name,
                owner_id,
                abandoned_by,
                at,
            } => {
                if let Some(holder) = self.owner {
                    let abandoned = abandoned_by == Some(holder)
                        && self
                            .claimed_at
                            .is_some_and(|claimed| claimed + ABANDONED_AFTER <= at);
                    if !abandoned {
                        return Err(NameError::Taken);
                    }
                    sink.write(
                        NameEvent::NameReleased {
                            owner_id: holder,
                            released_at: at,
                        },
                        self,
                    )
                    .await;
                }
                sink.write(
                    NameEvent::NameClaimed {
                        name,
                        owner_id,
                        claimed_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            NameCommand::Release { owner_id, at } => {
                if self.owner != Some(owner_id) {
                    return Err(NameError::NotOwner);
                }
                sink.write(
                    NameEvent::NameReleased {
                        owner_id,
                        released_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: NameEvent) {
        match event {
            NameEvent::NameClaimed {
                owner_id,
                claimed_at,
                ..
            } => {
                self.owner = Some(owner_id);
                self.claimed_at = Some(claimed_at);
            }
            NameEvent::NameReleased { .. } => {
                self.owner = None;
                self.claimed_at = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    use super::*;

    fn claim(user: u128) -> NameCommand {
        NameCommand::Claim {
            name: "alice".to_owned(),
            owner_id: Uuid::from_u128(user),
            abandoned_by: None,
            at: datetime!(2026-01-01 0:00 UTC),
        }
    }

    fn claimed(user: u128) -> NameEvent {
        NameEvent::NameClaimed {
            name: "alice".to_owned(),
            owner_id: Uuid::from_u128(user),
            claimed_at: datetime!(2026-01-01 0:00 UTC),
        }
    }

    #[tokio::test]
    async fn a_free_name_is_claimed() {
        TestFramework::<NameClaim>::with(())
            .given_no_previous_events()
            .when_async(claim(1))
            .await
            .then_expect_events(vec![claimed(1)]);
    }

    #[tokio::test]
    async fn only_the_owner_can_release_a_name_and_it_can_then_be_claimed() {
        let released = NameEvent::NameReleased {
            owner_id: Uuid::from_u128(1),
            released_at: datetime!(2026-01-01 0:00 UTC),
        };
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(NameCommand::Release {
                owner_id: Uuid::from_u128(1),
                at: datetime!(2026-01-01 0:00 UTC),
            })
            .await
            .then_expect_events(vec![released.clone()]);
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(NameCommand::Release {
                owner_id: Uuid::from_u128(2),
                at: datetime!(2026-01-01 0:00 UTC),
            })
            .await
            .then_expect_error(NameError::NotOwner);
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(1), released])
            .when_async(claim(2))
            .await
            .then_expect_events(vec![claimed(2)]);
    }

    #[tokio::test]
    async fn an_abandoned_claim_is_taken_over_only_once_it_is_old_enough() {
        let takeover = |at| NameCommand::Claim {
            name: "alice".to_owned(),
            owner_id: Uuid::from_u128(2),
            abandoned_by: Some(Uuid::from_u128(1)),
            at,
        };
        let later = datetime!(2026-01-01 0:00 UTC) + ABANDONED_AFTER;
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(takeover(later))
            .await
            .then_expect_events(vec![
                NameEvent::NameReleased {
                    owner_id: Uuid::from_u128(1),
                    released_at: later,
                },
                NameEvent::NameClaimed {
                    name: "alice".to_owned(),
                    owner_id: Uuid::from_u128(2),
                    claimed_at: later,
                },
            ]);
        // Too young: its creation may still be on its way.
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(takeover(later - time::Duration::seconds(1)))
            .await
            .then_expect_error(NameError::Taken);
        // Someone else's holder: the lookup was about another claim.
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(3)])
            .when_async(takeover(later))
            .await
            .then_expect_error(NameError::Taken);
    }

    #[tokio::test]
    async fn a_taken_name_cannot_be_claimed_again() {
        TestFramework::<NameClaim>::with(())
            .given(vec![claimed(1)])
            .when_async(claim(2))
            .await
            .then_expect_error(NameError::Taken);
    }
}
