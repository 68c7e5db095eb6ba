//! `parley export events`: the event log as rows for analysts' tools (DuckDB, pandas,
//! Polars), read page by page so memory stays constant however long the log, with
//! every event in today's shape (upcasters applied).
//!
//! Credentials (password and session-token hashes) are exported as `null`.
//!
//! The columns are a documented contract (README, "For analysts"): their names, order
//! and types change only with a new major release.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cqrs_es::Aggregate as _;
use futures::TryStreamExt as _;
use parley_aggregates::claim::NameClaim;
use parley_store::log::{self, LogPosition, StoredEvent};
use parley_store::{Db, StoreError};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// Events read from the log per page.
const PAGE: i64 = 2_000;
/// Rows per Parquet row group: large enough to compress well, small enough that a
/// writer's buffer stays a few megabytes.
const ROW_GROUP: usize = 64 * 1024;

/// The exported columns, in order.
pub const COLUMNS: [&str; 13] = [
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet, ZSTD-compressed.
    Parquet,
}

/// Which events to export; every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events after this cursor (exclusive), as printed in `cursor`.
    pub after: LogPosition,
    /// Only events that occurred at or after this moment.
    pub from: Option<OffsetDateTime>,
    /// Only events that occurred at or before this moment.
    pub until: Option<OffsetDateTime>,
    /// Only events of these types (today's names); empty means all.
    pub types: Vec<String>,
    /// Only events of this conversation.
    pub conversation: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("--from ({from}) is after --until ({until}): no event can match")]
    EmptyRange { from: String, until: String },
    #[error("the event at {cursor} has no valid occurred_at to filter by")]
    NoTime { cursor: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write the export: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write the export: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the export: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("cannot write the export: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl Filter {
    pub fn check(&self) -> Result<(), ExportError> {
        if let (Some(from), Some(until)) = (self.from, self.until) {
            if from > until {
                return Err(ExportError::EmptyRange {
                    from: parley_store::format_time(from),
                    until: parley_store::format_time(until),
                });
            }
        }
        Ok(())
    }

    fn admits(&self, event: &StoredEvent, row: &Row) -> Result<bool, ExportError> {
        if !self.types.is_empty() && !self.types.contains(&row.event_type) {
            return Ok(false);
        }
        if let Some(conversation) = self.conversation {
            let id = conversation.to_string();
            if event.conversation_id() != Some(id.as_str()) && event.aggregate_id != id {
                return Ok(false);
            }
        }
        if self.from.is_some() || self.until.is_some() {
            let at = row.occurred_at.ok_or_else(|| ExportError::NoTime {
                cursor: row.cursor.clone(),
            })?;
            if self.from.is_some_and(|from| at < from) || self.until.is_some_and(|u| at > u) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One exported event.
#[derive(Debug, Serialize)]
struct Row {
    cursor: String,
    event_id: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    #[serde(with = "time::serde::rfc3339::option")]
    occurred_at: Option<OffsetDateTime>,
    actor_id: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    request_id: Option<String>,
    /// The payload as JSON text, so every tool reads the column as one string.
    payload: String,
}

/// Payload fields that hold credentials (password and session-token hashes): never
/// analysis data, and offline-crackable in the wrong hands, so exported as `null`.
const CREDENTIALS: [&str; 2] = ["password_hash", "token_hash"];

/// The fields of an externally tagged payload (`{"Variant": {…}}`).
fn fields(
    payload: &mut serde_json::Value,
) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
    payload
        .as_object_mut()?
        .values_mut()
        .next()?
        .as_object_mut()
}

fn holds_credentials(payload: &serde_json::Value) -> bool {
    payload
        .as_object()
        .and_then(|variants| variants.values().next())
        .and_then(serde_json::Value::as_object)
        .is_some_and(|fields| CREDENTIALS.iter().any(|key| fields.contains_key(*key)))
}

/// Blanks the name beside any erased account's id, wherever a payload records one (its
/// registration and name claim, a join, a conversation's first members): an export shows
/// nothing of an erased user but the id. True if anything was blanked.
fn scrub_erased(value: &mut serde_json::Value, erased: &HashSet<String>) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            let theirs = ["user_id", "owner_id"].iter().any(|key| {
                map.get(*key)
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|id| erased.contains(id))
            });
            let mut changed = false;
            if theirs {
                for key in ["username", "name"] {
                    if let Some(name) = map.get_mut(key).filter(|name| name.is_string()) {
                        *name = serde_json::Value::String(String::new());
                        changed = true;
                    }
                }
            }
            for nested in map.values_mut() {
                changed |= scrub_erased(nested, erased);
            }
            changed
        }
        serde_json::Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= scrub_erased(item, erased);
            }
            changed
        }
        _ => false,
    }
}

