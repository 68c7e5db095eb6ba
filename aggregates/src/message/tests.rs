use std::collections::BTreeSet;

use cqrs_es::test::TestFramework;
use time::macros::datetime;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::conversation::mentions::{directory_of, Named};
use crate::policy::Role;
use crate::values::InputError;

const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);
const CONV: Uuid = Uuid::from_u128(0xC0);
const MSG: Uuid = Uuid::from_u128(0x10);
const ALICE: Uuid = Uuid::from_u128(1);
const BOB: Uuid = Uuid::from_u128(2);
const CAROL: Uuid = Uuid::from_u128(3);
const DAVE: Uuid = Uuid::from_u128(4);

fn posted() -> PostedMessage {
    PostedMessage {
        message_id: MSG,
        conversation_id: CONV,
        author_id: BOB,
        seq: 7,
        body: "hello @carol".to_owned(),
        mentions: BTreeSet::from([CAROL]),
        posted_at: Some(NOW),
    }
}

fn actor(user_id: Uuid, role: Option<Role>) -> Actor {
    Actor {
        user_id,
        role,
        members: BTreeSet::from([ALICE, BOB, CAROL]),
        muted: false,
        author_role: Some(Role::Member),
    }
}

/// Every account of these tests by name; Dave is not a member of the conversation.
fn directory() -> Named {
    directory_of(&[
        ("alice", ALICE),
        ("bob", BOB),
        ("carol", CAROL),
        ("dave", DAVE),
    ])
}

fn framework() -> TestFramework<Message> {
    TestFramework::with(())
}

fn edit(user: Uuid, body: &str) -> MessageCommand {
    MessageCommand::Edit {
        posted: posted(),
        actor: actor(user, Some(Role::Member)),
        body: body.to_owned(),
        max_body_chars: 50,
        named: directory(),
        at: NOW,
    }
}

fn edited(
    body: &str,
    previous: &str,
    mentions: Vec<Uuid>,
    new_mentions: Vec<Uuid>,
) -> MessageEvent {
    MessageEvent::MessageEdited {
        message_id: MSG,
        conversation_id: CONV,
        author_id: BOB,
        seq: 7,
        body: body.to_owned(),
        previous_body: previous.to_owned(),
        mentions,
        new_mentions,
        edited_at: NOW,
        posted_at: Some(NOW),
    }
}

fn deleted(by: Uuid, reason: Option<&str>) -> MessageEvent {
    MessageEvent::MessageDeleted {
        message_id: MSG,
        conversation_id: CONV,
        author_id: BOB,
        seq: 7,
        deleted_by: by,
        reason: reason.map(str::to_owned),
        deleted_at: NOW,
    }
}

async fn error_of(given: Vec<MessageEvent>, command: MessageCommand) -> MessageError {
    framework()
        .given(given)
        .when_async(command)
        .await
        .inspect_result()
        .expect_err("refused")
}

#[tokio::test]
async fn the_author_edits_keeping_the_previous_body_and_notifying_only_new_mentions() {
    framework()
        .given_no_previous_events()
        .when_async(edit(BOB, "hello @carol and @alice"))
        .await
        .then_expect_events(vec![edited(
            "hello @carol and @alice",
            "hello @carol",
            vec![ALICE, CAROL],
            vec![ALICE],
        )]);
    framework()
        .given(vec![edited(
            "v2 @alice",
            "hello @carol",
            vec![ALICE],
            vec![ALICE],
        )])
        .when_async(edit(BOB, "v3 @alice @carol"))
        .await
        .then_expect_events(vec![edited(
            "v3 @alice @carol",
            "v2 @alice",
            vec![ALICE, CAROL],
            vec![CAROL],
        )]);
}

#[tokio::test]
async fn an_edit_mentions_only_members_other_than_the_author_that_the_directory_knows() {
    framework()
        .given_no_previous_events()
        .when_async(edit(BOB, "@bob @dave @nobody @carol"))
        .await
        .then_expect_events(vec![edited(
            "@bob @dave @nobody @carol",
            "hello @carol",
            vec![CAROL],
            vec![],
        )]);
}

