use cqrs_es::test::TestFramework;
use time::macros::datetime;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::policy::Role;

const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);
const UPLOAD: Uuid = Uuid::from_u128(0x55);
const CONV: Uuid = Uuid::from_u128(0xC0);
const OTHER_CONV: Uuid = Uuid::from_u128(0xC1);
const MSG: Uuid = Uuid::from_u128(0x10);
const ALICE: Uuid = Uuid::from_u128(1);
const BOB: Uuid = Uuid::from_u128(2);

fn framework() -> TestFramework<Upload> {
    TestFramework::with(())
}

fn member() -> Standing {
    Standing {
        role: Some(Role::Member),
        muted: false,
    }
}

fn create_with(standing: Standing, filename: &str, size: i64, open: u64) -> UploadCommand {
    UploadCommand::Create {
        upload_id: UPLOAD,
        owner_id: ALICE,
        conversation_id: CONV,
        standing,
        filename: filename.to_owned(),
        content_type: "image/png".to_owned(),
        size,
        max_bytes: 1000,
        open_uploads: open,
        max_open_uploads: 20,
        expires_at: NOW + time::Duration::minutes(10),
        at: NOW,
    }
}

fn created() -> UploadEvent {
    UploadEvent::UploadCreated {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        filename: "cat.png".to_owned(),
        content_type: "image/png".to_owned(),
        size: 100,
        object_key: incoming_key(UPLOAD),
        expires_at: NOW + time::Duration::minutes(10),
        created_at: NOW,
    }
}

fn metadata() -> Metadata {
    Metadata {
        sha256: "ab".repeat(32),
        width: Some(4),
        height: Some(3),
        duration_ms: None,
        thumbnail_key: Some(thumbnail_key(UPLOAD)),
    }
}

fn png(size: u64) -> Arrived {
    Arrived {
        size,
        sniffed_type: Some("image/png".to_owned()),
        executable: false,
        undecodable: None,
        metadata: metadata(),
    }
}

fn complete(arrived: Arrived) -> UploadCommand {
    UploadCommand::Complete {
        actor_id: ALICE,
        arrived,
        at: NOW,
    }
}

fn completed() -> UploadEvent {
    UploadEvent::UploadCompleted {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        filename: "cat.png".to_owned(),
        content_type: "image/png".to_owned(),
        size: 100,
        object_key: file_key(UPLOAD),
        metadata: metadata(),
        completed_at: NOW,
    }
}

fn attach(actor_id: Uuid, conversation_id: Uuid, client: Option<&str>) -> UploadCommand {
    UploadCommand::Attach {
        actor_id,
        conversation_id,
        message_id: MSG,
        client_message_id: client.map(str::to_owned),
        at: NOW,
    }
}

fn attached(client: Option<&str>) -> UploadEvent {
    UploadEvent::UploadAttached {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        message_id: MSG,
        client_message_id: client.map(str::to_owned),
        attached_at: NOW,
    }
}

#[test]
fn a_member_creates_an_upload_under_a_key_made_from_its_id_alone() {
    framework()
        .given_no_previous_events()
        .when(create_with(member(), "../../cat.png", 100, 0))
        .then_expect_events(vec![created()]);
}

#[test]
fn a_non_member_cannot_upload() {
    let stranger = Standing {
        role: None,
        muted: false,
    };
    framework()
        .given_no_previous_events()
        .when(create_with(stranger, "cat.png", 100, 0))
        .then_expect_error(UploadError::NotMember);
}

#[test]
fn a_muted_member_cannot_upload() {
    let muted = Standing {
        role: Some(Role::Member),
        muted: true,
    };
    framework()
        .given_no_previous_events()
        .when(create_with(muted, "cat.png", 100, 0))
        .then_expect_error(UploadError::Muted);
}

#[test]
fn a_declared_size_beyond_the_limit_or_empty_is_refused() {
    for size in [0, -1, 1001] {
        framework()
            .given_no_previous_events()
            .when(create_with(member(), "cat.png", size, 0))
            .then_expect_error(InputError::new("size", "must be between 1 and 1000 bytes").into());
    }
}

#[test]
fn too_many_open_uploads_are_refused() {
    framework()
        .given_no_previous_events()
        .when(create_with(member(), "cat.png", 100, 20))
        .then_expect_error(UploadError::TooManyOpen { max: 20 });
}

#[test]
fn what_arrived_as_declared_completes_with_its_metadata() {
    framework()
        .given(vec![created()])
        .when(complete(png(100)))
        .then_expect_events(vec![completed()]);
}

#[test]
fn completing_twice_changes_nothing() {
    framework()
        .given(vec![created(), completed()])
        .when(complete(png(100)))
        .then_expect_events(vec![]);
}

#[test]
fn someone_elses_upload_is_not_found() {
    framework()
        .given(vec![created()])
        .when(UploadCommand::Complete {
            actor_id: BOB,
            arrived: png(100),
            at: NOW,
        })
        .then_expect_error(UploadError::NotFound);
}

