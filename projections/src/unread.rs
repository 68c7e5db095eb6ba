//! The `unread` read model: one read marker per member and conversation, and attention
//! rows only for the users a message mentions or replies to.
//!
//! Nothing here is written per member when a message arrives. Counts are derived when
//! read: `unreadCount` is the conversation's last `seq` minus the marker, less the
//! messages after the marker that are the reader's own or deleted (both found through
//! indexes); `mentionCount` counts attention rows after the marker.

use std::collections::HashMap;

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::sink::{Arg, Sink};
use crate::{placeholders, Db, ProjectionError, Projector, StoredEvent};

pub struct UnreadProjector;

fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Projector for UnreadProjector {
    fn name(&self) -> &'static str {
        "unread"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["read_markers", "attention"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[event]).await
    }

    /// Every event this read model takes folds into one batch of marker moves and
    /// attention rows, written in at most four multi-row statements, whatever the
    /// batch's size or mix.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        fold(events)?.write(&mut Sink::Any(conn)).await
    }

    /// Every post moves its author's marker: a rebuild's upserts go through the typed
    /// connection, whose parameters cost less to bind than `Any`'s.
    fn loads(&self) -> bool {
        true
    }

    async fn load_all(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        fold(events)?.write(&mut Sink::Load(conn)).await
    }
}

fn fold(events: &[&StoredEvent]) -> Result<Batch, ProjectionError> {
    let mut batch = Batch::default();
    for event in events {
        batch.add(event)?;
    }
    Ok(batch)
}

/// A member's marker after a batch: `seq` (with the message read up to, when known),
/// and whether it was set outright (a join or `markUnread`) rather than only moved
/// forward, as reading and posting do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    seq: i64,
    message: Option<Uuid>,
    set: bool,
}

/// What a batch of events writes: each member's marker, folded in log order, and the
/// attention rows of the users posts and edits mention or answer.
#[derive(Default)]
struct Batch {
    markers: HashMap<(Uuid, Uuid), Marker>,
    attention: HashMap<(Uuid, Uuid), (Uuid, i64)>,
}

impl Batch {
    /// Moves a marker forward only: a later, smaller `seq` changes nothing.
    fn forward(&mut self, conversation: Uuid, user: Uuid, seq: i64, message: Option<Uuid>) {
        let marker = self.markers.entry((conversation, user)).or_insert(Marker {
            seq,
            message,
            set: false,
        });
        if seq > marker.seq {
            marker.seq = seq;
            marker.message = message;
        }
    }

    /// Sets a marker, backwards if need be; whatever came before it in the batch is moot.
    fn set(&mut self, conversation: Uuid, user: Uuid, seq: i64) {
        self.markers.insert(
            (conversation, user),
            Marker {
                seq,
                message: None,
                set: true,
            },
        );
    }

    fn attend(&mut self, user: Uuid, message: Uuid, conversation: Uuid, seq: i64) {
        self.attention
            .entry((user, message))
            .or_insert((conversation, seq));
    }

    fn add(&mut self, event: &StoredEvent) -> Result<(), ProjectionError> {
        match event.event_of(&[
            EventKind::Conversation,
            EventKind::Message,
            EventKind::Member,
        ])? {
            Some(Event::Conversation(ConversationEvent::ConversationCreated {
                conversation_id,
                members,
                ..
            })) => {
                for member in members {
                    self.forward(*conversation_id, member.user_id, 0, None);
                }
            }
            Some(Event::Conversation(ConversationEvent::MemberJoined {
                conversation_id,
                user_id,
                last_seq,
                ..
            })) => {
                // A (re)joining member starts with everything before the join read.
                self.set(*conversation_id, *user_id, seq(*last_seq));
            }
            Some(Event::Conversation(ConversationEvent::MessagePosted {
                conversation_id,
                message_id,
                seq: message_seq,
                author_id,
                reply_to_author_id,
                mentions,
                ..
            })) => {
                let message_seq = seq(*message_seq);
                // Posting marks the post read for its author, as in Slack and Matrix.
                self.forward(*conversation_id, *author_id, message_seq, Some(*message_id));
                for user in mentions.iter().chain(reply_to_author_id) {
                    if user != author_id {
                        self.attend(*user, *message_id, *conversation_id, message_seq);
                    }
                }
            }
            Some(Event::Message(MessageEvent::MessageEdited {
                conversation_id,
                message_id,
                seq: message_seq,
                new_mentions,
                ..
            })) => {
                for user in new_mentions {
                    self.attend(*user, *message_id, *conversation_id, seq(*message_seq));
                }
            }
            Some(Event::Member(MemberEvent::ReadMarkerMoved {
                conversation_id,
                user_id,
                message_id,
                seq: read,
                ..
            })) => self.forward(*conversation_id, *user_id, seq(*read), Some(*message_id)),
            Some(Event::Member(MemberEvent::MarkedUnread {
                conversation_id,
                user_id,
                seq: read,
                ..
            })) => self.set(*conversation_id, *user_id, seq(*read)),
            _ => {}
        }
        Ok(())
    }

