//! Tamper evidence, the read side: a global chain over all events built by a
//! checkpointed projector, and the verification that walks it beside the stream hashes
//! the store writes at append (`parley_store::hash`, which defines both hashes).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use parley_store::hash::{chain_link, from_hex, stream_hash, to_hex, ZERO};
use parley_store::log::{self, LogPosition, StoredEvent};
use parley_store::Db;
use sqlx::{AnyConnection, FromRow};

use crate::sink::{Arg, Sink};
use crate::{ProjectionError, Projector};

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

/// The chain's last link and the position it covers (`None` for an empty chain).
async fn chain_head(
    sink: &mut Sink<'_>,
) -> Result<Option<(LogPosition, [u8; 32])>, ProjectionError> {
    let head: Vec<(i64, i64, String)> = sink
        .fetch_all(
            "SELECT txid, position, chain_hash FROM audit_chain \
             ORDER BY txid DESC, position DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(head
        .into_iter()
        .next()
        .map(|(tx, pos, hash)| (LogPosition { tx, pos }, from_hex(&hash).unwrap_or(ZERO))))
}

/// Chains the events of `events` past the head: one read of the head and the new links
/// added in bulk, instead of two statements per event (every event passes through this
/// projector). The chain grows in log order, so an event at or before its head is in it.
async fn extend(sink: &mut Sink<'_>, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
    let head = chain_head(sink).await?;
    let mut prev = head.map_or(ZERO, |(_, link)| link);
    let fresh = events
        .iter()
        .filter(|event| head.is_none_or(|(position, _)| event.position > position));
    let mut links = Vec::with_capacity(events.len());
    for event in fresh {
        // The stored hex (lower case, as `to_hex` writes it) is copied as read, rather
        // than decoded and encoded again for every event of a rebuild.
        let stored = event
            .hash
            .as_deref()
            .and_then(|text| Some((from_hex(text)?, text)));
        let (stream, stream_text) = match stored {
            Some((bytes, text)) => (bytes, Cow::Borrowed(text)),
            None => (ZERO, Cow::Owned(to_hex(&ZERO))),
        };
        prev = chain_link(&prev, &stream);
        links.push((event, stream_text, to_hex(&prev)));
    }
    let mut rows = Vec::with_capacity(links.len() * 5);
    for (event, stream, link) in &links {
        rows.extend([
            Arg::Int(event.position.tx),
            Arg::Int(event.position.pos),
            Arg::from(event.event_id.as_str()),
            Arg::from(stream.as_ref()),
            Arg::from(link),
        ]);
    }
    sink.insert_new(
        "audit_chain",
        &["txid", "position", "event_id", "stream_hash", "chain_hash"],
        "txid, position",
        &rows,
    )
    .await
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
        extend(&mut Sink::Any(conn), &[event]).await
    }

    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        extend(&mut Sink::Any(conn), events).await
    }

    /// A rebuild's chain is a row per event of the log.
    fn loads(&self) -> bool {
        true
    }

    async fn load_all(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        extend(&mut Sink::Load(conn), events).await
    }
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
