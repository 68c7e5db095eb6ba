use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::*;
use crate::policy::Role;
use crate::values::{InputError, Slug};

const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);
const CONV: Uuid = Uuid::from_u128(0xC0);
const ALICE: Uuid = Uuid::from_u128(1);
const BOB: Uuid = Uuid::from_u128(2);
const CAROL: Uuid = Uuid::from_u128(3);
const DAVE: Uuid = Uuid::from_u128(4);
const INVITE: Uuid = Uuid::from_u128(0x1A);

fn user(id: Uuid) -> MemberRef {
    MemberRef { user_id: id }
}

fn services() -> ConversationServices {
    ConversationServices {
        max_body_chars: 20,
        max_members: 4,
        max_group_invites: 2,
        posted: std::sync::Arc::new(NoPosts),
    }
}

/// The log as the post lookup sees it: the posts given, searched newest first.
struct Posts(Vec<ConversationEvent>);

#[async_trait::async_trait]
impl PostedLookup for Posts {
    async fn find(
        &self,
        conversation: Uuid,
        author: Uuid,
        client_id: &str,
    ) -> Result<Option<ClientRecord>, LookupFailed> {
        Ok(self.0.iter().rev().find_map(|event| match event {
            ConversationEvent::MessagePosted {
                conversation_id,
                message_id,
                author_id,
                body,
                reply_to_id,
                client_message_id: Some(used),
                attachment_ids,
                posted_at,
                ..
            } if *conversation_id == conversation && *author_id == author && used == client_id => {
                Some(ClientRecord {
                    message_id: *message_id,
                    fingerprint: aggregate::fingerprint(body, *reply_to_id, attachment_ids),
                    posted_at: *posted_at,
                })
            }
            _ => None,
        }))
    }
}

/// A framework whose lookup finds the posts among `given`, as the log would.
async fn refused_with_log(
    given: Vec<ConversationEvent>,
    command: ConversationCommand,
) -> ConversationError {
    TestFramework::<Conversation>::with(ConversationServices {
        posted: std::sync::Arc::new(Posts(given.clone())),
        ..services()
    })
    .given(given)
    .when_async((CONV, command))
    .await
    .inspect_result()
    .expect_err("command must be refused")
}

fn framework() -> TestFramework<Conversation> {
    TestFramework::with(services())
}

fn member(id: Uuid, role: Role) -> InitialMember {
    InitialMember { user_id: id, role }
}

fn group_created() -> ConversationEvent {
    ConversationEvent::ConversationCreated {
        conversation_id: CONV,
        kind: ConversationKind::Group,
        title: Some("Trip".to_owned()),
        slug: None,
        description: None,
        visibility: Visibility::Private,
        creator_id: ALICE,
        members: vec![
            member(ALICE, Role::Owner),
            member(BOB, Role::Member),
            member(CAROL, Role::Member),
        ],
        created_at: NOW,
    }
}

fn channel_created(visibility: Visibility) -> ConversationEvent {
    ConversationEvent::ConversationCreated {
        conversation_id: CONV,
        kind: ConversationKind::Channel,
        title: Some("General".to_owned()),
        slug: Some("general".to_owned()),
        description: Some("all of us".to_owned()),
        visibility,
        creator_id: ALICE,
        members: vec![member(ALICE, Role::Owner)],
        created_at: NOW,
    }
}

fn post(message: u128, author: Uuid, body: &str) -> ConversationCommand {
    ConversationCommand::PostMessage {
        message_id: Uuid::from_u128(message),
        author_id: author,
        body: body.to_owned(),
        reply_to: None,
        client_message_id: None,
        attachment_ids: vec![],
        named: directory(),
        at: NOW,
    }
}

/// Every account of these tests by name, as the command service's directory finds them.
fn directory() -> mentions::Named {
    mentions::directory_of(&[
        ("alice", ALICE),
        ("bob", BOB),
        ("carol", CAROL),
        ("dave", DAVE),
    ])
}

fn posted(
    message: u128,
    seq: u64,
    author: Uuid,
    body: &str,
    mentions: Vec<Uuid>,
) -> ConversationEvent {
    ConversationEvent::MessagePosted {
        conversation_id: CONV,
        message_id: Uuid::from_u128(message),
        seq,
        author_id: author,
        body: body.to_owned(),
        format: "PLAIN".to_owned(),
        reply_to_id: None,
        reply_to_author_id: None,
        mentions,
        client_message_id: None,
        attachment_ids: vec![],
        posted_at: NOW,
    }
}