    async fn write(self, sink: &mut Sink<'_>) -> Result<(), ProjectionError> {
        let (set, forward): (Vec<_>, Vec<_>) =
            self.markers.into_iter().partition(|(_, marker)| marker.set);
        for (markers, condition) in [
            (set, ""),
            (forward, "WHERE read_markers.read_seq < excluded.read_seq"),
        ] {
            for chunk in markers.chunks(sink.rows_per_statement(4)) {
                let sql = format!(
                    "INSERT INTO read_markers (conversation_id, user_id, read_seq, message_id) VALUES {} \
                     ON CONFLICT (conversation_id, user_id) DO UPDATE SET read_seq = excluded.read_seq, \
                         message_id = excluded.message_id {condition}",
                    parley_store::values(chunk.len(), 4)
                );
                let rows: Vec<(String, String, i64, Option<String>)> = chunk
                    .iter()
                    .map(|((conversation, user), marker)| {
                        (
                            conversation.to_string(),
                            user.to_string(),
                            marker.seq,
                            marker.message.map(|id| id.to_string()),
                        )
                    })
                    .collect();
                let mut args = Vec::with_capacity(rows.len() * 4);
                for (conversation, user, seq, message) in &rows {
                    args.extend([
                        Arg::from(conversation),
                        Arg::from(user),
                        Arg::Int(*seq),
                        Arg::from(message.as_deref()),
                    ]);
                }
                sink.execute(&sql, &args).await?;
            }
        }
        // Not loaded with `COPY`: an edit may mention again a user whose attention row
        // an earlier batch wrote.
        let attention: Vec<([String; 3], i64)> = self
            .attention
            .iter()
            .map(|((user, message), (conversation, seq))| {
                (
                    [
                        user.to_string(),
                        conversation.to_string(),
                        message.to_string(),
                    ],
                    *seq,
                )
            })
            .collect();
        for chunk in attention.chunks(sink.rows_per_statement(4)) {
            let sql = format!(
                "INSERT INTO attention (user_id, conversation_id, seq, message_id) VALUES {} \
                 ON CONFLICT (user_id, message_id) DO NOTHING",
                parley_store::values(chunk.len(), 4)
            );
            let mut args = Vec::with_capacity(chunk.len() * 4);
            for ([user, conversation, message], seq) in chunk {
                args.extend([
                    Arg::from(user),
                    Arg::from(conversation),
                    Arg::Int(*seq),
                    Arg::from(message),
                ]);
            }
            sink.execute(&sql, &args).await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub unread: i64,
    pub mentions: i64,
}

#[derive(FromRow)]
struct CountRow {
    conversation_id: String,
    unread: i64,
    mentions: i64,
}

/// Unread and mention counts of `user_id` in each of `conversation_ids`.
pub async fn counts(
    db: &Db,
    user_id: &str,
    conversation_ids: &[String],
) -> Result<HashMap<String, Counts>, ProjectionError> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT r.conversation_id, \
            a.last_seq - r.read_seq - \
              (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = r.conversation_id AND m.seq > r.read_seq AND m.author_id = $1) - \
              (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = r.conversation_id AND m.seq > r.read_seq AND m.deleted = 1 AND m.author_id <> $1) \
              AS unread, \
            (SELECT COUNT(*) FROM attention t JOIN messages m ON m.id = t.message_id \
              WHERE t.user_id = $1 AND t.conversation_id = r.conversation_id AND t.seq > r.read_seq AND m.deleted = 0) AS mentions \
         FROM read_markers r JOIN conversation_activity a ON a.conversation_id = r.conversation_id \
         WHERE r.user_id = $1 AND r.conversation_id IN ({})",
        placeholders(2, conversation_ids.len())
    );
    let mut query = sqlx::query_as::<_, CountRow>(&sql).bind(user_id);
    for id in conversation_ids {
        query = query.bind(id);
    }
    Ok(query
        .fetch_all(&db.read)
        .await?
        .into_iter()
        .map(|row| {
            (
                row.conversation_id,
                Counts {
                    unread: row.unread.max(0),
                    mentions: row.mentions,
                },
            )
        })
        .collect())
}

/// The user's read marker in a conversation (0 when none).
pub async fn read_seq(
    db: &Db,
    conversation_id: &str,
    user_id: &str,
) -> Result<i64, ProjectionError> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT read_seq FROM read_markers WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(&db.read)
    .await?;
    Ok(seq.unwrap_or(0))
}

#[derive(FromRow)]
struct ReadCountRow {
    id: String,
    read_count: i64,
}

/// For each message, how many other current members have read it.
pub async fn read_counts(
    db: &Db,
    message_ids: &[String],
) -> Result<HashMap<String, i64>, ProjectionError> {
    if message_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT m.id, (SELECT COUNT(*) FROM read_markers r JOIN members mm \
              ON mm.conversation_id = r.conversation_id AND mm.user_id = r.user_id \
            WHERE r.conversation_id = m.conversation_id AND r.read_seq >= m.seq AND r.user_id <> m.author_id) AS read_count \
         FROM messages m WHERE m.id IN ({})",
        placeholders(1, message_ids.len())
    );
    let mut query = sqlx::query_as::<_, ReadCountRow>(&sql);
    for id in message_ids {
        query = query.bind(id);
    }
    Ok(query
        .fetch_all(&db.read)
        .await?
        .into_iter()
        .map(|row| (row.id, row.read_count))
        .collect())
}