impl Row {
    /// `erased`: ids of erased accounts, whose names the row must not carry.
    fn of(event: &StoredEvent, erased: &HashSet<String>) -> Result<Self, ExportError> {
        let (event_type, event_version, mut payload) = match event.upcast()? {
            Some(today) => (today.event_type, today.event_version, Some(today.payload)),
            None => (event.event_type.clone(), event.event_version.clone(), None),
        };
        // A sealed event's stored text is ciphertext: export what it opened to.
        if payload.is_none() && (event.is_sealed() || holds_credentials(event.payload()?)) {
            payload = Some(event.payload()?.clone());
        }
        let mut aggregate_id = event.aggregate_id.clone();
        if !erased.is_empty() {
            let mut scrubbed = match &payload {
                Some(payload) => payload.clone(),
                None => event.payload()?.clone(),
            };
            if scrub_erased(&mut scrubbed, erased) {
                payload = Some(scrubbed);
                // A name claim made before digests is named after the name itself.
                if event.aggregate_type == NameClaim::TYPE {
                    aggregate_id = String::new();
                }
            }
        }
        let payload = match payload {
            Some(mut payload) => {
                if let Some(fields) = fields(&mut payload) {
                    for key in CREDENTIALS {
                        if let Some(value) = fields.get_mut(key) {
                            *value = serde_json::Value::Null;
                        }
                    }
                }
                serde_json::to_string(&payload)?
            }
            None => event.payload_text.clone(),
        };
        let meta = |key: &str| event.meta(key).map(str::to_owned);
        Ok(Self {
            cursor: event.position.to_cursor(),
            event_id: event.event_id.clone(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id,
            sequence: event.sequence,
            event_type,
            event_version,
            occurred_at: event.occurred_at(),
            actor_id: meta("actor_id"),
            correlation_id: meta("correlation_id"),
            causation_id: meta("causation_id"),
            request_id: meta("request_id"),
            payload,
        })
    }
}

/// Where rows go, in one of the formats.
trait Sink {
    fn write(&mut self, rows: &[Row]) -> Result<(), ExportError>;
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

struct Jsonl<W: Write>(W);

impl<W: Write> Sink for Jsonl<W> {
    fn write(&mut self, rows: &[Row]) -> Result<(), ExportError> {
        for row in rows {
            serde_json::to_writer(&mut self.0, row)?;
            self.0.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        Ok(self.0.flush()?)
    }
}

struct Csv<W: Write>(csv::Writer<W>);

impl<W: Write> Sink for Csv<W> {
    fn write(&mut self, rows: &[Row]) -> Result<(), ExportError> {
        for row in rows {
            self.0.serialize(row)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        Ok(self.0.flush()?)
    }
}

/// The Parquet schema of an export: text columns, `sequence` as a 64-bit integer and
/// `occurred_at` as a UTC timestamp in microseconds (DuckDB's `TIMESTAMP WITH TIME
/// ZONE`, pandas' `datetime64[us, UTC]`).
pub fn parquet_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        text("cursor", false),
        text("event_id", false),
        text("aggregate_type", false),
        text("aggregate_id", false),
        Field::new("sequence", DataType::Int64, false),
        text("event_type", false),
        text("event_version", false),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        text("actor_id", true),
        text("correlation_id", true),
        text("causation_id", true),
        text("request_id", true),
        text("payload", false),
    ])
}

struct Parquet<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: Arc<Schema>,
}