async fn error_of(
    given: Vec<ConversationEvent>,
    command: ConversationCommand,
) -> ConversationError {
    framework()
        .given(given)
        .when_async((CONV, command))
        .await
        .inspect_result()
        .expect_err("command must be refused")
}

#[tokio::test]
async fn a_group_starts_with_its_creator_as_owner_and_members_once_each() {
    framework()
        .given_no_previous_events()
        .when_async((
            CONV,
            ConversationCommand::CreateGroup {
                creator: user(ALICE),
                title: " Trip ".to_owned(),
                members: vec![user(BOB), user(CAROL), user(BOB), user(ALICE)],
                at: NOW,
            },
        ))
        .await
        .then_expect_events(vec![group_created()]);
}

#[tokio::test]
async fn a_group_needs_a_title_and_cannot_be_created_twice() {
    let command = || ConversationCommand::CreateGroup {
        creator: user(ALICE),
        title: "  ".to_owned(),
        members: vec![],
        at: NOW,
    };
    assert!(matches!(
        error_of(vec![], command()).await,
        ConversationError::Invalid(InputError { field: "title", .. })
    ));
    assert_eq!(
        error_of(vec![group_created()], command()).await,
        ConversationError::AlreadyExists
    );
}

#[tokio::test]
async fn a_direct_conversation_has_two_plain_members_and_not_oneself() {
    let id = direct_conversation_id(ALICE, BOB);
    assert_eq!(id, direct_conversation_id(BOB, ALICE));
    let events = framework()
        .given_no_previous_events()
        .when_async((
            id,
            ConversationCommand::CreateDirect {
                creator: user(ALICE),
                other: user(BOB),
                at: NOW,
            },
        ))
        .await
        .inspect_result()
        .expect("created");
    assert!(
        matches!(&events[..], [ConversationEvent::ConversationCreated { kind: ConversationKind::Direct, members, .. }]
        if members.iter().all(|m| m.role == Role::Member) && members.len() == 2)
    );
    let err = error_of(
        vec![],
        ConversationCommand::CreateDirect {
            creator: user(ALICE),
            other: user(ALICE),
            at: NOW,
        },
    )
    .await;
    assert!(matches!(
        err,
        ConversationError::Invalid(InputError {
            field: "userId",
            ..
        })
    ));
}

#[tokio::test]
async fn a_channel_records_name_slug_description_and_visibility() {
    framework()
        .given_no_previous_events()
        .when_async((
            CONV,
            ConversationCommand::CreateChannel {
                creator: user(ALICE),
                name: "General".to_owned(),
                slug: Slug::parse("general", "slug").expect("valid"),
                description: Some(" all of us ".to_owned()),
                visibility: Visibility::Public,
                at: NOW,
            },
        ))
        .await
        .then_expect_events(vec![channel_created(Visibility::Public)]);
}

#[tokio::test]
async fn anyone_can_join_a_public_channel_once_but_not_a_private_one() {
    let join = || ConversationCommand::Join {
        user: user(BOB),
        at: NOW,
    };
    framework()
        .given(vec![channel_created(Visibility::Public)])
        .when_async((CONV, join()))
        .await
        .then_expect_events(vec![ConversationEvent::MemberJoined {
            conversation_id: CONV,
            user_id: BOB,
            role: Role::Member,
            invitation_id: None,
            last_seq: 0,
            joined_at: NOW,
        }]);
    assert_eq!(
        error_of(vec![channel_created(Visibility::Private)], join()).await,
        ConversationError::NotPublic
    );
    assert_eq!(
        error_of(
            vec![group_created()],
            ConversationCommand::Join {
                user: user(DAVE),
                at: NOW
            }
        )
        .await,
        ConversationError::NotPublic
    );
    framework()
        .given(vec![group_created()])
        .when_async((CONV, join()))
        .await
        .then_expect_events(vec![]);
    assert_eq!(error_of(vec![], join()).await, ConversationError::NotFound);
}

#[tokio::test]
async fn members_leave_but_the_last_owner_must_transfer_first_and_dms_cannot_be_left() {
    framework()
        .given(vec![group_created()])
        .when_async((
            CONV,
            ConversationCommand::Leave {
                user_id: BOB,
                at: NOW,
            },
        ))
        .await
        .then_expect_events(vec![ConversationEvent::MemberLeft {
            conversation_id: CONV,
            user_id: BOB,
            left_at: NOW,
        }]);
    assert!(matches!(
        error_of(
            vec![group_created()],
            ConversationCommand::Leave {
                user_id: ALICE,
                at: NOW
            }
        )
        .await,
        ConversationError::NotAllowed(_)
    ));
    assert_eq!(
        error_of(
            vec![group_created()],
            ConversationCommand::Leave {
                user_id: DAVE,
                at: NOW
            }
        )
        .await,
        ConversationError::NotMember
    );
}

