use cqrs_es::Aggregate;
use std::sync::Arc;

use cqrs_es::test::TestFramework;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::*;
use crate::values::{DisplayName, InputError, Username};

/// Deterministic stand-in for argon2: `hash(p) = "h:" + p`.
struct FakeHasher;

#[async_trait::async_trait]
impl PasswordHasher for FakeHasher {
    async fn hash(&self, password: &str) -> Result<String, String> {
        Ok(format!("h:{password}"))
    }
    async fn verify(&self, password: &str, hash: &str) -> bool {
        hash == format!("h:{password}")
    }
}

const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);
const USER: Uuid = Uuid::from_u128(1);
const FAMILY: Uuid = Uuid::from_u128(100);

fn framework() -> TestFramework<User> {
    TestFramework::with(UserServices::new(Arc::new(FakeHasher)))
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: USER,
        username: Username::parse("alice", "username").expect("valid"),
        display_name: DisplayName::parse("Alice", "displayName").expect("valid"),
        password_hash: "h:correct horse".to_owned(),
        registered_at: NOW,
    }
}

fn session_started(family_id: Uuid, hash: &str, started_at: OffsetDateTime) -> UserEvent {
    UserEvent::SessionStarted {
        family_id,
        token_hash: hash.to_owned(),
        expires_at: started_at + Duration::days(30),
        started_at,
    }
}

fn register(username: &str, password: &str, display_name: &str) -> UserCommand {
    UserCommand::Register {
        user_id: USER,
        username: username.to_owned(),
        password: password.to_owned(),
        display_name: display_name.to_owned(),
        session: None,
        at: NOW,
    }
}

#[tokio::test]
async fn registering_normalises_the_username_and_stores_only_a_hash() {
    framework()
        .given_no_previous_events()
        .when_async(register(" Alice ", "correct horse", " Alice "))
        .await
        .then_expect_events(vec![registered()]);
}

#[tokio::test]
async fn registering_can_open_the_first_session_in_the_same_command() {
    let mut command = register("alice", "correct horse", "Alice");
    if let UserCommand::Register { session, .. } = &mut command {
        *session = Some(NewSession {
            family_id: FAMILY,
            token_hash: "t1".to_owned(),
            expires_at: NOW + Duration::days(30),
        });
    }
    framework()
        .given_no_previous_events()
        .when_async(command)
        .await
        .then_expect_events(vec![registered(), session_started(FAMILY, "t1", NOW)]);
}

#[tokio::test]
async fn registering_twice_is_refused() {
    framework()
        .given(vec![registered()])
        .when_async(register("alice", "correct horse", "Alice"))
        .await
        .then_expect_error(UserError::AlreadyRegistered);
}

