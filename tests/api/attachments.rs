//! Attachments end to end: `createUpload`, the signed upload, `completeUpload`,
//! `sendMessage` with `attachmentIds`, signed downloads and the sweeper, on every
//! backend. Each refusal carries its code and leaves no object behind.

use std::io::Cursor;
use std::sync::Arc;

use parley::clock::Clock as _;

use serde_json::{json, Value};

use crate::helpers::*;

const CREATE: &str = "mutation($i: CreateUploadInput!) { createUpload(input: $i) { id uploadUrl method headers { name value } expiresAt } }";
const COMPLETE: &str = "mutation($id: ID!) { completeUpload(uploadId: $id) { id filename contentType size url thumbnailUrl width height durationMs } }";
const SEND_WITH: &str = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id attachments { id filename url } } }";

/// How many events of `event_type` the log holds.
async fn count_events(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.state.db.read)
        .await
        .expect("count")
}

pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 99])
    });
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode PNG");
    out.into_inner()
}

/// A PNG whose header announces 30,000 × 30,000 pixels (2.7 GB decoded).
fn png_bomb() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 30_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&30_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A minimal ELF header: an executable, whatever it claims to be.
fn elf() -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01\0".to_vec();
    bytes.resize(128, 0);
    bytes
}

async fn create_upload(
    app: &TestApp,
    who: &Client,
    conversation: &str,
    filename: &str,
    content_type: &str,
    size: usize,
) -> Value {
    gql(
        app,
        who,
        CREATE,
        json!({ "i": { "conversationId": conversation, "filename": filename, "contentType": content_type, "size": size } }),
    )
    .await
}

/// Sends `body` as the upload's bytes with the headers it was given; the HTTP status.
async fn put(app: &TestApp, upload: &Value, body: Vec<u8>) -> u16 {
    let upload = &upload["data"]["createUpload"];
    assert_eq!(upload["method"], "PUT", "{upload}");
    let mut request = app
        .client
        .put(upload["uploadUrl"].as_str().expect("uploadUrl"));
    for header in upload["headers"].as_array().expect("headers") {
        // The body's own length goes with it, as a browser sends it.
        if header["name"]
            .as_str()
            .is_some_and(|name| name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        request = request.header(
            header["name"].as_str().expect("name"),
            header["value"].as_str().expect("value"),
        );
    }
    request
        .body(body)
        .send()
        .await
        .expect("PUT sent")
        .status()
        .as_u16()
}

async fn complete(app: &TestApp, who: &Client, upload: &Value) -> Value {
    gql(
        app,
        who,
        COMPLETE,
        json!({ "id": upload["data"]["createUpload"]["id"] }),
    )
    .await
}

/// Creates, sends and completes an upload of `bytes`; the `completeUpload` response.
pub(crate) async fn upload(
    app: &TestApp,
    who: &Client,
    conversation: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Value {
    let created = create_upload(app, who, conversation, filename, content_type, bytes.len()).await;
    ok(&created);
    assert_eq!(put(app, &created, bytes).await, 200);
    complete(app, who, &created).await
}

pub(crate) fn upload_id(created: &Value) -> String {
    text(created, "/data/createUpload/id").to_owned()
}

/// Where a test keeps its blobs: the data directory, or a bucket of its own on the S3
/// server that `PARLEY_TEST_S3_ENDPOINT` names (scripts/test.sh starts one, with
/// credentials in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    Embedded,
    S3,
}

pub(crate) fn setups() -> Vec<(Backend, Store)> {
    let mut stores = vec![Store::Embedded];
    if std::env::var_os("PARLEY_TEST_S3_ENDPOINT").is_some() {
        stores.push(Store::S3);
    }
    backends()
        .into_iter()
        .flat_map(|backend| stores.iter().map(move |store| (backend, *store)))
        .collect()
}

fn s3_endpoint() -> String {
    std::env::var("PARLEY_TEST_S3_ENDPOINT").expect("PARLEY_TEST_S3_ENDPOINT")
}

async fn s3_client() -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::v2026_11_17())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(s3_endpoint())
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub(crate) async fn spawn(
    backend: Backend,
    store: Store,
    clock: Arc<dyn parley::clock::Clock>,
) -> TestApp {
    let bucket = match store {
        Store::Embedded => None,
        Store::S3 => {
            let bucket = format!("parley-{}", uuid::Uuid::new_v4().simple());
            s3_client()
                .await
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("bucket created");
            Some(bucket)
        }
    };
    let database = TestDatabase::new(backend).await;
    spawn_app_with(
        database,
        |config| {
            if let Some(bucket) = bucket {
                config.s3_bucket = Some(bucket);
                config.s3_endpoint = Some(s3_endpoint());
                config.s3_force_path_style = true;
            }
        },
        clock,
    )
    .await
}