impl<W: Write + Send> Sink for Parquet<W> {
    fn write(&mut self, rows: &[Row]) -> Result<(), ExportError> {
        fn text<'a>(rows: &'a [Row], field: impl Fn(&'a Row) -> &'a str) -> ArrayRef {
            Arc::new(rows.iter().map(field).map(Some).collect::<StringArray>())
        }
        fn optional<'a>(rows: &'a [Row], field: impl Fn(&'a Row) -> Option<&'a str>) -> ArrayRef {
            Arc::new(rows.iter().map(field).collect::<StringArray>())
        }
        let occurred_at = rows
            .iter()
            .map(|row| {
                row.occurred_at
                    .map(|at| (at.unix_timestamp_nanos() / 1_000) as i64)
            })
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            text(rows, |row| &row.cursor),
            text(rows, |row| &row.event_id),
            text(rows, |row| &row.aggregate_type),
            text(rows, |row| &row.aggregate_id),
            Arc::new(rows.iter().map(|row| row.sequence).collect::<Int64Array>()),
            text(rows, |row| &row.event_type),
            text(rows, |row| &row.event_version),
            Arc::new(occurred_at),
            optional(rows, |row| row.actor_id.as_deref()),
            optional(rows, |row| row.correlation_id.as_deref()),
            optional(rows, |row| row.causation_id.as_deref()),
            optional(rows, |row| row.request_id.as_deref()),
            text(rows, |row| &row.payload),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.writer.write(&batch)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ExportError> {
        let mut out = self.writer.into_inner()?;
        Ok(out.flush()?)
    }
}

fn sink<W: Write + Send + 'static>(format: Format, out: W) -> Result<Box<dyn Sink>, ExportError> {
    Ok(match format {
        Format::Jsonl => Box::new(Jsonl(out)),
        Format::Csv => Box::new(Csv(csv::Writer::from_writer(out))),
        Format::Parquet => {
            let schema = Arc::new(parquet_schema());
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_size(ROW_GROUP)
                .build();
            Box::new(Parquet {
                writer: ArrowWriter::try_new(out, schema.clone(), Some(properties))?,
                schema,
            })
        }
    })
}

/// How far an export got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events read from the log.
    pub read: u64,
    /// Events written (those the filter admitted).
    pub written: u64,
    /// The last event read.
    pub position: LogPosition,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub tally: Progress,
    /// Types asked for with `--type` of which no event was exported: most likely a
    /// misspelt name, since the filter is exact.
    pub unmatched_types: Vec<String>,
}

/// Streams the events `filter` admits to `out` in `format`, calling `progress` after
/// every page.
pub async fn export<W: Write + Send + 'static>(
    db: &Db,
    filter: &Filter,
    format: Format,
    out: W,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, ExportError> {
    filter.check()?;
    let mut sink = sink(format, out)?;
    let mut tally = Progress {
        position: filter.after,
        ..Progress::default()
    };
    let mut unmatched: Vec<String> = filter.types.clone();
    let erased = log::erased_users(db).await?;
    let mut batches = std::pin::pin!(log::batches(db, tally.position, PAGE));
    while let Some(events) = batches.try_next().await? {
        let Some(last) = events.last() else { break };
        tally.position = last.position;
        tally.read += events.len() as u64;
        let mut rows = Vec::with_capacity(events.len());
        for event in &events {
            let row = Row::of(event, &erased)?;
            if filter.admits(event, &row)? {
                unmatched.retain(|wanted| *wanted != row.event_type);
                rows.push(row);
            }
        }
        tally.written += rows.len() as u64;
        sink.write(&rows)?;
        progress(tally);
    }
    sink.finish()?;
    Ok(Summary {
        tally,
        unmatched_types: unmatched,
    })
}