#[tokio::test]
async fn edits_by_others_of_deleted_messages_or_with_bad_bodies_are_refused() {
    assert!(matches!(
        error_of(vec![], edit(ALICE, "mine now")).await,
        MessageError::NotAllowed(_)
    ));
    assert_eq!(
        error_of(vec![deleted(BOB, None)], edit(BOB, "again")).await,
        MessageError::Deleted
    );
    assert!(matches!(
        error_of(vec![], edit(BOB, " ")).await,
        MessageError::Invalid(InputError { field: "body", .. })
    ));
    let outsider = MessageCommand::Edit {
        posted: posted(),
        actor: actor(BOB, None),
        body: "x".to_owned(),
        max_body_chars: 50,
        named: directory(),
        at: NOW,
    };
    assert_eq!(error_of(vec![], outsider).await, MessageError::NotMember);
    framework()
        .given_no_previous_events()
        .when_async(edit(BOB, "hello @carol"))
        .await
        .then_expect_events(vec![]);
}

fn delete(user: Uuid, role: Role, reason: Option<&str>) -> MessageCommand {
    MessageCommand::Delete {
        posted: posted(),
        actor: actor(user, Some(role)),
        reason: reason.map(str::to_owned),
        at: NOW,
    }
}

#[tokio::test]
async fn authors_delete_freely_and_moderators_with_a_reason() {
    framework()
        .given_no_previous_events()
        .when_async(delete(BOB, Role::Member, None))
        .await
        .then_expect_events(vec![deleted(BOB, None)]);
    framework()
        .given_no_previous_events()
        .when_async(delete(ALICE, Role::Admin, Some(" spam ")))
        .await
        .then_expect_events(vec![deleted(ALICE, Some("spam"))]);
    assert!(matches!(
        error_of(vec![], delete(ALICE, Role::Admin, None)).await,
        MessageError::Invalid(InputError {
            field: "reason",
            ..
        })
    ));
    assert!(matches!(
        error_of(vec![], delete(CAROL, Role::Member, Some("no"))).await,
        MessageError::NotAllowed(_)
    ));
    assert!(matches!(
        error_of(vec![], delete(ALICE, Role::Owner, Some(&"r".repeat(501)))).await,
        MessageError::Invalid(InputError {
            field: "reason",
            ..
        })
    ));
    framework()
        .given(vec![deleted(BOB, None)])
        .when_async(delete(BOB, Role::Member, None))
        .await
        .then_expect_events(vec![]);
}

fn react(user: Uuid, emoji: &str) -> MessageCommand {
    MessageCommand::AddReaction {
        posted: posted(),
        actor: actor(user, Some(Role::Member)),
        emoji: emoji.to_owned(),
        at: NOW,
    }
}

fn reaction_added(user: Uuid, emoji: &str) -> MessageEvent {
    MessageEvent::ReactionAdded {
        message_id: MSG,
        conversation_id: CONV,
        message_author_id: BOB,
        user_id: user,
        emoji: emoji.to_owned(),
        reacted_at: NOW,
    }
}