/// Every object stored, as `kind/name`.
pub(crate) async fn objects(app: &TestApp) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(bucket) = &app.state.config.s3_bucket {
        let listed = s3_client()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("listed");
        found.extend(
            listed
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    } else {
        let root = app.database.dir.path().join("blobs");
        for kind in ["incoming", "files", "thumbs"] {
            if let Ok(entries) = std::fs::read_dir(root.join(kind)) {
                for entry in entries.flatten() {
                    found.push(format!("{kind}/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
    }
    found.sort();
    found
}

/// The attachments read model is idempotent: every event applied once more changes
/// no row.
async fn assert_replay_changes_nothing(app: &TestApp) {
    use parley_projections::Projector as _;
    let db = &app.state.db;
    // The sweeper, like any background writer, does not wait for the read models.
    let head = parley_store::log::head(db).await.expect("head");
    app.state.settle(Some(head)).await;
    let before = dump(db, &["attachments"]).await;
    let events = parley_store::log::read_after(db, parley_store::LogPosition::START, 10_000)
        .await
        .expect("read the log");
    let mut tx = db.write.begin().await.expect("begin");
    for event in &events {
        parley_projections::attachments::AttachmentsProjector
            .apply(&mut tx, event)
            .await
            .expect("reapply");
    }
    tx.commit().await.expect("commit");
    assert_eq!(dump(db, &["attachments"]).await, before);
}

async fn download(app: &TestApp, url: &str) -> reqwest::Response {
    app.client.get(url).send().await.expect("GET sent")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_png_goes_up_completes_with_its_dimensions_and_a_member_downloads_exactly_its_bytes() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "pics", &[&bob]).await;
        let bytes = png(640, 480);
        let completed = upload(&app, &alice, &group, "cat.png", "image/png", bytes.clone()).await;
        let attachment = &ok(&completed)["completeUpload"];
        assert_eq!(attachment["width"], 640);
        assert_eq!(attachment["height"], 480);
        assert_eq!(attachment["size"], bytes.len());
        assert_eq!(attachment["contentType"], "image/png");
        assert_eq!(attachment["filename"], "cat.png");
        assert!(attachment["thumbnailUrl"].is_string(), "{attachment}");
        let id = attachment["id"].as_str().expect("id").to_owned();

        let sent = gql(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "look", "attachmentIds": [id] } }),
        )
        .await;
        assert_eq!(
            ok(&sent)["sendMessage"]["attachments"][0]["id"],
            id.as_str()
        );

        let history = gql_ok(
            &app,
            &bob,
            "query($c: ID!) { messages(conversationId: $c, last: 5) { nodes { attachments { id url thumbnailUrl width height } } } }",
            json!({ "c": group }),
        )
        .await;
        let seen = &history["data"]["messages"]["nodes"][0]["attachments"][0];
        assert_eq!(seen["id"], id.as_str());
        let response = download(&app, seen["url"].as_str().expect("url")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), "image/png");
        assert!(header(&response, "content-disposition").starts_with("inline"));
        if store == Store::Embedded {
            assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        }
        assert_eq!(response.bytes().await.expect("body").to_vec(), bytes);

        let thumbnail = download(&app, seen["thumbnailUrl"].as_str().expect("thumbnail")).await;
        assert_eq!(thumbnail.status(), 200);
        let thumbnail = image::load_from_memory(&thumbnail.bytes().await.expect("body"))
            .expect("thumbnail is an image");
        assert_eq!((thumbnail.width(), thumbnail.height()), (320, 240));
        // The checked file and its thumbnail, nothing of the upload itself.
        assert_eq!(
            objects(&app).await,
            vec![format!("files/{id}"), format!("thumbs/{id}")]
        );
        let row = parley_projections::attachments::by_id(&app.state.db, &id)
            .await
            .expect("read")
            .expect("row");
        let digest: String =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
        assert_eq!(row.sha256.as_deref(), Some(digest.as_str()));

        // Someone who cannot read the conversation gets no URL of it.
        let carol = user(&app, "carol").await;
        for query in [
            "query($c: ID!) { messages(conversationId: $c, last: 5) { nodes { attachments { url } } } }",
        ] {
            let refused = gql(&app, &carol, query, json!({ "c": group })).await;
            assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
            assert!(!refused.to_string().contains("/files/"), "{refused}");
        }
        let message_id = ok(&sent)["sendMessage"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let by_id = gql(
            &app,
            &carol,
            "query($m: ID!) { message(id: $m) { attachments { url thumbnailUrl } } }",
            json!({ "m": message_id }),
        )
        .await;
        assert!(!by_id.to_string().contains("/files/"), "{by_id}");
        assert!(!by_id.to_string().contains("/thumbs/"), "{by_id}");
        app.stop().await;
    }
}