#[tokio::test]
async fn registering_with_invalid_fields_names_the_field() {
    for (command, field) in [
        (register("a!", "correct horse", "Alice"), "username"),
        (register("alice", "short", "Alice"), "password"),
        (register("alice", "correct horse", "  "), "displayName"),
    ] {
        let result = framework()
            .given_no_previous_events()
            .when_async(command)
            .await
            .inspect_result();
        match result {
            Err(UserError::Invalid(InputError { field: got, .. })) => assert_eq!(got, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn logging_in_verified_against_the_current_hash_starts_a_session() {
    framework()
        .given(vec![registered()])
        .when_async(UserCommand::Login {
            verified_hash: "h:correct horse".to_owned(),
            family_id: FAMILY,
            token_hash: "t1".to_owned(),
            expires_at: NOW + Duration::days(30),
            at: NOW,
        })
        .await
        .then_expect_events(vec![session_started(FAMILY, "t1", NOW)]);
}

#[tokio::test]
async fn a_login_verified_against_a_hash_since_replaced_is_refused() {
    framework()
        .given(vec![registered()])
        .when_async(UserCommand::Login {
            verified_hash: "h:an older password".to_owned(),
            family_id: FAMILY,
            token_hash: "t1".to_owned(),
            expires_at: NOW + Duration::days(30),
            at: NOW,
        })
        .await
        .then_expect_error(UserError::InvalidCredentials);
}

#[tokio::test]
async fn logging_in_to_an_unregistered_user_gives_the_same_error_as_a_wrong_password() {
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::Login {
            verified_hash: String::new(),
            family_id: FAMILY,
            token_hash: "t1".to_owned(),
            expires_at: NOW + Duration::days(30),
            at: NOW,
        })
        .await
        .then_expect_error(UserError::InvalidCredentials);
}

fn refresh(presented: &str, new: &str, at: OffsetDateTime) -> UserCommand {
    UserCommand::Refresh {
        family_id: FAMILY,
        presented_hash: presented.to_owned(),
        new_hash: new.to_owned(),
        expires_at: at + Duration::days(30),
        at,
    }
}

#[tokio::test]
async fn refreshing_with_the_current_secret_rotates_it() {
    let later = NOW + Duration::hours(1);
    framework()
        .given(vec![registered(), session_started(FAMILY, "t1", NOW)])
        .when_async(refresh("t1", "t2", later))
        .await
        .then_expect_events(vec![UserEvent::SessionRefreshed {
            family_id: FAMILY,
            token_hash: "t2".to_owned(),
            expires_at: later + Duration::days(30),
            refreshed_at: later,
        }]);
}

#[tokio::test]
async fn presenting_a_rotated_secret_revokes_the_family() {
    let later = NOW + Duration::hours(1);
    framework()
        .given(vec![
            registered(),
            session_started(FAMILY, "t1", NOW),
            UserEvent::SessionRefreshed {
                family_id: FAMILY,
                token_hash: "t2".to_owned(),
                expires_at: later + Duration::days(30),
                refreshed_at: later,
            },
        ])
        .when_async(refresh("t1", "t3", later))
        .await
        .then_expect_events(vec![UserEvent::RefreshTokenReused {
            family_id: FAMILY,
            detected_at: later,
        }]);
}

#[tokio::test]
async fn a_revoked_family_cannot_be_refreshed_even_with_its_latest_secret() {
    framework()
        .given(vec![
            registered(),
            session_started(FAMILY, "t1", NOW),
            UserEvent::RefreshTokenReused {
                family_id: FAMILY,
                detected_at: NOW,
            },
        ])
        .when_async(refresh("t1", "t2", NOW))
        .await
        .then_expect_error(UserError::InvalidRefreshToken);
}

#[tokio::test]
async fn an_expired_session_cannot_be_refreshed() {
    framework()
        .given(vec![registered(), session_started(FAMILY, "t1", NOW)])
        .when_async(refresh("t1", "t2", NOW + Duration::days(31)))
        .await
        .then_expect_error(UserError::InvalidRefreshToken);
}

#[tokio::test]
async fn logging_out_ends_the_session_and_needs_its_current_secret() {
    framework()
        .given(vec![registered(), session_started(FAMILY, "t1", NOW)])
        .when_async(UserCommand::Logout {
            family_id: FAMILY,
            presented_hash: "t1".to_owned(),
            at: NOW,
        })
        .await
        .then_expect_events(vec![UserEvent::SessionEnded {
            family_id: FAMILY,
            ended_at: NOW,
        }]);
    framework()
        .given(vec![registered(), session_started(FAMILY, "t1", NOW)])
        .when_async(UserCommand::Logout {
            family_id: FAMILY,
            presented_hash: "other".to_owned(),
            at: NOW,
        })
        .await
        .then_expect_error(UserError::InvalidRefreshToken);
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_revokes_every_session() {
    let other = Uuid::from_u128(101);
    let events = framework()
        .given(vec![
            registered(),
            session_started(FAMILY, "t1", NOW),
            session_started(other, "u1", NOW),
        ])
        .when_async(UserCommand::ChangePassword {
            current_password: "correct horse".to_owned(),
            new_password: "battery staple".to_owned(),
            at: NOW,
        })
        .await
        .inspect_result()
        .expect("password change accepted");
    assert_eq!(
        events,
        vec![UserEvent::PasswordChanged {
            password_hash: "h:battery staple".to_owned(),
            changed_at: NOW,
        }]
    );
    let mut user = User::default();
    for event in [
        registered(),
        session_started(FAMILY, "t1", NOW),
        session_started(other, "u1", NOW),
    ]
    .into_iter()
    .chain(events)
    {
        user.apply(event);
    }
    assert!(user.sessions.is_empty());
}

#[tokio::test]
async fn changing_the_password_with_a_wrong_current_password_names_that_field() {
    framework()
        .given(vec![registered()])
        .when_async(UserCommand::ChangePassword {
            current_password: "wrong horse".to_owned(),
            new_password: "battery staple".to_owned(),
            at: NOW,
        })
        .await
        .then_expect_error(UserError::Invalid(InputError::new(
            "currentPassword",
            "does not match the current password",
        )));
}

#[tokio::test]
async fn changing_to_a_too_short_password_names_the_new_password_field() {
    let result = framework()
        .given(vec![registered()])
        .when_async(UserCommand::ChangePassword {
            current_password: "correct horse".to_owned(),
            new_password: "short".to_owned(),
            at: NOW,
        })
        .await
        .inspect_result();
    assert!(matches!(
        result,
        Err(UserError::Invalid(InputError {
            field: "newPassword",
            ..
        }))
    ));
}

#[test]
fn open_sessions_are_bounded_by_evicting_the_oldest() {
    let mut user = User::default();
    user.apply(registered());
    for i in 0..(MAX_SESSIONS as u128 + 5) {
        let at = NOW + Duration::seconds(i as i64);
        user.apply(session_started(Uuid::from_u128(1000 + i), "t", at));
    }
    assert_eq!(user.sessions.len(), MAX_SESSIONS);
    assert!(!user.sessions.contains_key(&Uuid::from_u128(1000)));
    assert!(user
        .sessions
        .contains_key(&Uuid::from_u128(1000 + MAX_SESSIONS as u128 + 4)));
}

fn erased(erased_by: Option<Uuid>, reason: Option<&str>) -> UserEvent {
    UserEvent::AccountErased {
        user_id: USER,
        erased_by,
        reason: reason.map(str::to_owned),
        erased_at: NOW,
    }
}

fn erase(password: Option<&str>, operator: bool, reason: Option<&str>) -> UserCommand {
    UserCommand::Erase {
        password: password.map(str::to_owned),
        operator,
        reason: reason.map(str::to_owned),
        at: NOW,
    }
}

#[tokio::test]
async fn the_owner_erases_the_account_with_the_password() {
    framework()
        .given(vec![registered(), session_started(FAMILY, "t1", NOW)])
        .when_async(erase(Some("correct horse"), false, None))
        .await
        .then_expect_events(vec![erased(Some(USER), None)]);
}

#[tokio::test]
async fn erasing_with_a_wrong_or_missing_password_names_the_field() {
    for password in [Some("wrong"), None] {
        framework()
            .given(vec![registered()])
            .when_async(erase(password, false, None))
            .await
            .then_expect_error_message(match password {
                Some(_) => "password: does not match the current password",
                None => "password: is required",
            });
    }
}

#[tokio::test]
async fn an_operator_erases_without_the_password_but_must_say_why() {
    framework()
        .given(vec![registered()])
        .when_async(erase(None, true, Some("GDPR request 42")))
        .await
        .then_expect_events(vec![erased(None, Some("GDPR request 42"))]);
    framework()
        .given(vec![registered()])
        .when_async(erase(None, true, None))
        .await
        .then_expect_error(UserError::Invalid(InputError::new(
            "reason",
            "is required for this action",
        )));
}

#[tokio::test]
async fn an_erased_account_takes_no_command_again() {
    framework()
        .given(vec![registered(), erased(Some(USER), None)])
        .when_async(erase(None, true, Some("again")))
        .await
        .then_expect_error(UserError::NotRegistered);
    framework()
        .given(vec![registered(), erased(Some(USER), None)])
        .when_async(UserCommand::Login {
            verified_hash: "h:correct horse".to_owned(),
            family_id: FAMILY,
            token_hash: "t1".to_owned(),
            expires_at: NOW + Duration::days(1),
            at: NOW,
        })
        .await
        .then_expect_error(UserError::InvalidCredentials);
}