#[test]
fn a_different_size_is_refused() {
    framework()
        .given(vec![created()])
        .when(complete(png(101)))
        .then_expect_error(UploadError::Refused(
            "101 bytes arrived where 100 were declared".to_owned(),
        ));
}

#[test]
fn an_executable_declared_as_an_image_is_refused() {
    let exe = Arrived {
        sniffed_type: Some("application/vnd.microsoft.portable-executable".to_owned()),
        executable: true,
        ..png(100)
    };
    framework()
        .given(vec![created()])
        .when(complete(exe))
        .then_expect_error(UploadError::Refused(
            "programs and scripts cannot be attached".to_owned(),
        ));
}

#[test]
fn text_declared_as_an_image_is_refused() {
    let text = Arrived {
        sniffed_type: None,
        ..png(100)
    };
    framework()
        .given(vec![created()])
        .when(complete(text))
        .then_expect_error(UploadError::Refused(
            "the content is not image/png".to_owned(),
        ));
}

#[test]
fn an_image_too_large_to_decode_is_refused() {
    let bomb = Arrived {
        undecodable: Some("too large".to_owned()),
        ..png(100)
    };
    framework()
        .given(vec![created()])
        .when(complete(bomb))
        .then_expect_error(UploadError::Refused(
            "the image cannot be read: too large".to_owned(),
        ));
}

#[test]
fn a_completed_upload_is_attached_once() {
    framework()
        .given(vec![created(), completed()])
        .when(attach(ALICE, CONV, None))
        .then_expect_events(vec![attached(None)]);
    framework()
        .given(vec![created(), completed(), attached(None)])
        .when(attach(ALICE, CONV, None))
        .then_expect_error(UploadError::AlreadyAttached);
}

#[test]
fn a_retried_post_finds_its_own_claim() {
    framework()
        .given(vec![created(), completed(), attached(Some("c1"))])
        .when(attach(ALICE, CONV, Some("c1")))
        .then_expect_events(vec![]);
}

#[test]
fn only_the_owner_attaches_and_only_in_its_conversation() {
    framework()
        .given(vec![created(), completed()])
        .when(attach(BOB, CONV, None))
        .then_expect_error(UploadError::NotFound);
    framework()
        .given(vec![created(), completed()])
        .when(attach(ALICE, OTHER_CONV, None))
        .then_expect_error(
            InputError::new(
                "attachmentIds",
                "an attachment was uploaded to another conversation",
            )
            .into(),
        );
}

#[test]
fn an_upload_not_completed_cannot_be_attached() {
    framework()
        .given(vec![created()])
        .when(attach(ALICE, CONV, None))
        .then_expect_error(UploadError::NotCompleted);
}

#[test]
fn a_detached_upload_can_be_attached_again() {
    let detached = UploadEvent::UploadDetached {
        upload_id: UPLOAD,
        conversation_id: CONV,
        message_id: MSG,
        detached_at: NOW,
    };
    framework()
        .given(vec![created(), completed(), attached(None)])
        .when(UploadCommand::Detach {
            message_id: MSG,
            at: NOW,
        })
        .then_expect_events(vec![detached.clone()]);
    framework()
        .given(vec![created(), completed(), attached(None), detached])
        .when(attach(ALICE, CONV, None))
        .then_expect_events(vec![attached(None)]);
}

#[test]
fn a_rejection_is_recorded_once_and_ends_the_upload() {
    let rejected = UploadEvent::UploadRejected {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        reason: "no".to_owned(),
        rejected_at: NOW,
    };
    framework()
        .given(vec![created()])
        .when(UploadCommand::Reject {
            reason: "no".to_owned(),
            at: NOW,
        })
        .then_expect_events(vec![rejected.clone()]);
    framework()
        .given(vec![created(), rejected])
        .when(complete(png(100)))
        .then_expect_error(UploadError::Gone);
}

#[test]
fn a_removal_is_recorded_once() {
    let removed = UploadEvent::AttachmentRemoved {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        reason: RemovalReason::Abandoned,
        removed_at: NOW,
    };
    framework()
        .given(vec![created()])
        .when(UploadCommand::Remove {
            reason: RemovalReason::Abandoned,
            at: NOW,
        })
        .then_expect_events(vec![removed.clone()]);
    framework()
        .given(vec![created(), removed])
        .when(UploadCommand::Remove {
            reason: RemovalReason::Abandoned,
            at: NOW,
        })
        .then_expect_events(vec![]);
}

#[test]
fn an_upload_sent_meanwhile_is_not_removed_as_abandoned() {
    let attached = attached(None);
    framework()
        .given(vec![created(), completed(), attached.clone()])
        .when(UploadCommand::Remove {
            reason: RemovalReason::Abandoned,
            at: NOW,
        })
        .then_expect_events(vec![]);
    framework()
        .given(vec![created(), completed(), attached])
        .when(UploadCommand::Remove {
            reason: RemovalReason::MessageDeleted,
            at: NOW,
        })
        .then_expect_events(vec![UploadEvent::AttachmentRemoved {
            upload_id: UPLOAD,
            conversation_id: CONV,
            owner_id: ALICE,
            reason: RemovalReason::MessageDeleted,
            removed_at: NOW,
        }]);
}