#[tokio::test]
async fn content_that_is_not_what_it_claims_is_refused_and_nothing_is_kept() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;

        // An executable declared as an image.
        let created = create_upload(&app, &alice, &group, "cat.png", "image/png", 128).await;
        assert_eq!(put(&app, &created, elf()).await, 200);
        let refused = complete(&app, &alice, &created).await;
        assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
        assert_eq!(error_field(&refused), Some("uploadId"));
        // Refused for good, and unusable.
        let again = complete(&app, &alice, &created).await;
        assert_eq!(error_code(&again), Some("NOT_FOUND"), "{again}");
        let sent = gql(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "x", "attachmentIds": [upload_id(&created)] } }),
        )
        .await;
        assert_eq!(error_code(&sent), Some("NOT_FOUND"), "{sent}");

        // A script, whatever it is called.
        let script = b"#!/bin/sh\necho hi\n".to_vec();
        let refused = upload(&app, &alice, &group, "notes.txt", "text/plain", script).await;
        assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");

        // Text declared as an image.
        let refused = upload(
            &app,
            &alice,
            &group,
            "a.png",
            "image/png",
            b"not a png".to_vec(),
        )
        .await;
        assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");

        // A decompression bomb: a small file that decodes to gigabytes.
        let refused = upload(&app, &alice, &group, "bomb.png", "image/png", png_bomb()).await;
        assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");

        assert_eq!(objects(&app).await, Vec::<String>::new());
        assert_replay_changes_nothing(&app).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn an_upload_takes_exactly_the_declared_bytes_and_type_and_no_more() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;

        // Declared larger than allowed.
        let too_big = create_upload(
            &app,
            &alice,
            &group,
            "big.bin",
            "application/octet-stream",
            26_214_401,
        )
        .await;
        assert_eq!(error_code(&too_big), Some("BAD_USER_INPUT"), "{too_big}");
        assert_eq!(error_field(&too_big), Some("size"));

        // More bytes than declared are refused at the door.
        let created = create_upload(&app, &alice, &group, "a.txt", "text/plain", 10).await;
        let too_many = put(&app, &created, vec![b'a'; 20]).await;
        assert!((400..500).contains(&too_many), "{too_many}");
        // So nothing arrived to complete.
        let early = complete(&app, &alice, &created).await;
        assert_eq!(error_code(&early), Some("CONFLICT"), "{early}");

        // Another type than the one signed.
        let upload = &created["data"]["createUpload"];
        let wrong_type = app
            .client
            .put(upload["uploadUrl"].as_str().expect("url"))
            .header("content-type", "text/html")
            .body(vec![b'a'; 10])
            .send()
            .await
            .expect("PUT sent");
        assert_eq!(wrong_type.status(), 403);

        // A changed size in the URL breaks its signature.
        let forged = upload["uploadUrl"]
            .as_str()
            .expect("url")
            .replace("size=10", "size=20");
        let forged = app
            .client
            .put(forged)
            .header("content-type", "text/plain")
            .body(vec![b'a'; 20])
            .send()
            .await
            .expect("PUT sent");
        assert!(forged.status().is_client_error(), "{}", forged.status());
        assert_eq!(objects(&app).await, Vec::<String>::new());

        // The declared bytes go through; a second upload to the same URL does not.
        assert_eq!(put(&app, &created, vec![b'a'; 10]).await, 200);
        ok(&complete(&app, &alice, &created).await);
        // (S3 cannot refuse it; the checked copy is under another key all the same.)
        if store == Store::Embedded {
            assert_eq!(put(&app, &created, vec![b'b'; 10]).await, 409);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn only_members_upload_and_only_the_uploader_completes_or_attaches_once() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let group = create_group(&app, &alice, "g", &[&bob]).await;
        let other = own_group(&app, &alice).await;

        let outsider = create_upload(&app, &carol, &group, "a.txt", "text/plain", 5).await;
        assert_eq!(error_code(&outsider), Some("FORBIDDEN"), "{outsider}");
        assert_eq!(count_events(&app, "UploadCreated").await, 0);

        let created = create_upload(&app, &alice, &group, "a.txt", "text/plain", 5).await;
        assert_eq!(put(&app, &created, b"hello".to_vec()).await, 200);
        let by_bob = complete(&app, &bob, &created).await;
        assert_eq!(error_code(&by_bob), Some("NOT_FOUND"), "{by_bob}");
        // Bob's attempt changed nothing: the bytes still wait for Alice.
        assert_eq!(count_events(&app, "UploadCompleted").await, 0);
        assert_eq!(count_events(&app, "UploadRejected").await, 0);
        assert_eq!(
            objects(&app).await,
            vec![format!("incoming/{}", upload_id(&created))]
        );
        ok(&complete(&app, &alice, &created).await);
        let id = upload_id(&created);

        async fn send(app: &TestApp, who: &Client, conversation: &str, id: &str) -> Value {
            gql(
                app,
                who,
                SEND_WITH,
                json!({ "i": { "conversationId": conversation, "body": "file", "attachmentIds": [id] } }),
            )
            .await
        }
        let by_bob = send(&app, &bob, &group, &id).await;
        assert_eq!(error_code(&by_bob), Some("NOT_FOUND"), "{by_bob}");
        let elsewhere = send(&app, &alice, &other, &id).await;
        assert_eq!(
            error_code(&elsewhere),
            Some("BAD_USER_INPUT"),
            "{elsewhere}"
        );
        ok(&send(&app, &alice, &group, &id).await);
        let reused = send(&app, &alice, &group, &id).await;
        assert_eq!(error_code(&reused), Some("CONFLICT"), "{reused}");
        // Its files are the message's now: completing again issues no URL.
        let again = complete(&app, &alice, &created).await;
        assert_eq!(error_code(&again), Some("CONFLICT"), "{again}");
        assert!(!again.to_string().contains("/files/"), "{again}");

        // Refused posts gave back nothing they claimed: one message, one attachment.
        let history = gql_ok(
            &app,
            &alice,
            "query($c: ID!) { messages(conversationId: $c) { nodes { attachments { id } } } }",
            json!({ "c": group }),
        )
        .await;
        assert_eq!(
            history["data"]["messages"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        // Not completed yet: cannot be sent.
        let pending = create_upload(&app, &alice, &group, "b.txt", "text/plain", 5).await;
        let early = gql(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "x", "attachmentIds": [upload_id(&pending)] } }),
        )
        .await;
        assert_eq!(error_code(&early), Some("CONFLICT"), "{early}");
        assert_eq!(count_events(&app, "UploadAttached").await, 1);
        assert_eq!(objects(&app).await, vec![format!("files/{id}")]);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_user_has_at_most_twenty_uploads_open_even_when_asking_at_once() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let asked = futures::future::join_all(
            (0..24).map(|i| create_upload(&app, &alice, &group, "a.txt", "text/plain", 1 + i)),
        )
        .await;
        let refused: Vec<&Value> = asked.iter().filter(|r| error_code(r).is_some()).collect();
        assert_eq!(refused.len(), 4, "{refused:?}");
        for response in refused {
            assert_eq!(error_code(response), Some("CONFLICT"), "{response}");
        }
        assert_eq!(count_events(&app, "UploadCreated").await, 20);

        // Sending one frees its place.
        let (index, open) = asked
            .iter()
            .enumerate()
            .find(|(_, r)| error_code(r).is_none())
            .expect("one was created");
        assert_eq!(put(&app, open, vec![b'x'; 1 + index]).await, 200);
        ok(&complete(&app, &alice, open).await);
        let full = create_upload(&app, &alice, &group, "b.txt", "text/plain", 1).await;
        assert_eq!(error_code(&full), Some("CONFLICT"), "{full}");
        gql_ok(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "f", "attachmentIds": [upload_id(open)] } }),
        )
        .await;
        ok(&create_upload(&app, &alice, &group, "b.txt", "text/plain", 1).await);
        app.stop().await;
    }
}