#[tokio::test]
async fn reactions_are_one_per_user_and_emoji_and_idempotent() {
    framework()
        .given_no_previous_events()
        .when_async(react(ALICE, "👍"))
        .await
        .then_expect_events(vec![reaction_added(ALICE, "👍")]);
    framework()
        .given(vec![reaction_added(ALICE, "👍")])
        .when_async(react(ALICE, "👍"))
        .await
        .then_expect_events(vec![]);
    framework()
        .given(vec![reaction_added(ALICE, "👍")])
        .when_async(react(CAROL, "👍"))
        .await
        .then_expect_events(vec![reaction_added(CAROL, "👍")]);
    let remove = |user| MessageCommand::RemoveReaction {
        posted: posted(),
        actor: actor(user, Some(Role::Member)),
        emoji: "👍".to_owned(),
        at: NOW,
    };
    framework()
        .given(vec![reaction_added(ALICE, "👍")])
        .when_async(remove(ALICE))
        .await
        .then_expect_events(vec![MessageEvent::ReactionRemoved {
            message_id: MSG,
            conversation_id: CONV,
            message_author_id: BOB,
            user_id: ALICE,
            emoji: "👍".to_owned(),
            removed_at: NOW,
        }]);
    framework()
        .given_no_previous_events()
        .when_async(remove(ALICE))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn muted_members_cannot_react_and_admins_cannot_delete_an_admins_message() {
    let mut muted = actor(ALICE, Some(Role::Member));
    muted.muted = true;
    let react = MessageCommand::AddReaction {
        posted: posted(),
        actor: muted,
        emoji: "👍".to_owned(),
        at: NOW,
    };
    assert!(matches!(
        error_of(vec![], react).await,
        MessageError::NotAllowed(_)
    ));
    let mut admin = actor(ALICE, Some(Role::Admin));
    admin.author_role = Some(Role::Admin);
    let delete = MessageCommand::Delete {
        posted: posted(),
        actor: admin,
        reason: Some("spam".to_owned()),
        at: NOW,
    };
    assert!(matches!(
        error_of(vec![], delete).await,
        MessageError::NotAllowed(_)
    ));
}

#[tokio::test]
async fn reactions_must_be_emoji_from_members_on_live_messages() {
    assert!(matches!(
        error_of(vec![], react(ALICE, "lol")).await,
        MessageError::Invalid(InputError { field: "emoji", .. })
    ));
    assert_eq!(
        error_of(vec![deleted(BOB, None)], react(ALICE, "👍")).await,
        MessageError::Deleted
    );
    let outsider = MessageCommand::AddReaction {
        posted: posted(),
        actor: actor(ALICE, None),
        emoji: "👍".to_owned(),
        at: NOW,
    };
    assert_eq!(error_of(vec![], outsider).await, MessageError::NotMember);
}

#[tokio::test]
async fn a_muted_author_cannot_edit() {
    let mut muted = actor(BOB, Some(Role::Member));
    muted.muted = true;
    let command = MessageCommand::Edit {
        posted: posted(),
        actor: muted,
        body: "now mentioning @alice".to_owned(),
        max_body_chars: 50,
        named: directory(),
        at: NOW,
    };
    assert!(matches!(
        error_of(vec![], command).await,
        MessageError::NotAllowed(_)
    ));
}

#[tokio::test]
async fn a_user_puts_a_bounded_number_of_different_reactions_on_a_message() {
    let emoji: Vec<String> = (0..=MAX_REACTIONS_PER_USER)
        .map(|i| format!(":e{i}:"))
        .collect();
    let given: Vec<MessageEvent> = emoji[..MAX_REACTIONS_PER_USER]
        .iter()
        .map(|e| MessageEvent::ReactionAdded {
            message_id: MSG,
            conversation_id: CONV,
            message_author_id: BOB,
            user_id: ALICE,
            emoji: e.clone(),
            reacted_at: NOW,
        })
        .collect();
    assert!(matches!(
        error_of(given.clone(), react(ALICE, &emoji[MAX_REACTIONS_PER_USER])).await,
        MessageError::Invalid(InputError { field: "emoji", .. })
    ));
    // Others are not limited by Alice's reactions, and Alice may repeat one she has.
    framework()
        .given(given.clone())
        .when_async(react(CAROL, &emoji[MAX_REACTIONS_PER_USER]))
        .await
        .then_expect_events(vec![MessageEvent::ReactionAdded {
            message_id: MSG,
            conversation_id: CONV,
            message_author_id: BOB,
            user_id: CAROL,
            emoji: emoji[MAX_REACTIONS_PER_USER].clone(),
            reacted_at: NOW,
        }]);
    framework()
        .given(given)
        .when_async(react(ALICE, &emoji[0]))
        .await
        .then_expect_events(vec![]);
}