#[tokio::test]
async fn only_owners_and_admins_update_details() {
    let update = |actor| ConversationCommand::Update {
        actor_id: actor,
        title: Some("New".to_owned()),
        description: None,
        at: NOW,
    };
    framework()
        .given(vec![group_created()])
        .when_async((CONV, update(ALICE)))
        .await
        .then_expect_events(vec![ConversationEvent::ConversationUpdated {
            conversation_id: CONV,
            title: Some("New".to_owned()),
            description: None,
            updated_by: ALICE,
            updated_at: NOW,
        }]);
    assert!(matches!(
        error_of(vec![group_created()], update(BOB)).await,
        ConversationError::NotAllowed(_)
    ));
    assert_eq!(
        error_of(vec![group_created()], update(DAVE)).await,
        ConversationError::NotMember
    );
    let empty = ConversationCommand::Update {
        actor_id: ALICE,
        title: None,
        description: None,
        at: NOW,
    };
    assert!(matches!(
        error_of(vec![group_created()], empty).await,
        ConversationError::Invalid(_)
    ));
}

fn invited() -> ConversationEvent {
    ConversationEvent::InvitationSent {
        conversation_id: CONV,
        invitation_id: INVITE,
        inviter_id: BOB,
        invitee_id: DAVE,
        sent_at: NOW,
    }
}

#[tokio::test]
async fn invitations_go_to_non_members_once() {
    let invite = |invitee: MemberRef| ConversationCommand::Invite {
        invitation_id: INVITE,
        inviter_id: BOB,
        invitee,
        at: NOW,
    };
    framework()
        .given(vec![group_created()])
        .when_async((CONV, invite(user(DAVE))))
        .await
        .then_expect_events(vec![invited()]);
    assert_eq!(
        error_of(vec![group_created()], invite(user(CAROL))).await,
        ConversationError::AlreadyMember
    );
    assert_eq!(
        error_of(vec![group_created(), invited()], invite(user(DAVE))).await,
        ConversationError::AlreadyInvited
    );
    let outsider = ConversationCommand::Invite {
        invitation_id: INVITE,
        inviter_id: DAVE,
        invitee: user(Uuid::from_u128(9)),
        at: NOW,
    };
    assert_eq!(
        error_of(vec![group_created()], outsider).await,
        ConversationError::NotMember
    );
}

#[tokio::test]
async fn only_the_invitee_answers_and_only_a_pending_invitation() {
    let accept = |id: Uuid| ConversationCommand::AcceptInvitation {
        invitation_id: INVITE,
        user: user(id),
        at: NOW,
    };
    let events = framework()
        .given(vec![group_created(), invited()])
        .when_async((CONV, accept(DAVE)))
        .await
        .inspect_result()
        .expect("accepted");
    assert!(matches!(
        &events[..],
        [
            ConversationEvent::InvitationAccepted { .. },
            ConversationEvent::MemberJoined {
                user_id: DAVE,
                invitation_id: Some(INVITE),
                ..
            }
        ]
    ));
    assert_eq!(
        error_of(vec![group_created(), invited()], accept(CAROL)).await,
        ConversationError::NotInvitee
    );
    let declined = ConversationEvent::InvitationDeclined {
        conversation_id: CONV,
        invitation_id: INVITE,
        invitee_id: DAVE,
        declined_at: NOW,
    };
    assert_eq!(
        error_of(vec![group_created(), invited(), declined], accept(DAVE)).await,
        ConversationError::InvitationNotPending
    );
    framework()
        .given(vec![group_created(), invited()])
        .when_async((
            CONV,
            ConversationCommand::DeclineInvitation {
                invitation_id: INVITE,
                user_id: DAVE,
                at: NOW,
            },
        ))
        .await
        .then_expect_events(vec![ConversationEvent::InvitationDeclined {
            conversation_id: CONV,
            invitation_id: INVITE,
            invitee_id: DAVE,
            declined_at: NOW,
        }]);
}