#[tokio::test]
async fn filenames_lose_their_paths_and_never_reach_a_storage_key() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let completed = upload(
            &app,
            &alice,
            &group,
            "../../../etc/passwd",
            "text/plain",
            b"root".to_vec(),
        )
        .await;
        let attachment = &ok(&completed)["completeUpload"];
        assert_eq!(attachment["filename"], "passwd");
        let url = attachment["url"].as_str().expect("url");
        // The name appears in no key and no path; on S3 only in the signed
        // `response-content-disposition`, cleaned as it is served.
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        assert!(!path.contains("passwd") && !url.contains(".."), "{url}");
        for part in query.split('&') {
            if !part.starts_with("response-content-disposition=") {
                assert!(!part.contains("passwd"), "{url}");
            }
        }
        let id = attachment["id"].as_str().expect("id");
        assert_eq!(objects(&app).await, vec![format!("files/{id}")]);
        let response = download(&app, url).await;
        assert!(header(&response, "content-disposition").contains("filename=\"passwd\""));
        app.stop().await;
    }
}

#[tokio::test]
async fn html_and_svg_are_only_ever_downloads() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        for (name, content_type, body) in [
            ("page.html", "text/html", "<html><script>alert(1)</script></html>"),
            (
                "pic.svg",
                "image/svg+xml",
                "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
            ),
        ] {
            let completed = upload(&app, &alice, &group, name, content_type, body.as_bytes().to_vec()).await;
            let attachment = &ok(&completed)["completeUpload"];
            assert!(attachment["thumbnailUrl"].is_null());
            let response = download(&app, attachment["url"].as_str().expect("url")).await;
            assert_eq!(response.status(), 200);
            assert!(header(&response, "content-disposition").starts_with("attachment"), "{name}");
            assert_eq!(header(&response, "content-type"), "application/octet-stream");
            if store == Store::Embedded {
                assert_eq!(header(&response, "x-content-type-options"), "nosniff");
            }
            assert_eq!(response.bytes().await.expect("body").as_ref(), body.as_bytes());
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn download_urls_are_signed_and_expire() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let clock = TestClock::new();
        let app = spawn(backend, store, clock.clone()).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let first = upload(
            &app,
            &alice,
            &group,
            "a.txt",
            "text/plain",
            b"first".to_vec(),
        )
        .await;
        let second = upload(
            &app,
            &alice,
            &group,
            "b.txt",
            "text/plain",
            b"second".to_vec(),
        )
        .await;
        let url = text(&first, "/data/completeUpload/url").to_owned();
        assert_eq!(download(&app, &url).await.status(), 200);

        // A flipped signature digit, or another object under the same signature.
        // `signature=` here, `X-Amz-Signature=` on S3.
        let (base, signature) = url.rsplit_once("ignature=").expect("signed");
        let flipped = if signature.starts_with('0') { "1" } else { "0" };
        let forged = format!("{base}ignature={flipped}{}", &signature[1..]);
        assert_eq!(download(&app, &forged).await.status(), 403);
        let other_id = text(&second, "/data/completeUpload/id");
        let first_id = text(&first, "/data/completeUpload/id");
        let swapped = url.replace(first_id, other_id);
        assert_eq!(download(&app, &swapped).await.status(), 403);

        // Expired, as is an upload URL past its time. S3 goes by its own clock: a URL
        // issued with six seconds to live works, and no longer once they have passed.
        if store == Store::S3 {
            clock.advance(time::Duration::seconds(6) - time::Duration::minutes(5));
            let again = gql_ok(&app, &alice, COMPLETE, json!({ "id": first_id })).await;
            let short = text(&again, "/data/completeUpload/url").to_owned();
            assert_eq!(download(&app, &short).await.status(), 200);
            tokio::time::sleep(std::time::Duration::from_secs(8)).await;
            assert_eq!(download(&app, &short).await.status(), 403);
            app.stop().await;
            continue;
        }
        let created = create_upload(&app, &alice, &group, "c.txt", "text/plain", 3).await;
        clock.advance(time::Duration::hours(1));
        assert_eq!(download(&app, &url).await.status(), 403);
        assert_eq!(put(&app, &created, b"abc".to_vec()).await, 403);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_sweeper_removes_abandoned_uploads_and_files_of_deleted_messages_recording_each() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let clock = TestClock::new();
        let app = spawn(backend, store, clock.clone()).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;

        // Never completed; completed and never sent; sent and then deleted; sent and kept.
        let never = create_upload(&app, &alice, &group, "a.txt", "text/plain", 1).await;
        assert_eq!(put(&app, &never, b"a".to_vec()).await, 200);
        ok(&upload(&app, &alice, &group, "b.txt", "text/plain", b"b".to_vec()).await);
        let mut sent = Vec::new();
        for name in ["c.txt", "d.txt"] {
            let done = upload(&app, &alice, &group, name, "text/plain", b"c".to_vec()).await;
            let id = text(&done, "/data/completeUpload/id").to_owned();
            let message = gql_ok(
                &app,
                &alice,
                SEND_WITH,
                json!({ "i": { "conversationId": group, "body": name, "attachmentIds": [id] } }),
            )
            .await;
            sent.push((
                text(&message, "/data/sendMessage/id").to_owned(),
                text(&message, "/data/sendMessage/attachments/0/url").to_owned(),
            ));
        }
        let (deleted, deleted_url) = &sent[0];
        gql_ok(
            &app,
            &alice,
            "mutation($id: ID!) { deleteMessage(messageId: $id) { id } }",
            json!({ "id": deleted }),
        )
        .await;
        // Deleting stops serving at once, before any removal, even through a URL issued
        // before (S3 checks only its signature, so the object is moved away), and the
        // message lists no attachment any more.
        assert_eq!(download(&app, deleted_url).await.status(), 404);
        let shown = gql_ok(
            &app,
            &alice,
            "query($m: ID!) { message(id: $m) { deleted attachments { id url } } }",
            json!({ "m": deleted }),
        )
        .await;
        assert_eq!(
            shown["data"]["message"]["attachments"],
            json!([]),
            "{shown}"
        );
        let kept_url = &sent[1].1;
        assert_eq!(download(&app, kept_url).await.status(), 200);
        assert_eq!(objects(&app).await.len(), 4);
        assert_eq!(
            app.state.uploads.sweep(clock.now()).await.expect("sweep"),
            0
        );

        clock.advance(time::Duration::hours(2));
        assert_eq!(
            app.state.uploads.sweep(clock.now()).await.expect("sweep"),
            1
        );
        clock.advance(time::Duration::hours(23));
        assert_eq!(
            app.state.uploads.sweep(clock.now()).await.expect("sweep"),
            2
        );
        assert_eq!(
            app.state.uploads.sweep(clock.now()).await.expect("sweep"),
            0
        );

        // Only the kept message's file remains, and each removal is an event.
        let kept = objects(&app).await;
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].starts_with("files/"));
        let removals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE event_type = 'AttachmentRemoved'",
        )
        .fetch_one(&app.state.db.read)
        .await
        .expect("count");
        assert_eq!(removals, 3);
        assert_replay_changes_nothing(&app).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn attachments_claimed_by_a_message_never_posted_are_given_back() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let clock = TestClock::new();
        let app = spawn(backend, store, clock.clone()).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let done = upload(&app, &alice, &group, "a.txt", "text/plain", b"a".to_vec()).await;
        let id = text(&done, "/data/completeUpload/id").to_owned();

        // A sendMessage that stopped between claiming the upload and posting.
        let uploads =
            parley_store::CommandBus::<parley_aggregates::upload::Upload>::new(&app.state.db, ());
        let alice_id = uuid::Uuid::parse_str(&alice.id).expect("id");
        let meta = parley_store::CommandMeta::new(Some(alice_id), clock.now());
        let claim = parley_aggregates::upload::UploadCommand::Attach {
            actor_id: alice_id,
            conversation_id: uuid::Uuid::parse_str(&group).expect("id"),
            message_id: uuid::Uuid::now_v7(),
            client_message_id: None,
            at: clock.now(),
        };
        let committed = uploads.execute(&id, claim, &meta).await.expect("claimed");
        app.state.settle(committed.position).await;
        let send = || {
            gql(
                &app,
                &alice,
                SEND_WITH,
                json!({ "i": { "conversationId": group, "body": "f", "attachmentIds": [id] } }),
            )
        };
        assert_eq!(error_code(&send().await), Some("CONFLICT"));

        // A fresh claim is left alone; a stranded one is given back, once.
        app.state.uploads.sweep(clock.now()).await.expect("sweep");
        assert_eq!(count_events(&app, "UploadDetached").await, 0);
        clock.advance(time::Duration::hours(2));
        app.state.uploads.sweep(clock.now()).await.expect("sweep");
        app.state.uploads.sweep(clock.now()).await.expect("sweep");
        assert_eq!(count_events(&app, "UploadDetached").await, 1);
        let head = parley_store::log::head(&app.state.db).await.expect("head");
        app.state.settle(Some(head)).await;
        ok(&send().await);
        assert_eq!(objects(&app).await, vec![format!("files/{id}")]);
        assert_replay_changes_nothing(&app).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn an_unreachable_bucket_stops_the_server_at_start_with_one_line() {
    if std::env::var_os("PARLEY_TEST_S3_ENDPOINT").is_none() {
        eprintln!("skipped: PARLEY_TEST_S3_ENDPOINT names no S3 server");
        return;
    }
    // A free port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port");
    for (endpoint, says) in [
        (s3_endpoint(), "no such bucket"),
        (format!("http://{closed}"), "cannot connect to the endpoint"),
    ] {
        let database = TestDatabase::new(Backend::Sqlite).await;
        let mut config = test_config(&database);
        config.s3_bucket = Some("parley-no-such-bucket".to_owned());
        config.s3_endpoint = Some(endpoint);
        config.s3_force_path_style = true;
        let hasher = parley::auth::Argon2Hasher::new().expect("hasher");
        let Err(error) = parley::startup::Server::build(config, hasher).await else {
            panic!("a server started on a missing bucket");
        };
        let line = format!("{error:#}");
        assert!(line.starts_with("PARLEY_S3_BUCKET"), "{line}");
        assert!(line.contains(says), "{line}");
        assert!(!line.contains('\n'), "{line}");
        assert!(line.len() < 300, "{line}");
    }
}

