//! `parley export events`: the three formats hold the same rows, Parquet reads back
//! with the documented schema, filters select what they say, and bad input fails with
//! one line and a non-zero exit.

use std::path::Path;
use std::process::Output;

use arrow_array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use crate::common::backends;
use crate::helpers::*;

fn parley(app: &TestApp, args: &[&str]) -> Output {
    parley_cli(&app.database, args)
}

/// Exports with `args` into `path`; the command must succeed.
fn export(app: &TestApp, path: &Path, format: &str, args: &[&str]) {
    let path = path.to_string_lossy();
    let mut all = vec!["export", "events", "--format", format, "--output", &path];
    all.extend_from_slice(args);
    let output = parley(app, &all);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect()
}

const COLUMNS: [&str; 13] = [
    "cursor",
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "occurred_at",
    "actor_id",
    "correlation_id",
    "causation_id",
    "request_id",
    "payload",
];

/// A CSV export as JSON objects shaped like the JSONL rows.
fn csv_rows(path: &Path) -> Vec<Value> {
    let mut reader = csv::Reader::from_path(path).expect("csv");
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, COLUMNS);
    reader
        .records()
        .map(|record| {
            let record = record.expect("record");
            let mut row = serde_json::Map::new();
            for (name, value) in header.iter().zip(record.iter()) {
                let value = match name.as_str() {
                    "sequence" => json!(value.parse::<i64>().expect("sequence")),
                    _ if value.is_empty() => Value::Null,
                    _ => json!(value),
                };
                row.insert(name.clone(), value);
            }
            Value::Object(row)
        })
        .collect()
}

/// A Parquet export as JSON objects shaped like the JSONL rows, checking its schema.
fn parquet_rows(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("open");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a Parquet file");
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, COLUMNS);
    assert_eq!(
        schema
            .field_with_name("sequence")
            .expect("sequence")
            .data_type(),
        &arrow_schema::DataType::Int64
    );
    assert_eq!(
        schema
            .field_with_name("occurred_at")
            .expect("occurred_at")
            .data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
    );
    let mut rows = Vec::new();
    for batch in builder.build().expect("reader") {
        let batch = batch.expect("batch");
        for i in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (name, column) in COLUMNS.iter().zip(batch.columns()) {
                let value = if column.is_null(i) {
                    Value::Null
                } else if let Some(ints) = column.as_any().downcast_ref::<Int64Array>() {
                    json!(ints.value(i))
                } else if let Some(times) =
                    column.as_any().downcast_ref::<TimestampMicrosecondArray>()
                {
                    let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(times.value(i)) * 1_000,
                    )
                    .expect("time");
                    json!(at
                        .format(&time::format_description::well_known::Rfc3339)
                        .expect("format"))
                } else {
                    let text = column
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("text column");
                    json!(text.value(i))
                };
                row.insert((*name).to_owned(), value);
            }
            rows.push(Value::Object(row));
        }
    }
    rows
}