#[tokio::test]
async fn the_inviter_or_an_admin_revokes_an_invitation() {
    let revoke = |actor| ConversationCommand::RevokeInvitation {
        invitation_id: INVITE,
        actor_id: actor,
        at: NOW,
    };
    for actor in [BOB, ALICE] {
        framework()
            .given(vec![group_created(), invited()])
            .when_async((CONV, revoke(actor)))
            .await
            .then_expect_events(vec![ConversationEvent::InvitationRevoked {
                conversation_id: CONV,
                invitation_id: INVITE,
                invitee_id: DAVE,
                revoked_by: actor,
                revoked_at: NOW,
            }]);
    }
    assert!(matches!(
        error_of(vec![group_created(), invited()], revoke(CAROL)).await,
        ConversationError::NotAllowed(_)
    ));
}

#[tokio::test]
async fn messages_get_consecutive_seqs_and_resolve_mentions_of_members_only() {
    framework()
        .given(vec![group_created(), posted(10, 1, BOB, "first", vec![])])
        .when_async((CONV, post(11, ALICE, "hi @Bob @dave @alice")))
        .await
        .then_expect_events(vec![posted(
            11,
            2,
            ALICE,
            "hi @Bob @dave @alice",
            vec![BOB],
        )]);
}

#[tokio::test]
async fn bad_posts_are_refused_with_the_field_named() {
    assert_eq!(
        error_of(vec![group_created()], post(1, DAVE, "hi")).await,
        ConversationError::NotMember
    );
    assert!(matches!(
        error_of(vec![group_created()], post(1, BOB, "   ")).await,
        ConversationError::Invalid(InputError { field: "body", .. })
    ));
    assert!(matches!(
        error_of(vec![group_created()], post(1, BOB, &"x".repeat(21))).await,
        ConversationError::Invalid(InputError { field: "body", .. })
    ));
    let foreign_reply = ConversationCommand::PostMessage {
        message_id: Uuid::from_u128(1),
        author_id: BOB,
        body: "re".to_owned(),
        reply_to: Some(ReplyTarget {
            message_id: Uuid::from_u128(99),
            conversation_id: Uuid::from_u128(0xFF),
            author_id: ALICE,
        }),
        client_message_id: None,
        attachment_ids: vec![],
        named: directory(),
        at: NOW,
    };
    assert!(matches!(
        error_of(vec![group_created()], foreign_reply).await,
        ConversationError::Invalid(InputError {
            field: "replyToId",
            ..
        })
    ));
    assert_eq!(
        error_of(vec![], post(1, BOB, "hi")).await,
        ConversationError::NotFound
    );
}

fn post_with_client_id(
    message: u128,
    body: &str,
    client_id: &str,
    at: OffsetDateTime,
) -> ConversationCommand {
    ConversationCommand::PostMessage {
        message_id: Uuid::from_u128(message),
        author_id: BOB,
        body: body.to_owned(),
        reply_to: None,
        client_message_id: Some(client_id.to_owned()),
        attachment_ids: vec![],
        named: directory(),
        at,
    }
}

#[tokio::test]
async fn a_client_message_id_dedupes_retries_and_refuses_different_input_for_seven_days() {
    let first = framework()
        .given(vec![group_created()])
        .when_async((CONV, post_with_client_id(1, "hello", "c-1", NOW)))
        .await
        .inspect_result()
        .expect("posted");
    let mut given = vec![group_created()];
    given.extend(first);
    assert_eq!(
        refused_with_log(given.clone(), post_with_client_id(2, " hello ", "c-1", NOW)).await,
        ConversationError::AlreadyPosted {
            message_id: Uuid::from_u128(1)
        }
    );
    assert_eq!(
        refused_with_log(given.clone(), post_with_client_id(2, "other", "c-1", NOW)).await,
        ConversationError::ClientMessageIdReused
    );
    assert!(matches!(
        refused_with_log(
            given.clone(),
            post_with_client_id(2, "x", &"c".repeat(65), NOW)
        )
        .await,
        ConversationError::Invalid(InputError {
            field: "clientMessageId",
            ..
        })
    ));
    // Another author may use the same id; and after the retention window it is free again.
    let later = NOW + CLIENT_ID_RETENTION + Duration::minutes(1);
    TestFramework::<Conversation>::with(ConversationServices {
        posted: std::sync::Arc::new(Posts(given.clone())),
        ..services()
    })
    .given(given)
    .when_async((CONV, post_with_client_id(3, "other", "c-1", later)))
    .await
    .inspect_result()
    .expect("the id is forgotten after seven days");
}