#[tokio::test]
async fn recordings_complete_with_their_duration_and_picture_size() {
    /// Name, declared type, bytes, duration in ms and picture size (see
    /// tests/fixtures/media/README.md).
    type Recording = (
        &'static str,
        &'static str,
        &'static [u8],
        u64,
        Option<(u32, u32)>,
    );
    const RECORDINGS: [Recording; 5] = [
        (
            "note.webm",
            "audio/webm",
            include_bytes!("../fixtures/media/voice.webm"),
            1_008,
            None,
        ),
        (
            "tone.opus",
            "audio/ogg",
            include_bytes!("../fixtures/media/tone.opus"),
            2_000,
            None,
        ),
        (
            "tone.mp3",
            "audio/mpeg",
            include_bytes!("../fixtures/media/tone.mp3"),
            2_250,
            None,
        ),
        (
            "clip.mp4",
            "video/mp4",
            include_bytes!("../fixtures/media/clip.mp4"),
            1_500,
            Some((160, 120)),
        ),
        (
            "clip.mkv",
            "video/x-matroska",
            include_bytes!("../fixtures/media/clip.mkv"),
            500,
            Some((96, 64)),
        ),
    ];
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        for (name, content_type, bytes, duration_ms, picture) in RECORDINGS {
            let completed = upload(&app, &alice, &group, name, content_type, bytes.to_vec()).await;
            let attachment = &ok(&completed)["completeUpload"];
            assert_eq!(
                attachment["durationMs"], duration_ms,
                "{name}: {attachment}"
            );
            let (width, height) =
                picture.map_or((Value::Null, Value::Null), |(w, h)| (w.into(), h.into()));
            assert_eq!(
                (&attachment["width"], &attachment["height"]),
                (&width, &height),
                "{name}"
            );
            assert!(attachment["thumbnailUrl"].is_null(), "{name}");
            // Audio and video play in the page, exactly as sent.
            let response = download(&app, attachment["url"].as_str().expect("url")).await;
            assert_eq!(response.status(), 200, "{name}");
            assert_eq!(header(&response, "content-type"), content_type, "{name}");
            assert!(
                header(&response, "content-disposition").starts_with("inline"),
                "{name}"
            );
            assert_eq!(
                response.bytes().await.expect("body").as_ref(),
                bytes,
                "{name}"
            );
        }
        app.stop().await;
    }
}