#[test]
fn text_recognised_as_markup_completes_under_a_declared_text_type() {
    let svg = Arrived {
        sniffed_type: Some("text/xml".to_owned()),
        ..png(100)
    };
    assert_eq!(judge("image/svg+xml", 100, &svg), Ok(()));
    assert_eq!(judge("text/plain", 100, &svg), Ok(()));
    assert!(judge("image/png", 100, &svg).is_err());
}

fn created_as(filename: &str, content_type: &str) -> UploadEvent {
    UploadEvent::UploadCreated {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        filename: filename.to_owned(),
        content_type: content_type.to_owned(),
        size: 100,
        object_key: incoming_key(UPLOAD),
        expires_at: NOW + time::Duration::minutes(10),
        created_at: NOW,
    }
}

fn sniffed(media_type: &str) -> Arrived {
    Arrived {
        sniffed_type: Some(media_type.to_owned()),
        metadata: Metadata::default(),
        ..png(100)
    }
}

fn refused_as_a_program() -> UploadError {
    UploadError::Refused("programs and scripts cannot be attached".to_owned())
}

#[test]
fn a_program_name_is_refused_before_any_bytes_are_sent() {
    for name in [
        "setup.exe",
        "Install.MSI",
        "run.sh",
        "../x/tool.PS1",
        "app.jar.",
    ] {
        framework()
            .given_no_previous_events()
            .when(create_with(member(), name, 100, 0))
            .then_expect_error(
                InputError::new("filename", "programs and scripts cannot be attached").into(),
            );
    }
}

#[test]
fn html_and_svg_names_are_still_accepted_as_downloads() {
    for name in ["page.html", "page.htm", "pic.svg"] {
        let mut event = created();
        if let UploadEvent::UploadCreated { filename, .. } = &mut event {
            *filename = name.to_owned();
        }
        framework()
            .given_no_previous_events()
            .when(create_with(member(), name, 100, 0))
            .then_expect_events(vec![event]);
    }
}

#[test]
fn a_pending_upload_with_a_program_name_is_refused_on_completion() {
    // A ZIP is what a JAR or an APK reads as; the name is what makes it run.
    framework()
        .given(vec![created_as("game.apk", "application/zip")])
        .when(complete(sniffed("application/zip")))
        .then_expect_error(refused_as_a_program());
}

#[test]
fn an_installer_found_in_the_content_is_refused_whatever_it_is_called() {
    for found in ["application/x-ole-storage", "application/x-rpm"] {
        framework()
            .given(vec![created_as("notes.dat", "application/octet-stream")])
            .when(complete(sniffed(found)))
            .then_expect_error(refused_as_a_program());
    }
}

#[test]
fn a_program_declared_as_a_program_type_is_refused() {
    framework()
        .given(vec![created_as(
            "pkg.dat",
            "application/vnd.debian.binary-package",
        )])
        .when(complete(sniffed("application/vnd.debian.binary-package")))
        .then_expect_error(refused_as_a_program());
}

#[test]
fn a_known_format_declared_as_octet_stream_completes_under_the_declared_type() {
    let completed = UploadEvent::UploadCompleted {
        upload_id: UPLOAD,
        conversation_id: CONV,
        owner_id: ALICE,
        filename: "report.pdf".to_owned(),
        content_type: "application/octet-stream".to_owned(),
        size: 100,
        object_key: file_key(UPLOAD),
        metadata: Metadata::default(),
        completed_at: NOW,
    };
    framework()
        .given(vec![created_as("report.pdf", "application/octet-stream")])
        .when(complete(sniffed("application/pdf")))
        .then_expect_events(vec![completed]);
    for found in [
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ] {
        assert_eq!(
            judge("application/octet-stream", 100, &sniffed(found)),
            Ok(())
        );
    }
    // Not a program in disguise, though.
    let elf = Arrived {
        executable: true,
        ..sniffed("application/x-executable")
    };
    assert_eq!(
        judge("application/octet-stream", 100, &elf),
        Err("programs and scripts cannot be attached".to_owned())
    );
    // And only the unspecified type: a ZIP declared as a PDF is still a lie.
    assert!(judge("application/pdf", 100, &sniffed("application/zip")).is_err());
}

#[test]
fn a_certificate_is_not_a_program() {
    let certificate = sniffed("application/x-x509-ca-cert");
    for declared in [
        "application/x-x509-ca-cert",
        "application/x-pem-file",
        "application/pkix-cert",
        "text/plain",
        "application/octet-stream",
    ] {
        assert_eq!(judge(declared, 100, &certificate), Ok(()), "{declared}");
    }
    assert!(judge("image/png", 100, &certificate).is_err());
}

#[test]
fn an_image_whose_metadata_cannot_be_removed_is_refused() {
    let unsafe_to_serve = Arrived {
        undecodable: Some("its metadata cannot be removed".to_owned()),
        ..png(100)
    };
    framework()
        .given(vec![created()])
        .when(complete(unsafe_to_serve))
        .then_expect_error(UploadError::Refused(
            "the image cannot be read: its metadata cannot be removed".to_owned(),
        ));
}