#[tokio::test]
async fn a_failed_lookup_of_earlier_posts_refuses_the_post_rather_than_risk_a_duplicate() {
    struct Down;
    #[async_trait::async_trait]
    impl PostedLookup for Down {
        async fn find(
            &self,
            _: Uuid,
            _: Uuid,
            _: &str,
        ) -> Result<Option<ClientRecord>, LookupFailed> {
            Err(LookupFailed("database unreachable".to_owned()))
        }
    }
    let refused = TestFramework::<Conversation>::with(ConversationServices {
        posted: std::sync::Arc::new(Down),
        ..services()
    })
    .given(vec![group_created()])
    .when_async((CONV, post_with_client_id(1, "hello", "c-1", NOW)))
    .await
    .inspect_result()
    .expect_err("refused");
    assert!(matches!(refused, ConversationError::Lookup(_)));
    // Without a clientMessageId there is nothing to look up.
    framework()
        .given(vec![group_created()])
        .when_async((CONV, post(1, BOB, "hello")))
        .await
        .inspect_result()
        .expect("posted");
}

mod moderation {
    use super::*;

    const ACTION: Uuid = Uuid::from_u128(0xAC);

    fn with_admin() -> Vec<ConversationEvent> {
        vec![
            group_created(),
            ConversationEvent::MemberRoleChanged {
                conversation_id: CONV,
                action_id: ACTION,
                actor_id: ALICE,
                user_id: BOB,
                from: Role::Member,
                to: Role::Admin,
                reason: None,
                changed_at: NOW,
            },
        ]
    }

    fn kick(actor: Uuid, target: Uuid, reason: &str) -> ConversationCommand {
        ConversationCommand::Kick {
            action_id: ACTION,
            actor_id: actor,
            user_id: target,
            reason: reason.to_owned(),
            at: NOW,
        }
    }

    fn ban(actor: Uuid, target: Uuid, until: Option<OffsetDateTime>) -> ConversationCommand {
        ConversationCommand::Ban {
            action_id: ACTION,
            actor_id: actor,
            user_id: target,
            reason: "spam".to_owned(),
            until,
            at: NOW,
        }
    }

    fn banned(target: Uuid, until: Option<OffsetDateTime>) -> ConversationEvent {
        ConversationEvent::MemberBanned {
            conversation_id: CONV,
            action_id: ACTION,
            actor_id: ALICE,
            user_id: target,
            reason: "spam".to_owned(),
            until,
            banned_at: NOW,
        }
    }

    fn muted(target: Uuid, until: Option<OffsetDateTime>) -> ConversationEvent {
        ConversationEvent::MemberMuted {
            conversation_id: CONV,
            action_id: ACTION,
            actor_id: ALICE,
            user_id: target,
            reason: "calm down".to_owned(),
            until,
            muted_at: NOW,
        }
    }

    #[tokio::test]
    async fn only_the_owner_changes_roles_and_never_to_owner() {
        framework()
            .given(vec![group_created()])
            .when_async((
                CONV,
                ConversationCommand::SetMemberRole {
                    action_id: ACTION,
                    actor_id: ALICE,
                    user_id: BOB,
                    role: Role::Admin,
                    reason: None,
                    at: NOW,
                },
            ))
            .await
            .then_expect_events(with_admin()[1..].to_vec());
        let by_admin = ConversationCommand::SetMemberRole {
            action_id: ACTION,
            actor_id: BOB,
            user_id: CAROL,
            role: Role::Admin,
            reason: None,
            at: NOW,
        };
        assert!(matches!(
            error_of(with_admin(), by_admin).await,
            ConversationError::NotAllowed(_)
        ));
        let to_owner = ConversationCommand::SetMemberRole {
            action_id: ACTION,
            actor_id: ALICE,
            user_id: CAROL,
            role: Role::Owner,
            reason: None,
            at: NOW,
        };
        assert!(matches!(
            error_of(with_admin(), to_owner).await,
            ConversationError::Invalid(InputError { field: "role", .. })
        ));
    }

    #[tokio::test]
    async fn ownership_transfers_to_a_member_and_the_old_owner_becomes_admin() {
        let transfer = |actor, target| ConversationCommand::TransferOwnership {
            action_id: ACTION,
            actor_id: actor,
            user_id: target,
            reason: None,
            at: NOW,
        };
        framework()
            .given(vec![group_created()])
            .when_async((CONV, transfer(ALICE, CAROL)))
            .await
            .then_expect_events(vec![ConversationEvent::OwnershipTransferred {
                conversation_id: CONV,
                action_id: ACTION,
                actor_id: ALICE,
                user_id: CAROL,
                reason: None,
                transferred_at: NOW,
            }]);
        assert!(matches!(
            error_of(with_admin(), transfer(BOB, CAROL)).await,
            ConversationError::NotAllowed(_)
        ));
        assert_eq!(
            error_of(vec![group_created()], transfer(ALICE, DAVE)).await,
            ConversationError::TargetNotMember
        );
        let mut conversation = Conversation::default();
        for event in [
            group_created(),
            ConversationEvent::OwnershipTransferred {
                conversation_id: CONV,
                action_id: ACTION,
                actor_id: ALICE,
                user_id: CAROL,
                reason: None,
                transferred_at: NOW,
            },
        ] {
            conversation.apply(event);
        }
        assert_eq!(conversation.role_of(ALICE), Ok(Role::Admin));
        assert_eq!(conversation.role_of(CAROL), Ok(Role::Owner));
    }