/// S3 cannot send `X-Content-Type-Options: nosniff`, so a presigned download of a type
/// off the inline list names its type and disposition itself, signed, and the bucket
/// serves those whatever metadata the object carries.
#[tokio::test]
async fn s3_download_urls_force_a_download_whatever_the_object_says() {
    if std::env::var_os("PARLEY_TEST_S3_ENDPOINT").is_none() {
        eprintln!("skipped: PARLEY_TEST_S3_ENDPOINT names no S3 server");
        return;
    }
    let app = spawn(
        Backend::Sqlite,
        Store::S3,
        Arc::new(parley::clock::SystemClock),
    )
    .await;
    let alice = user(&app, "alice").await;
    let group = own_group(&app, &alice).await;
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    let completed = upload(&app, &alice, &group, "page.html", "text/html", page.clone()).await;
    let attachment = &ok(&completed)["completeUpload"];
    let url = attachment["url"].as_str().expect("url");
    assert!(
        url.contains("response-content-type=application%2Foctet-stream"),
        "{url}"
    );
    assert!(
        url.contains("response-content-disposition=attachment"),
        "{url}"
    );

    // The object is replaced by one that asks to be rendered as HTML.
    let id = attachment["id"].as_str().expect("id");
    s3_client()
        .await
        .put_object()
        .bucket(app.state.config.s3_bucket.as_deref().expect("bucket"))
        .key(format!("files/{id}"))
        .content_type("text/html")
        .content_disposition("inline")
        .body(page.clone().into())
        .send()
        .await
        .expect("object replaced");
    let response = download(&app, url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert!(
        header(&response, "content-disposition").starts_with("attachment; filename=\"page.html\"")
    );
    assert_eq!(response.bytes().await.expect("body").to_vec(), page);

    // The signature covers the overrides: without them the URL is refused.
    let stripped: String = url
        .split('&')
        .filter(|part| !part.starts_with("response-content-"))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(download(&app, &stripped).await.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn refused_and_abandoned_uploads_leave_no_object_behind_and_each_removal_is_recorded() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let clock = TestClock::new();
        let app = spawn(backend, store, clock.clone()).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;

        // Refused: its bytes go at once.
        let refused = create_upload(&app, &alice, &group, "cat.png", "image/png", 128).await;
        assert_eq!(put(&app, &refused, elf()).await, 200);
        let answer = complete(&app, &alice, &refused).await;
        assert_eq!(error_code(&answer), Some("BAD_USER_INPUT"), "{answer}");
        assert_eq!(objects(&app).await, Vec::<String>::new());

        // Completed with a thumbnail and sent.
        let picture = png(400, 300);
        let sent = create_upload(&app, &alice, &group, "cat.png", "image/png", picture.len()).await;
        assert_eq!(put(&app, &sent, picture.clone()).await, 200);
        ok(&complete(&app, &alice, &sent).await);
        let sent_id = upload_id(&sent);
        gql_ok(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "cat", "attachmentIds": [sent_id] } }),
        )
        .await;

        // Both upload URLs are still valid. The embedded store takes no bytes for an
        // upload no longer open; a presigned S3 PUT cannot be revoked, so they land.
        let refused_again = put(&app, &refused, elf()).await;
        let sent_again = put(&app, &sent, picture.clone()).await;
        let mut strays = Vec::new();
        match store {
            Store::Embedded => assert_eq!((refused_again, sent_again), (409, 409)),
            Store::S3 => {
                assert_eq!((refused_again, sent_again), (200, 200));
                strays = vec![
                    format!("incoming/{}", upload_id(&refused)),
                    format!("incoming/{sent_id}"),
                ];
            }
        }

        // Abandoned: bytes sent and never completed; completed (with a thumbnail) and
        // never sent; created and nothing sent.
        let never_completed = create_upload(&app, &alice, &group, "a.txt", "text/plain", 1).await;
        assert_eq!(put(&app, &never_completed, b"a".to_vec()).await, 200);
        let never_sent = upload(&app, &alice, &group, "dog.png", "image/png", png(64, 48)).await;
        let never_sent = text(&never_sent, "/data/completeUpload/id").to_owned();
        ok(&create_upload(&app, &alice, &group, "b.txt", "text/plain", 1).await);

        let kept = |mut keys: Vec<String>| {
            keys.extend([format!("files/{sent_id}"), format!("thumbs/{sent_id}")]);
            keys.sort();
            keys
        };
        let open = vec![
            format!("incoming/{}", upload_id(&never_completed)),
            format!("files/{never_sent}"),
            format!("thumbs/{never_sent}"),
        ];
        let everything = kept([open.clone(), strays.clone()].concat());
        assert_eq!(objects(&app).await, everything);
        // While the upload URLs are valid, bytes may still arrive: nothing is touched.
        let sweep = || app.state.uploads.sweep(clock.now());
        assert_eq!(sweep().await.expect("sweep"), 0);
        assert_eq!(objects(&app).await, everything);

        // Once they expire, the stray bytes go; the uploads still open stay theirs.
        clock.advance(time::Duration::minutes(11));
        assert_eq!(sweep().await.expect("sweep"), 0);
        assert_eq!(objects(&app).await, kept(open));

        // A day on, the refused and the abandoned uploads are removed, each recorded.
        clock.advance(time::Duration::hours(24));
        assert_eq!(sweep().await.expect("sweep"), 4);
        assert_eq!(sweep().await.expect("sweep"), 0);
        assert_eq!(objects(&app).await, kept(Vec::new()));
        let removals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE event_type = 'AttachmentRemoved'",
        )
        .fetch_one(&app.state.db.read)
        .await
        .expect("count");
        assert_eq!(removals, 4);
        assert_replay_changes_nothing(&app).await;
        app.stop().await;
    }
}