#[tokio::test]
async fn the_three_formats_hold_the_same_rows_and_filters_select_what_they_say() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = user(&app, "alice").await;
        let first = own_group(&app, &alice).await;
        let second = own_group(&app, &alice).await;
        for body in ["one", "two", "three"] {
            post_ok(&app, &alice, &first, body).await;
        }
        post_ok(&app, &alice, &second, "elsewhere").await;

        let dir = tempfile::tempdir().expect("tempdir");
        let (j, c, p) = (
            dir.path().join("all.jsonl"),
            dir.path().join("all.csv"),
            dir.path().join("all.parquet"),
        );
        export(&app, &j, "jsonl", &[]);
        export(&app, &c, "csv", &[]);
        export(&app, &p, "parquet", &[]);
        let rows = jsonl(&j);
        assert!(rows.len() >= 8, "{rows:?}");
        for row in &rows {
            let keys: Vec<&str> = row
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected = COLUMNS.to_vec();
            expected.sort_unstable();
            let mut keys = keys;
            keys.sort_unstable();
            assert_eq!(keys, expected);
            let payload: Value = serde_json::from_str(row["payload"].as_str().expect("text"))
                .expect("payload is JSON text");
            assert!(payload.is_object());
        }
        // Times are compared as instants: each format renders fractions its own way.
        let instants = |rows: Vec<Value>| -> Vec<Value> {
            rows.into_iter()
                .map(|mut row| {
                    let at = row["occurred_at"].as_str().expect("occurred_at");
                    let at = time::OffsetDateTime::parse(
                        at,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .expect("RFC 3339");
                    row["occurred_at"] = json!(at.unix_timestamp_nanos() / 1_000);
                    row
                })
                .collect()
        };
        let rows = instants(rows);
        assert_eq!(instants(csv_rows(&c)), rows, "CSV holds the JSONL rows");
        assert_eq!(
            instants(parquet_rows(&p)),
            rows,
            "Parquet holds the JSONL rows"
        );
        let posted: Vec<&Value> = rows
            .iter()
            .filter(|row| row["event_type"] == "MessagePosted")
            .collect();
        assert_eq!(posted.len(), 4);
        assert!(posted.iter().all(|row| row["actor_id"] == json!(alice.id)));
        // Credentials never leave: the registration's password hash and the session's
        // token hash are exported as null.
        for row in &rows {
            let payload: Value =
                serde_json::from_str(row["payload"].as_str().expect("text")).expect("json");
            let fields = payload
                .as_object()
                .and_then(|p| p.values().next())
                .expect("fields");
            for key in ["password_hash", "token_hash"] {
                if let Some(value) = fields.get(key) {
                    assert!(value.is_null(), "{key} exported: {row}");
                }
            }
        }
        assert!(rows.iter().any(|row| row["event_type"] == "UserRegistered"));
        let raw = std::fs::read(&j).expect("read");
        assert!(!String::from_utf8_lossy(&raw).contains("$argon2"));

        // --type and --conversation.
        let filtered = dir.path().join("filtered.jsonl");
        export(
            &app,
            &filtered,
            "jsonl",
            &["--type", "MessagePosted", "--conversation", &first],
        );
        let bodies: Vec<String> = jsonl(&filtered)
            .iter()
            .map(|row| {
                let payload: Value =
                    serde_json::from_str(row["payload"].as_str().expect("text")).expect("json");
                payload["MessagePosted"]["body"]
                    .as_str()
                    .expect("body")
                    .to_owned()
            })
            .collect();
        assert_eq!(bodies, ["one", "two", "three"]);

        // --after resumes exactly after a row; --from and --until bound by time.
        let middle = &rows[rows.len() / 2];
        let after = dir.path().join("after.jsonl");
        export(
            &app,
            &after,
            "jsonl",
            &["--after", middle["cursor"].as_str().expect("cursor")],
        );
        assert_eq!(instants(jsonl(&after)), rows[rows.len() / 2 + 1..]);
        let at = &jsonl(&j)[rows.len() / 2]["occurred_at"];
        let at = at.as_str().expect("time");
        let window = dir.path().join("window.jsonl");
        export(&app, &window, "jsonl", &["--from", at, "--until", at]);
        let window = instants(jsonl(&window));
        assert!(window.contains(middle), "{window:?}");
        assert!(window
            .iter()
            .all(|row| row["occurred_at"] == middle["occurred_at"]));

        // A type no event has is named in a warning (a misspelling, most likely).
        let output = parley(
            &app,
            &[
                "export",
                "events",
                "--format",
                "jsonl",
                "--output",
                "-",
                "--type",
                "MessagePosted",
                "--type",
                "messageposted",
            ],
        );
        assert!(output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("warning: no event of type \"messageposted\""),
            "{stderr}"
        );
        assert!(!stderr.contains("type \"MessagePosted\""), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 4);

        // Standard output.
        let output = parley(
            &app,
            &["export", "events", "--format", "jsonl", "--output", "-"],
        );
        assert!(output.status.success());
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).lines().count(),
            rows.len()
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_export_requests_fail_with_one_line_and_leave_no_file() {
    let app = spawn_app(backends()[0]).await;
    user(&app, "alice").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let out = out.to_string_lossy();
    let unwritable = dir.path().join("missing").join("out.jsonl");
    let unwritable = unwritable.to_string_lossy();
    // A directory: found before the log is written, and nothing left beside it.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).expect("mkdir");
    let folder = folder.to_string_lossy();
    let folder_slash = format!("{folder}/");
    let cases: [(&[&str], &str); 6] = [
        (&["--output", &folder], "is a directory"),
        (&["--output", &folder_slash], "is a directory"),
        (
            &["--output", &out, "--after", "not-a-cursor"],
            "not a cursor",
        ),
        (
            &[
                "--output",
                &out,
                "--from",
                "2026-02-01T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "is after --until",
        ),
        (&["--output", &unwritable], "cannot create"),
        (&["--output", &out, "--from", "yesterday"], "RFC 3339"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["export", "events", "--format", "jsonl"];
        all.extend_from_slice(args);
        let output = parley(&app, &all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!dir.path().join("out.jsonl").exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["folder"], "{args:?} left files behind");
    }
    app.stop().await;
}