    #[tokio::test]
    async fn members_cannot_kick_and_admins_cannot_act_on_admins_or_the_owner() {
        assert!(matches!(
            error_of(vec![group_created()], kick(CAROL, BOB, "no")).await,
            ConversationError::NotAllowed(_)
        ));
        assert!(matches!(
            error_of(with_admin(), kick(BOB, ALICE, "coup")).await,
            ConversationError::NotAllowed(_)
        ));
        assert!(matches!(
            error_of(with_admin(), ban(BOB, ALICE, None)).await,
            ConversationError::NotAllowed(_)
        ));
        assert!(matches!(
            error_of(with_admin(), kick(BOB, BOB, "me")).await,
            ConversationError::NotAllowed(_)
        ));
        framework()
            .given(with_admin())
            .when_async((CONV, kick(BOB, CAROL, " rude ")))
            .await
            .then_expect_events(vec![ConversationEvent::MemberKicked {
                conversation_id: CONV,
                action_id: ACTION,
                actor_id: BOB,
                user_id: CAROL,
                reason: "rude".to_owned(),
                kicked_at: NOW,
            }]);
    }

    #[tokio::test]
    async fn kicks_bans_and_mutes_need_a_reason_of_at_most_500_characters() {
        for reason in ["", "   ", &"r".repeat(501)] {
            assert!(matches!(
                error_of(vec![group_created()], kick(ALICE, CAROL, reason)).await,
                ConversationError::Invalid(InputError {
                    field: "reason",
                    ..
                })
            ));
        }
        let mute = ConversationCommand::Mute {
            action_id: ACTION,
            actor_id: ALICE,
            user_id: CAROL,
            reason: " ".to_owned(),
            until: None,
            at: NOW,
        };
        assert!(matches!(
            error_of(vec![group_created()], mute).await,
            ConversationError::Invalid(InputError {
                field: "reason",
                ..
            })
        ));
        let past = ban(ALICE, CAROL, Some(NOW - Duration::hours(1)));
        assert!(matches!(
            error_of(vec![group_created()], past).await,
            ConversationError::Invalid(InputError { field: "until", .. })
        ));
    }

    #[tokio::test]
    async fn a_ban_removes_the_member_withdraws_invitations_and_blocks_rejoining() {
        let invited_dave = ConversationEvent::InvitationSent {
            conversation_id: CONV,
            invitation_id: INVITE,
            inviter_id: ALICE,
            invitee_id: DAVE,
            sent_at: NOW,
        };
        let events = framework()
            .given(vec![group_created(), invited_dave])
            .when_async((CONV, ban(ALICE, DAVE, None)))
            .await
            .inspect_result()
            .expect("banned");
        assert!(matches!(
            &events[..],
            [
                ConversationEvent::InvitationRevoked {
                    invitee_id: DAVE,
                    ..
                },
                ConversationEvent::MemberBanned { user_id: DAVE, .. }
            ]
        ));

        let channel_ban = vec![channel_created(Visibility::Public), banned(BOB, None)];
        assert_eq!(
            error_of(
                channel_ban.clone(),
                ConversationCommand::Join {
                    user: user(BOB),
                    at: NOW
                }
            )
            .await,
            ConversationError::Banned
        );
        let invite = ConversationCommand::Invite {
            invitation_id: INVITE,
            inviter_id: ALICE,
            invitee: user(BOB),
            at: NOW,
        };
        assert_eq!(
            error_of(channel_ban, invite).await,
            ConversationError::TargetBanned
        );
        // Banning a member removes them: they can no longer post.
        assert_eq!(
            error_of(
                vec![group_created(), banned(CAROL, None)],
                post(1, CAROL, "hi")
            )
            .await,
            ConversationError::NotMember
        );
    }