/// A sweep that records an abandoned upload's removal and stops (the process dies, or
/// the store refuses the deletion) before its bytes are gone leaves them noted in
/// `blob_purges`: the next sweep, on any process, deletes them. A noted upload that was
/// sent meanwhile keeps its bytes.
#[tokio::test]
async fn bytes_of_an_abandoned_upload_are_deleted_by_a_later_sweep_when_the_one_removing_it_stopped(
) {
    use parley_aggregates::upload::{RemovalReason, Upload, UploadCommand};
    use parley_store::{CommandBus, CommandMeta};
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let clock = TestClock::new();
        let app = spawn(backend, store, clock.clone()).await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let abandoned = upload(&app, &alice, &group, "dog.png", "image/png", png(64, 48)).await;
        let abandoned = text(&abandoned, "/data/completeUpload/id").to_owned();
        let sent = upload(&app, &alice, &group, "cat.png", "image/png", png(64, 48)).await;
        let sent = text(&sent, "/data/completeUpload/id").to_owned();
        gql_ok(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "cat", "attachmentIds": [sent] } }),
        )
        .await;
        let everything = {
            let mut keys: Vec<String> = [&abandoned, &sent]
                .iter()
                .flat_map(|id| [format!("files/{id}"), format!("thumbs/{id}")])
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(objects(&app).await, everything);

        // What a sweep that stopped after recording the removal left: the upload noted,
        // its removal in the log, its bytes still stored. The sent one is noted too, as
        // a sweep that read it just before it was sent would have.
        clock.advance(time::Duration::hours(25));
        for id in [&abandoned, &sent] {
            sqlx::query("INSERT INTO blob_purges (upload_id, noted_at) VALUES ($1, $2)")
                .bind(id)
                .bind(parley_store::format_time(clock.now()))
                .execute(&app.state.db.write)
                .await
                .expect("note");
        }
        let uploads: CommandBus<Upload> = CommandBus::new(&app.state.db, ());
        let remove = UploadCommand::Remove {
            reason: RemovalReason::Abandoned,
            at: clock.now(),
        };
        let meta = CommandMeta::new(None, clock.now());
        let removed = uploads
            .execute(&abandoned, remove, &meta)
            .await
            .expect("remove");
        assert_eq!(removed.events.len(), 1);
        assert_eq!(objects(&app).await, everything);

        // The next sweep removes nothing new, and deletes the noted bytes of the removed
        // upload only; nothing stays noted.
        assert_eq!(
            app.state.uploads.sweep(clock.now()).await.expect("sweep"),
            0
        );
        assert_eq!(
            objects(&app).await,
            vec![format!("files/{sent}"), format!("thumbs/{sent}")]
        );
        let noted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blob_purges")
            .fetch_one(&app.state.db.read)
            .await
            .expect("count");
        assert_eq!(noted, 0);
        app.stop().await;
    }
}

