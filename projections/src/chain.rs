//! Tamper evidence: per-stream hashes written at append, a global chain over all events
//! built by a checkpointed projector, and the verification that walks both.
//!
//! Stream hash of an event (hex of SHA-256):
//! `prev ‖ lp(aggregate_type) ‖ lp(aggregate_id) ‖ be64(sequence) ‖ lp(event_type) ‖
//!  lp(event_version) ‖ lp(payload) ‖ lp(metadata)`, where `prev` is the stream's previous
//! hash (32 zero bytes for sequence 1), `lp(x)` is `be64(len(x)) ‖ x`, and payload and
//! metadata are the stored JSON text exactly as stored (never re-serialized).
//! Chain link: `SHA-256(previous link ‖ stream hash)`, 32 zero bytes before the first.

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, FromRow};

use crate::log::{self, LogPosition, StoredEvent};
use crate::{Db, ProjectionError, Projector};

pub const ZERO: [u8; 32] = [0; 32];

fn lp(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// The stream hash of one event, given its stream's previous hash.
#[allow(clippy::too_many_arguments)]
pub fn stream_hash(
    prev: &[u8; 32],
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: &str,
    metadata: &str,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    lp(&mut hasher, aggregate_type.as_bytes());
    lp(&mut hasher, aggregate_id.as_bytes());
    hasher.update(sequence.to_be_bytes());
    lp(&mut hasher, event_type.as_bytes());
    lp(&mut hasher, event_version.as_bytes());
    lp(&mut hasher, payload.as_bytes());
    lp(&mut hasher, metadata.as_bytes());
    hasher.finalize().into()
}

/// The next link of the global chain.
pub fn chain_link(prev: &[u8; 32], stream_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(stream_hash);
    hasher.finalize().into()
}

pub fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn recompute(prev: &[u8; 32], event: &StoredEvent) -> [u8; 32] {
    stream_hash(
        prev,
        &event.aggregate_type,
        &event.aggregate_id,
        event.sequence,
        &event.event_type,
        &event.event_version,
        &event.payload_text,
        &event.metadata_text,
    )
}

/// Chains every event, in global order, into `audit_chain`.
pub struct AuditChainProjector;

async fn chain_head(conn: &mut AnyConnection) -> Result<[u8; 32], ProjectionError> {
    let head: Option<String> = sqlx::query_scalar(
        "SELECT chain_hash FROM audit_chain ORDER BY txid DESC, position DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(head.as_deref().and_then(from_hex).unwrap_or(ZERO))
}

#[async_trait::async_trait]
impl Projector for AuditChainProjector {
    fn name(&self) -> &'static str {
        "audit_chain"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_chain"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM audit_chain WHERE txid = $1 AND position = $2")
                .bind(event.position.tx)
                .bind(event.position.pos)
                .fetch_optional(&mut *conn)
                .await?;
        if exists.is_some() {
            return Ok(());
        }
        let stream = event.hash.as_deref().and_then(from_hex).unwrap_or(ZERO);
        let link = chain_link(&chain_head(conn).await?, &stream);
        sqlx::query("INSERT INTO audit_chain (txid, position, event_id, stream_hash, chain_hash) VALUES ($1, $2, $3, $4, $5)")
            .bind(event.position.tx)
            .bind(event.position.pos)
            .bind(&event.event_id)
            .bind(to_hex(&stream))
            .bind(to_hex(&link))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Hashes SQLite rows stored before hashing existed (PostgreSQL's migration does its own).
pub async fn backfill_sqlite(db: &Db) -> Result<u64, ProjectionError> {
    #[derive(FromRow)]
    struct Row {
        position: i64,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: String,
        metadata: String,
        hash: Option<String>,
    }
    let missing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE hash IS NULL")
        .fetch_one(&db.write)
        .await?;
    if missing == 0 {
        return Ok(0);
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash \
         FROM events ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch_all(&db.write)
    .await?;
    let mut tx = db.write.begin().await?;
    let mut prev: Option<(String, String, [u8; 32])> = None;
    let mut filled = 0;
    for row in rows {
        let start = match &prev {
            Some((t, i, hash)) if *t == row.aggregate_type && *i == row.aggregate_id => *hash,
            _ => ZERO,
        };
        let hash = stream_hash(
            &start,
            &row.aggregate_type,
            &row.aggregate_id,
            row.sequence,
            &row.event_type,
            &row.event_version,
            &row.payload,
            &row.metadata,
        );
        if row.hash.is_none() {
            sqlx::query("UPDATE events SET hash = $1 WHERE position = $2")
                .bind(to_hex(&hash))
                .bind(row.position)
                .execute(&mut *tx)
                .await?;
            filled += 1;
        }
        prev = Some((
            row.aggregate_type,
            row.aggregate_id,
            row.hash.as_deref().and_then(from_hex).unwrap_or(hash),
        ));
    }
    tx.commit().await?;
    Ok(filled)
}

/// What verification found wrong, at the first place it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// The event's stored bytes no longer match its stream hash.
    Altered {
        position: LogPosition,
        detail: String,
    },
    /// The global chain recorded an event here that the log no longer has.
    Removed { position: LogPosition },
    /// The log has an event here that the chain never recorded.
    Inserted { position: LogPosition },
    /// Events of a stream are out of order or missing a sequence.
    Reordered {
        position: LogPosition,
        detail: String,
    },
    /// The given anchor is not a link of the chain.
    AnchorMissing { anchor: String },
}

impl Tamper {
    pub fn position(&self) -> Option<LogPosition> {
        match self {
            Self::Altered { position, .. }
            | Self::Removed { position }
            | Self::Inserted { position }
            | Self::Reordered { position, .. } => Some(*position),
            Self::AnchorMissing { .. } => None,
        }
    }
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Altered { position, detail } => {
                write!(f, "altered event at position {position}: {detail}")
            }
            Self::Removed { position } => write!(f, "event removed at position {position}"),
            Self::Inserted { position } => write!(f, "event inserted at position {position}"),
            Self::Reordered { position, detail } => {
                write!(f, "events reordered at position {position}: {detail}")
            }
            Self::AnchorMissing { anchor } => write!(
                f,
                "anchor {anchor} is not in the chain: the log no longer extends it"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub head: String,
    pub head_position: LogPosition,
}

#[derive(FromRow)]
struct Link {
    txid: i64,
    position: i64,
    stream_hash: String,
    chain_hash: String,
}

/// Brings the chain up to date, then checks every event against its stream hash and the
/// chain, reporting the first problem by position.
pub async fn verify(
    db: &Db,
    anchor: Option<&str>,
) -> Result<Result<Verified, Tamper>, ProjectionError> {
    crate::runner::catch_up(db, &AuditChainProjector).await?;
    let links: Vec<Link> = sqlx::query_as(
        "SELECT txid, position, stream_hash, chain_hash FROM audit_chain ORDER BY txid, position",
    )
    .fetch_all(&db.read)
    .await?;
    let mut links = links.into_iter().peekable();
    let mut streams: HashMap<(String, String), (i64, [u8; 32])> = HashMap::new();
    let mut chain = ZERO;
    let mut seen_anchor = anchor.is_none();
    let mut count = 0;
    let mut after = LogPosition::START;
    let mut head_position = LogPosition::START;
    loop {
        let events = log::read_after(db, after, 1_000).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        for event in events {
            let position = event.position;
            // Links the log has lost, before this event.
            if let Some(link) = links.peek() {
                let link_position = LogPosition {
                    tx: link.txid,
                    pos: link.position,
                };
                if link_position < position {
                    return Ok(Err(Tamper::Removed {
                        position: link_position,
                    }));
                }
            }
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            let (last_sequence, prev) = streams.get(&key).copied().unwrap_or((0, ZERO));
            if event.sequence != last_sequence + 1 {
                return Ok(Err(Tamper::Reordered {
                    position,
                    detail: format!(
                        "{}/{} sequence {} follows {}",
                        key.0, key.1, event.sequence, last_sequence
                    ),
                }));
            }
            let expected = recompute(&prev, &event);
            let stored = event.hash.as_deref().and_then(from_hex);
            if stored != Some(expected) {
                return Ok(Err(Tamper::Altered {
                    position,
                    detail: format!(
                        "{}/{} sequence {} does not match its hash",
                        key.0, key.1, event.sequence
                    ),
                }));
            }
            streams.insert(key, (event.sequence, expected));
            match links.next_if(|link| link.txid == position.tx && link.position == position.pos) {
                Some(link) => {
                    chain = chain_link(&chain, &expected);
                    if link.stream_hash != to_hex(&expected) || link.chain_hash != to_hex(&chain) {
                        return Ok(Err(Tamper::Reordered {
                            position,
                            detail: "the chain recorded a different event here".to_owned(),
                        }));
                    }
                    if anchor == Some(link.chain_hash.as_str()) {
                        seen_anchor = true;
                    }
                }
                None => return Ok(Err(Tamper::Inserted { position })),
            }
            count += 1;
            head_position = position;
        }
        after = last;
    }
    if let Some(link) = links.next() {
        return Ok(Err(Tamper::Removed {
            position: LogPosition {
                tx: link.txid,
                pos: link.position,
            },
        }));
    }
    if !seen_anchor {
        return Ok(Err(Tamper::AnchorMissing {
            anchor: anchor.unwrap_or_default().to_owned(),
        }));
    }
    Ok(Ok(Verified {
        events: count,
        head: to_hex(&chain),
        head_position,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_follow_the_documented_layout() {
        let mut expected = Sha256::new();
        expected.update([0u8; 32]);
        for part in ["User", "u1"] {
            expected.update((part.len() as u64).to_be_bytes());
            expected.update(part.as_bytes());
        }
        expected.update(1i64.to_be_bytes());
        for part in ["UserRegistered", "1", "{\"a\":1}", "{}"] {
            expected.update((part.len() as u64).to_be_bytes());
            expected.update(part.as_bytes());
        }
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(
            stream_hash(
                &ZERO,
                "User",
                "u1",
                1,
                "UserRegistered",
                "1",
                "{\"a\":1}",
                "{}"
            ),
            expected
        );
        assert_eq!(from_hex(&to_hex(&expected)), Some(expected));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let a = stream_hash(&ZERO, "ab", "c", 1, "t", "1", "{}", "{}");
        let b = stream_hash(&ZERO, "a", "bc", 1, "t", "1", "{}", "{}");
        assert_ne!(a, b);
    }
}