    #[tokio::test]
    async fn bans_and_mutes_end_by_themselves_after_until() {
        let until = NOW + Duration::hours(1);
        let later = until + Duration::seconds(1);
        let join_later = ConversationCommand::Join {
            user: user(BOB),
            at: later,
        };
        framework()
            .given(vec![
                channel_created(Visibility::Public),
                banned(BOB, Some(until)),
            ])
            .when_async((CONV, join_later))
            .await
            .inspect_result()
            .expect("the ban is over");
        let mut late_post = post(1, CAROL, "back");
        if let ConversationCommand::PostMessage { at, .. } = &mut late_post {
            *at = later;
        }
        assert_eq!(
            error_of(
                vec![group_created(), muted(CAROL, Some(until))],
                post(1, CAROL, "hi")
            )
            .await,
            ConversationError::Muted
        );
        framework()
            .given(vec![group_created(), muted(CAROL, Some(until))])
            .when_async((CONV, late_post))
            .await
            .inspect_result()
            .expect("the mute is over");
    }

    #[tokio::test]
    async fn unban_and_unmute_need_an_active_ban_or_mute() {
        let unban = ConversationCommand::Unban {
            action_id: ACTION,
            actor_id: ALICE,
            user_id: DAVE,
            reason: None,
            at: NOW,
        };
        assert_eq!(
            error_of(vec![group_created()], unban.clone()).await,
            ConversationError::NotBanned
        );
        framework()
            .given(vec![group_created(), banned(DAVE, None)])
            .when_async((CONV, unban))
            .await
            .then_expect_events(vec![ConversationEvent::MemberUnbanned {
                conversation_id: CONV,
                action_id: ACTION,
                actor_id: ALICE,
                user_id: DAVE,
                reason: None,
                unbanned_at: NOW,
            }]);
        let unmute = ConversationCommand::Unmute {
            action_id: ACTION,
            actor_id: ALICE,
            user_id: CAROL,
            reason: Some("ok".to_owned()),
            at: NOW,
        };
        assert_eq!(
            error_of(vec![group_created()], unmute.clone()).await,
            ConversationError::NotMuted
        );
        framework()
            .given(vec![group_created(), muted(CAROL, None)])
            .when_async((CONV, unmute))
            .await
            .then_expect_events(vec![ConversationEvent::MemberUnmuted {
                conversation_id: CONV,
                action_id: ACTION,
                actor_id: ALICE,
                user_id: CAROL,
                reason: Some("ok".to_owned()),
                unmuted_at: NOW,
            }]);
    }

    #[tokio::test]
    async fn direct_conversations_have_no_moderation() {
        let direct = ConversationEvent::ConversationCreated {
            conversation_id: CONV,
            kind: ConversationKind::Direct,
            title: None,
            slug: None,
            description: None,
            visibility: Visibility::Private,
            creator_id: ALICE,
            members: vec![member(ALICE, Role::Member), member(BOB, Role::Member)],
            created_at: NOW,
        };
        assert!(matches!(
            error_of(vec![direct], kick(ALICE, BOB, "bye")).await,
            ConversationError::NotAllowed(_)
        ));
    }

    fn carol_joined() -> ConversationEvent {
        ConversationEvent::MemberJoined {
            conversation_id: CONV,
            user_id: CAROL,
            role: Role::Member,
            invitation_id: None,
            last_seq: 0,
            joined_at: NOW,
        }
    }

    #[tokio::test]
    async fn a_mute_outlives_leaving_and_rejoining() {
        let left = ConversationEvent::MemberLeft {
            conversation_id: CONV,
            user_id: CAROL,
            left_at: NOW,
        };
        let given = vec![
            channel_created(Visibility::Public),
            carol_joined(),
            muted(CAROL, None),
            left,
            carol_joined(),
        ];
        assert_eq!(
            error_of(given.clone(), post(0x10, CAROL, "back again")).await,
            ConversationError::Muted
        );
        let mut state = Conversation::default();
        for event in given {
            state.apply(event);
        }
        assert!(state.is_muted(CAROL, NOW));
    }

    #[tokio::test]
    async fn a_ban_outlives_being_kicked_and_blocks_joining_until_it_ends() {
        let until = NOW + Duration::days(1);
        let given = vec![
            channel_created(Visibility::Public),
            carol_joined(),
            banned(CAROL, Some(until)),
        ];
        let join = ConversationCommand::Join {
            user: user(CAROL),
            at: NOW + Duration::hours(1),
        };
        assert_eq!(
            error_of(given.clone(), join).await,
            ConversationError::Banned
        );
        framework()
            .given(given)
            .when_async((
                CONV,
                ConversationCommand::Join {
                    user: user(CAROL),
                    at: until + Duration::seconds(1),
                },
            ))
            .await
            .then_expect_events(vec![ConversationEvent::MemberJoined {
                conversation_id: CONV,
                user_id: CAROL,
                role: Role::Member,
                invitation_id: None,
                last_seq: 0,
                joined_at: until + Duration::seconds(1),
            }]);
    }