/// A completion past the consistency wait (here behind a failed attachments read model,
/// whose row is still the pending one) is answered with the attachment it made, not
/// refused as not found: its events stand.
#[tokio::test]
async fn a_completion_behind_a_failed_read_model_answers_with_the_attachment() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn(
            backend,
            Store::Embedded,
            Arc::new(parley::clock::SystemClock),
        )
        .await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let bytes = png(64, 48);
        let created =
            create_upload(&app, &alice, &group, "late.png", "image/png", bytes.len()).await;
        ok(&created);
        let payload = r#"{"UploadCompleted": {"not": "an upload"}}"#;
        poison_with(&app.state.db, "Upload", "UploadCompleted", payload).await;
        marked_failed(&app, "attachments").await;

        assert_eq!(put(&app, &created, bytes.clone()).await, 200);
        let completed = complete(&app, &alice, &created).await;
        let attachment = &ok(&completed)["completeUpload"];
        assert_eq!(attachment["id"], json!(upload_id(&created)));
        assert_eq!(
            (&attachment["width"], &attachment["height"]),
            (&json!(64), &json!(48))
        );
        assert_eq!(attachment["size"], bytes.len());
        assert_eq!(attachment["filename"], "late.png");
        // Reads, downloads among them, follow the read model, which is behind.
        assert!(attachment["url"].is_string(), "{attachment}");
        app.stop().await;
    }
}

/// A post whose files the attachments read model does not show as its own yet (here it
/// has failed on a poisoned event) is answered with them: the post's event lists them,
/// and each was claimed for it before it was posted.
#[tokio::test]
async fn a_post_behind_a_failed_attachments_read_model_is_answered_with_its_files() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn(
            backend,
            Store::Embedded,
            Arc::new(parley::clock::SystemClock),
        )
        .await;
        let alice = user(&app, "alice").await;
        let group = own_group(&app, &alice).await;
        let completed = upload(&app, &alice, &group, "cat.png", "image/png", png(32, 24)).await;
        let id = ok(&completed)["completeUpload"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let payload = r#"{"UploadAttached": {"not": "a claim"}}"#;
        poison_with(&app.state.db, "Upload", "UploadAttached", payload).await;
        marked_failed(&app, "attachments").await;

        let sent = gql(
            &app,
            &alice,
            SEND_WITH,
            json!({ "i": { "conversationId": group, "body": "late", "attachmentIds": [id] } }),
        )
        .await;
        let files = &ok(&sent)["sendMessage"]["attachments"];
        assert_eq!(files[0]["id"], json!(id), "{sent}");
        assert_eq!(files[0]["filename"], "cat.png");
        assert_eq!(files.as_array().map(Vec::len), Some(1));
        app.stop().await;
    }
}