    #[tokio::test]
    async fn groups_name_a_bounded_number_of_members() {
        let create = ConversationCommand::CreateGroup {
            creator: user(ALICE),
            title: "Big".to_owned(),
            members: vec![user(BOB), user(CAROL), user(DAVE)],
            at: NOW,
        };
        assert!(matches!(
            error_of(vec![], create).await,
            ConversationError::Invalid(InputError {
                field: "memberIds",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_full_conversation_takes_no_one_more_and_pending_invitations_hold_seats() {
        // Alice, Bob, Carol and one pending invitation fill the four seats.
        let given = vec![
            group_created(),
            ConversationEvent::InvitationSent {
                conversation_id: CONV,
                invitation_id: INVITE,
                inviter_id: ALICE,
                invitee_id: DAVE,
                sent_at: NOW,
            },
        ];
        let another = ConversationCommand::Invite {
            invitation_id: Uuid::from_u128(0x1B),
            inviter_id: ALICE,
            invitee: user(Uuid::from_u128(5)),
            at: NOW,
        };
        assert_eq!(
            error_of(given.clone(), another).await,
            ConversationError::Full { max: 4 }
        );
        let mut public = vec![channel_created(Visibility::Public)];
        for n in [2, 3, 4] {
            public.push(ConversationEvent::MemberJoined {
                conversation_id: CONV,
                user_id: Uuid::from_u128(n),
                role: Role::Member,
                invitation_id: None,
                last_seq: 0,
                joined_at: NOW,
            });
        }
        let join = ConversationCommand::Join {
            user: user(Uuid::from_u128(5)),
            at: NOW,
        };
        assert_eq!(
            error_of(public, join).await,
            ConversationError::Full { max: 4 }
        );
    }
}

fn retention_set(days: Option<u32>) -> ConversationEvent {
    ConversationEvent::RetentionSet {
        conversation_id: CONV,
        days,
        set_by: ALICE,
        set_at: NOW,
    }
}

fn set_retention(actor_id: Uuid, days: Option<i64>) -> (Uuid, ConversationCommand) {
    (
        CONV,
        ConversationCommand::SetRetention {
            actor_id,
            days,
            at: NOW,
        },
    )
}

#[test]
fn owners_set_a_retention_window_and_null_returns_to_the_default() {
    framework()
        .given(vec![group_created()])
        .when(set_retention(ALICE, Some(30)))
        .then_expect_events(vec![retention_set(Some(30))]);
    framework()
        .given(vec![group_created(), retention_set(Some(30))])
        .when(set_retention(ALICE, None))
        .then_expect_events(vec![retention_set(None)]);
    // Setting what is set already records nothing.
    framework()
        .given(vec![group_created(), retention_set(Some(30))])
        .when(set_retention(ALICE, Some(30)))
        .then_expect_events(vec![]);
}

#[test]
fn retention_takes_whole_days_within_bounds_from_owners_and_admins_only() {
    for days in [0, -1, i64::from(MAX_RETENTION_DAYS) + 1, i64::MAX] {
        framework()
            .given(vec![group_created()])
            .when(set_retention(ALICE, Some(days)))
            .then_expect_error_message(&format!(
                "days: must be between 1 and {MAX_RETENTION_DAYS}, or null"
            ));
    }
    framework()
        .given(vec![group_created()])
        .when(set_retention(BOB, Some(7)))
        .then_expect_error(ConversationError::NotAllowed(
            "your role in this conversation does not allow that",
        ));
    framework()
        .given(vec![group_created()])
        .when(set_retention(DAVE, Some(7)))
        .then_expect_error(ConversationError::NotMember);
}

#[test]
fn an_expiry_is_recorded_once_and_never_moves_back() {
    let expired = |before| ConversationEvent::MessagesExpired {
        conversation_id: CONV,
        before,
        expired_at: NOW,
    };
    let day_ago = NOW - Duration::days(1);
    framework()
        .given(vec![group_created()])
        .when((
            CONV,
            ConversationCommand::Expire {
                before: day_ago,
                at: NOW,
            },
        ))
        .then_expect_events(vec![expired(day_ago)]);
    framework()
        .given(vec![group_created(), expired(day_ago)])
        .when((
            CONV,
            ConversationCommand::Expire {
                before: day_ago - Duration::hours(1),
                at: NOW,
            },
        ))
        .then_expect_events(vec![]);
}
