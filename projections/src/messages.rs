//! The `messages` read model: message history, earlier bodies of edited messages,
//! reactions, threads, and each conversation's latest activity.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::message::MessageEvent;
use parley_aggregates::user::UserEvent;
use sqlx::{AnyConnection, FromRow};

use crate::page::Page;
use crate::sink::{Arg, Sink};
use crate::{
    format_time, placeholders, rows_per_statement, Db, ProjectionError, Projector, StoredEvent,
};

pub struct MessagesProjector;

fn json_ids(ids: &[uuid::Uuid]) -> String {
    serde_json::to_string(&ids.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".to_owned())
}

#[async_trait::async_trait]
impl Projector for MessagesProjector {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "messages",
            "message_edits",
            "reactions",
            "conversation_activity",
        ]
    }

    fn backend_tables(&self, backend: crate::Backend) -> &'static [&'static str] {
        match backend {
            crate::Backend::Sqlite => &["messages_fts", "message_search_keys"],
            crate::Backend::Postgres => &[],
        }
    }

    /// Reply counts are recounted from the replies.
    fn write_indexes(&self) -> &'static [&'static str] {
        &["messages_replies"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[event]).await
    }

    /// A batch, whatever its mix, folds into one set of changes per table, written in
    /// a fixed order with a few multi-row statements each (plus a recount per
    /// replied-to message). The order gives what applying the events one by one gives,
    /// because the domain never touches a message before it is posted or after it is
    /// deleted: posts, then edits, then reactions (netted per reaction), then deletions.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        apply_to(Sink::Any(conn), events).await
    }

    /// Messages are most of a rebuild's rows, and their shadow is its critical path.
    fn loads(&self) -> bool {
        true
    }

    async fn load_all(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        apply_to(Sink::Load(conn), events).await
    }
}

async fn apply_to(mut sink: Sink<'_>, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
    let mut batch = Batch::default();
    for event in events {
        // An erasure touches every message of its user: what came before it is
        // written first, so it erases that too.
        match event.event_of(&[EventKind::User, EventKind::Conversation])? {
            Some(Event::User(UserEvent::AccountErased { user_id, .. })) => {
                std::mem::take(&mut batch).write(&mut sink).await?;
                erase_author(&mut sink, &user_id.to_string()).await?;
                continue;
            }
            Some(Event::Conversation(ConversationEvent::MessagesExpired {
                conversation_id,
                before,
                ..
            })) => {
                std::mem::take(&mut batch).write(&mut sink).await?;
                expire(
                    &mut sink,
                    &conversation_id.to_string(),
                    &format_time(*before),
                )
                .await?;
                continue;
            }
            _ => {}
        }
        batch.add(event)?;
    }
    batch.write(&mut sink).await
}

/// Drops a conversation's messages posted before `before`, with everything about them:
/// earlier versions, reactions and search entries.
async fn expire(
    sink: &mut Sink<'_>,
    conversation_id: &str,
    before: &str,
) -> Result<(), ProjectionError> {
    const EXPIRED: &str = "SELECT id FROM messages WHERE conversation_id = $1 AND created_at < $2";
    let mut statements = Vec::new();
    if sink.is_sqlite() {
        statements.push(format!(
            "DELETE FROM messages_fts WHERE rowid IN \
             (SELECT docid FROM message_search_keys WHERE message_id IN ({EXPIRED}))"
        ));
        statements.push(format!(
            "DELETE FROM message_search_keys WHERE message_id IN ({EXPIRED})"
        ));
    }
    statements.extend([
        format!("DELETE FROM message_edits WHERE message_id IN ({EXPIRED})"),
        format!("DELETE FROM reactions WHERE message_id IN ({EXPIRED})"),
        "DELETE FROM messages WHERE conversation_id = $1 AND created_at < $2".to_owned(),
    ]);
    for sql in statements {
        sink.execute(&sql, &[conversation_id.into(), before.into()])
            .await?;
    }
    optimize_search(sink).await
}

/// FTS5 keeps a deleted entry's terms in its index segments until they merge; merging
/// now leaves none of them (and secure_delete zeroes the freed pages).
async fn optimize_search(sink: &mut Sink<'_>) -> Result<(), ProjectionError> {
    if sink.is_sqlite() {
        sink.execute(
            "INSERT INTO messages_fts (messages_fts) VALUES ('optimize')",
            &[],
        )
        .await?;
    }
    Ok(())
}

/// Leaves every message of `author_id` as an erased tombstone in its place (id, seq,
/// thread and counts kept): no body, no earlier versions, nothing in the search index.
async fn erase_author(sink: &mut Sink<'_>, author_id: &str) -> Result<(), ProjectionError> {
    let mut statements = Vec::new();
    if sink.is_sqlite() {
        statements.extend([
            "DELETE FROM messages_fts WHERE rowid IN (SELECT k.docid FROM message_search_keys k \
             JOIN messages m ON m.id = k.message_id WHERE m.author_id = $1)",
            "DELETE FROM message_search_keys WHERE message_id IN \
             (SELECT id FROM messages WHERE author_id = $1)",
        ]);
    }
    statements.extend([
        "DELETE FROM message_edits WHERE message_id IN (SELECT id FROM messages WHERE author_id = $1)",
        "UPDATE messages SET body = NULL, erased = 1 WHERE author_id = $1",
    ]);
    for sql in statements {
        sink.execute(sql, &[author_id.into()]).await?;
    }
    optimize_search(sink).await
}

/// An edit's outcome for its message: the latest edit of a batch wins.
struct Edit {
    body: String,
    at: String,
    mentions: String,
}

/// Where a batch leaves one user's reaction with one emoji to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reaction {
    /// Present, added at `at`; `fresh` when the batch removed it first, so an older row
    /// must not survive in its place.
    Present {
        at: String,
        fresh: bool,
    },
    Absent,
}

/// What a batch of events does to the messages read model, folded per row.
#[derive(Default)]
struct Batch {
    created: Vec<(String, String)>,
    posts: Vec<MessageRow>,
    /// Earlier bodies: (message, version, body, edited at).
    history: Vec<(String, i64, String, String)>,
    edits: HashMap<uuid::Uuid, Edit>,
    reactions: HashMap<(String, String, String), Reaction>,
    deleted: Vec<uuid::Uuid>,
    /// Full-text index changes in log order (SQLite's index numbers its entries as
    /// they come, and a rebuild must number them as the live index did).
    search: Vec<(uuid::Uuid, Option<String>)>,
}

impl Batch {
    fn add(&mut self, event: &StoredEvent) -> Result<(), ProjectionError> {
        match event.event_of(&[EventKind::Conversation, EventKind::Message])? {
            Some(Event::Conversation(ConversationEvent::ConversationCreated {
                conversation_id,
                created_at,
                ..
            })) => self
                .created
                .push((conversation_id.to_string(), format_time(*created_at))),
            Some(Event::Conversation(
                posted @ ConversationEvent::MessagePosted {
                    message_id, body, ..
                },
            )) => {
                self.search.push((*message_id, Some(body.clone())));
                self.posts.extend(MessageRow::posted(posted));
            }
            Some(Event::Message(MessageEvent::MessageEdited {
                message_id,
                body,
                previous_body,
                mentions,
                edited_at,
                ..
            })) => {
                let at = format_time(*edited_at);
                self.search.push((*message_id, Some(body.clone())));
                self.history.push((
                    message_id.to_string(),
                    event.sequence,
                    previous_body.clone(),
                    at.clone(),
                ));
                self.edits.insert(
                    *message_id,
                    Edit {
                        body: body.clone(),
                        at,
                        mentions: json_ids(mentions),
                    },
                );
            }
            Some(Event::Message(MessageEvent::MessageDeleted { message_id, .. })) => {
                self.deleted.push(*message_id);
                self.search.push((*message_id, None));
            }
            Some(Event::Message(MessageEvent::ReactionAdded {
                message_id,
                user_id,
                emoji,
                reacted_at,
                ..
            })) => {
                let key = (message_id.to_string(), emoji.clone(), user_id.to_string());
                let at = format_time(*reacted_at);
                match self.reactions.get(&key) {
                    // Adding again what is there keeps the first addition.
                    Some(Reaction::Present { .. }) => {}
                    Some(Reaction::Absent) => {
                        self.reactions
                            .insert(key, Reaction::Present { at, fresh: true });
                    }
                    None => {
                        self.reactions
                            .insert(key, Reaction::Present { at, fresh: false });
                    }
                }
            }
            Some(Event::Message(MessageEvent::ReactionRemoved {
                message_id,
                user_id,
                emoji,
                ..
            })) => {
                let key = (message_id.to_string(), emoji.clone(), user_id.to_string());
                self.reactions.insert(key, Reaction::Absent);
            }
            _ => {}
        }
        Ok(())
    }

    async fn write(self, sink: &mut Sink<'_>) -> Result<(), ProjectionError> {
        let mut created = Vec::with_capacity(self.created.len() * 3);
        for (conversation, at) in &self.created {
            created.extend([Arg::from(conversation), Arg::Int(0), Arg::from(at)]);
        }
        sink.insert_new(
            "conversation_activity",
            &["conversation_id", "last_seq", "last_activity_at"],
            "conversation_id",
            &created,
        )
        .await?;
        insert_posts(sink, &self.posts).await?;

        let mut history = Vec::with_capacity(self.history.len() * 4);
        for (message, version, body, at) in &self.history {
            history.extend([
                Arg::from(message),
                Arg::Int(*version),
                Arg::from(body),
                Arg::from(at),
            ]);
        }
        sink.insert_new(
            "message_edits",
            &["message_id", "version", "body", "edited_at"],
            "message_id, version",
            &history,
        )
        .await?;
        let edits: Vec<(String, &Edit)> = self
            .edits
            .iter()
            .map(|(message, edit)| (message.to_string(), edit))
            .collect();
        for chunk in edits.chunks(sink.rows_per_statement(4)) {
            let sql = format!(
                "WITH v (id, body, edited_at, mentions) AS (VALUES {}) \
                 UPDATE messages SET body = v.body, edited_at = v.edited_at, mentions = v.mentions \
                 FROM v WHERE messages.id = v.id AND messages.deleted = 0",
                parley_store::values(chunk.len(), 4)
            );
            let mut args = Vec::with_capacity(chunk.len() * 4);
            for (message, edit) in chunk {
                args.extend([
                    Arg::from(message),
                    Arg::from(&edit.body),
                    Arg::from(&edit.at),
                    Arg::from(&edit.mentions),
                ]);
            }
            sink.execute(&sql, &args).await?;
        }

        let (absent, present): (Vec<_>, Vec<_>) = self
            .reactions
            .iter()
            .partition(|(_, reaction)| **reaction == Reaction::Absent);
        let replaced: Vec<_> =
            absent
                .iter()
                .chain(present.iter().filter(|(_, reaction)| {
                    matches!(reaction, Reaction::Present { fresh: true, .. })
                }))
                .map(|(key, _)| *key)
                .collect();
        for chunk in replaced.chunks(sink.rows_per_statement(3)) {
            let sql = format!(
                "DELETE FROM reactions WHERE (message_id, emoji, user_id) IN (VALUES {})",
                parley_store::values(chunk.len(), 3)
            );
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for (message, emoji, user) in chunk {
                args.extend([Arg::from(message), Arg::from(emoji), Arg::from(user)]);
            }
            sink.execute(&sql, &args).await?;
        }
        // Not copied: a reaction a batch neither removed nor re-added may be there.
        for chunk in present.chunks(sink.rows_per_statement(4)) {
            let sql = format!(
                "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES {} \
                 ON CONFLICT (message_id, emoji, user_id) DO NOTHING",
                parley_store::values(chunk.len(), 4)
            );
            let mut args = Vec::with_capacity(chunk.len() * 4);
            for ((message, emoji, user), reaction) in chunk {
                if let Reaction::Present { at, .. } = reaction {
                    args.extend([
                        Arg::from(message),
                        Arg::from(emoji),
                        Arg::from(user),
                        Arg::from(at),
                    ]);
                }
            }
            sink.execute(&sql, &args).await?;
        }

        let deleted: Vec<String> = self.deleted.iter().map(ToString::to_string).collect();
        for chunk in deleted.chunks(sink.rows_per_statement(1)) {
            let list = placeholders(1, chunk.len());
            let args: Vec<Arg> = chunk.iter().map(Arg::from).collect();
            // A tombstone keeps the message's place; its text goes, history included.
            for sql in [
                format!("UPDATE messages SET deleted = 1, body = NULL, mentions = '[]' WHERE id IN ({list})"),
                format!("DELETE FROM message_edits WHERE message_id IN ({list})"),
                format!("DELETE FROM reactions WHERE message_id IN ({list})"),
            ] {
                sink.execute(&sql, &args).await?;
            }
        }
        match sink {
            Sink::Any(conn) => index_all(conn, &self.search).await,
            // PostgreSQL derives its search index from `body`.
            Sink::Load(_) => Ok(()),
        }
    }
}

/// Writes the posts of a batch: the messages, their search entries, reply counts of
/// the messages they answer, and their conversations' latest activity.
async fn insert_posts(sink: &mut Sink<'_>, posts: &[MessageRow]) -> Result<(), ProjectionError> {
    let mut rows = Vec::with_capacity(posts.len() * 10);
    for post in posts {
        rows.extend([
            Arg::from(&post.id),
            Arg::from(&post.conversation_id),
            Arg::Int(post.seq),
            Arg::from(&post.author_id),
            Arg::from(post.body.as_deref()),
            Arg::from(&post.format),
            Arg::from(&post.created_at),
            Arg::from(post.reply_to_id.as_deref()),
            Arg::from(&post.mentions),
            Arg::from(&post.attachment_ids),
        ]);
    }
    sink.insert_new(
        "messages",
        &[
            "id",
            "conversation_id",
            "seq",
            "author_id",
            "body",
            "format",
            "created_at",
            "reply_to_id",
            "mentions",
            "attachment_ids",
        ],
        "id",
        &rows,
    )
    .await?;
    let mut parents: Vec<&str> = posts
        .iter()
        .filter_map(|p| p.reply_to_id.as_deref())
        .collect();
    parents.sort_unstable();
    parents.dedup();
    for chunk in parents.chunks(sink.rows_per_statement(1)) {
        // Recounted rather than incremented, so a replay cannot double it.
        let sql = format!(
            "UPDATE messages SET reply_count = \
                 (SELECT COUNT(*) FROM messages r WHERE r.reply_to_id = messages.id) \
             WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let args: Vec<Arg> = chunk.iter().map(|parent| Arg::Text(parent)).collect();
        sink.execute(&sql, &args).await?;
    }
    // One row per conversation (a statement may not update a row twice): its last post.
    let mut latest: HashMap<&str, &MessageRow> = HashMap::new();
    for post in posts {
        let entry = latest.entry(post.conversation_id.as_str()).or_insert(post);
        if post.seq > entry.seq {
            *entry = post;
        }
    }
    let latest: Vec<&MessageRow> = latest.into_values().collect();
    for chunk in latest.chunks(sink.rows_per_statement(4)) {
        let sql = format!(
            "INSERT INTO conversation_activity (conversation_id, last_seq, last_message_id, last_activity_at) VALUES {} \
             ON CONFLICT (conversation_id) DO UPDATE SET last_seq = excluded.last_seq, \
                 last_message_id = excluded.last_message_id, last_activity_at = excluded.last_activity_at \
             WHERE conversation_activity.last_seq < excluded.last_seq",
            parley_store::values(chunk.len(), 4)
        );
        let mut args = Vec::with_capacity(chunk.len() * 4);
        for post in chunk {
            args.extend([
                Arg::from(&post.conversation_id),
                Arg::Int(post.seq),
                Arg::from(&post.id),
                Arg::from(&post.created_at),
            ]);
        }
        sink.execute(&sql, &args).await?;
    }
    Ok(())
}

/// On SQLite, brings the FTS5 table in step with a batch's search changes (PostgreSQL
/// derives its index from `body`) in a few statements. Every FTS5 write statement
/// flushes the index's pending terms into a segment of their own, so a statement per
/// message left a rebuild merging one-row segments most of the time. Entries are
/// numbered as applying the changes one by one would number them (a new entry takes
/// the highest number in use plus one, as a rowid does), so the live index and a
/// rebuilt one agree however the log was cut into batches.
async fn index_all(
    conn: &mut AnyConnection,
    changes: &[(uuid::Uuid, Option<String>)],
) -> Result<(), ProjectionError> {
    if changes.is_empty() || conn.backend_name() != "SQLite" {
        return Ok(());
    }
    let mut ids: Vec<String> = changes.iter().map(|(id, _)| id.to_string()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut before: HashMap<String, i64> = HashMap::new();
    for chunk in ids.chunks(rows_per_statement(conn, 1)) {
        let sql = format!(
            "SELECT message_id, docid FROM message_search_keys WHERE message_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        before.extend(query.fetch_all(&mut *conn).await?);
    }
    // The highest numbers in use, enough of them to know the highest after every
    // removal of the batch.
    let removals = changes.iter().filter(|(_, body)| body.is_none()).count();
    let mut highest: BTreeSet<i64> =
        sqlx::query_scalar("SELECT docid FROM message_search_keys ORDER BY docid DESC LIMIT $1")
            .bind(i64::try_from(removals + 1).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();

    let mut keys = before.clone();
    let mut entries: BTreeMap<i64, Option<&str>> = BTreeMap::new();
    for (message, body) in changes {
        let id = message.to_string();
        match body {
            Some(body) => {
                let docid = match keys.get(&id) {
                    Some(docid) => *docid,
                    None => {
                        let docid = highest.last().map_or(1, |top| top + 1);
                        highest.insert(docid);
                        keys.insert(id, docid);
                        docid
                    }
                };
                entries.insert(docid, Some(body));
            }
            None => {
                if let Some(docid) = keys.remove(&id) {
                    highest.remove(&docid);
                    entries.insert(docid, None);
                }
            }
        }
    }

    let held: BTreeSet<i64> = before.values().copied().collect();
    let stale: Vec<i64> = entries
        .keys()
        .copied()
        .filter(|d| held.contains(d))
        .collect();
    for chunk in stale.chunks(rows_per_statement(conn, 1)) {
        let sql = format!(
            "DELETE FROM messages_fts WHERE rowid IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for docid in chunk {
            query = query.bind(*docid);
        }
        query.execute(&mut *conn).await?;
    }
    let gone: Vec<&String> = before.keys().filter(|id| !keys.contains_key(*id)).collect();
    for chunk in gone.chunks(rows_per_statement(conn, 1)) {
        let sql = format!(
            "DELETE FROM message_search_keys WHERE message_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    let mut added: Vec<(i64, &String)> = keys
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .map(|(id, docid)| (*docid, id))
        .collect();
    added.sort_unstable();
    for chunk in added.chunks(rows_per_statement(conn, 2)) {
        let sql = format!(
            "INSERT INTO message_search_keys (docid, message_id) VALUES {}",
            parley_store::values(chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (docid, id) in chunk {
            query = query.bind(*docid).bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    let bodies: Vec<(i64, &str)> = entries
        .iter()
        .filter_map(|(docid, body)| Some((*docid, (*body)?)))
        .collect();
    for chunk in bodies.chunks(rows_per_statement(conn, 2)) {
        let sql = format!(
            "INSERT INTO messages_fts (rowid, body) VALUES {}",
            parley_store::values(chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (docid, body) in chunk {
            query = query.bind(*docid).bind(*body);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct MessageRow {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub author_id: String,
    pub body: Option<String>,
    pub format: String,
    pub created_at: String,
    pub edited_at: Option<String>,
    pub deleted: i64,
    pub reply_to_id: Option<String>,
    pub reply_count: i64,
    pub mentions: String,
    pub attachment_ids: String,
    /// Its author's account was erased, and its text with it.
    pub erased: i64,
}

impl MessageRow {
    /// The row a post makes, exactly as this projector first writes it: `sendMessage`
    /// answers with it instead of reading the row back.
    pub fn posted(event: &ConversationEvent) -> Option<Self> {
        let ConversationEvent::MessagePosted {
            conversation_id,
            message_id,
            seq,
            author_id,
            body,
            format,
            reply_to_id,
            mentions,
            attachment_ids,
            posted_at,
            ..
        } = event
        else {
            return None;
        };
        Some(Self {
            id: message_id.to_string(),
            conversation_id: conversation_id.to_string(),
            seq: i64::try_from(*seq).unwrap_or(i64::MAX),
            author_id: author_id.to_string(),
            body: Some(body.clone()),
            format: format.clone(),
            created_at: format_time(*posted_at),
            edited_at: None,
            deleted: 0,
            reply_to_id: reply_to_id.map(|id| id.to_string()),
            reply_count: 0,
            mentions: json_ids(mentions),
            attachment_ids: json_ids(attachment_ids),
            erased: 0,
        })
    }

    pub fn mention_ids(&self) -> Vec<String> {
        serde_json::from_str(&self.mentions).unwrap_or_default()
    }

    pub fn attachment_id_list(&self) -> Vec<String> {
        serde_json::from_str(&self.attachment_ids).unwrap_or_default()
    }
}

const SELECT_MESSAGE: &str =
    "SELECT id, conversation_id, seq, author_id, body, format, created_at, edited_at, deleted, \
     reply_to_id, reply_count, mentions, attachment_ids, erased FROM messages";

pub async fn by_ids(db: &Db, ids: &[String]) -> Result<Vec<MessageRow>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{SELECT_MESSAGE} WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as(&sql);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&db.read).await?)
}

/// Ids of the conversation's messages posted before `before` (RFC 3339).
pub async fn posted_before(
    db: &Db,
    conversation_id: &str,
    before: &str,
) -> Result<Vec<String>, ProjectionError> {
    Ok(
        sqlx::query_scalar(
            "SELECT id FROM messages WHERE conversation_id = $1 AND created_at < $2",
        )
        .bind(conversation_id)
        .bind(before)
        .fetch_all(&db.read)
        .await?,
    )
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<MessageRow>, ProjectionError> {
    Ok(by_ids(db, &[id.to_owned()]).await?.into_iter().next())
}

fn seq_cursor(cursor: Option<&str>) -> Result<Option<i64>, ProjectionError> {
    cursor
        .map(|c| c.parse::<i64>().map_err(|_| ProjectionError::InvalidCursor))
        .transpose()
}

/// A page of a conversation's history, oldest to newest, by `first/after` or `last/before`.
pub async fn history(
    db: &Db,
    conversation_id: &str,
    first: Option<i64>,
    after: Option<&str>,
    last: Option<i64>,
    before: Option<&str>,
) -> Result<Page<MessageRow>, ProjectionError> {
    let after = seq_cursor(after)?;
    let before = seq_cursor(before)?;
    let lower = after.unwrap_or(0);
    let upper = before.unwrap_or(i64::MAX);
    let backwards = last.is_some() && first.is_none();
    let limit = if backwards { last } else { first }.unwrap_or(crate::page::DEFAULT_PAGE);
    let order = if backwards { "DESC" } else { "ASC" };
    let mut rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "{SELECT_MESSAGE} WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq {order} LIMIT $4"
    ))
    .bind(conversation_id)
    .bind(lower)
    .bind(upper)
    .bind(limit + 1)
    .fetch_all(&db.read)
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    if backwards {
        rows.reverse();
    }
    let (has_next, has_previous) = if backwards {
        (before.is_some(), more)
    } else {
        (more, after.is_some())
    };
    Ok(Page {
        items: rows
            .into_iter()
            .map(|row| (row.seq.to_string(), row))
            .collect(),
        has_next,
        has_previous,
    })
}

/// Replies to a message, oldest first.
pub async fn thread(
    db: &Db,
    message_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<MessageRow>, ProjectionError> {
    let after_seq = seq_cursor(after)?.unwrap_or(0);
    let rows = sqlx::query_as(&format!(
        "{SELECT_MESSAGE} WHERE reply_to_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(message_id)
    .bind(after_seq)
    .bind(limit + 1)
    .fetch_all(&db.read)
    .await?;
    Ok(Page::forward(
        rows,
        limit,
        after.is_some(),
        |row: &MessageRow| row.seq.to_string(),
    ))
}

#[derive(Debug, Clone, FromRow)]
pub struct EditRow {
    pub message_id: String,
    pub body: String,
    pub edited_at: String,
}

/// Earlier bodies of the given messages, oldest first.
pub async fn edits(
    db: &Db,
    message_ids: &[String],
) -> Result<HashMap<String, Vec<EditRow>>, ProjectionError> {
    let mut by_message: HashMap<String, Vec<EditRow>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(by_message);
    }
    let sql = format!(
        "SELECT message_id, body, edited_at FROM message_edits WHERE message_id IN ({}) ORDER BY message_id, version",
        placeholders(1, message_ids.len())
    );
    let mut query = sqlx::query_as::<_, EditRow>(&sql);
    for id in message_ids {
        query = query.bind(id);
    }
    for row in query.fetch_all(&db.read).await? {
        by_message
            .entry(row.message_id.clone())
            .or_default()
            .push(row);
    }
    Ok(by_message)
}

#[derive(Debug, Clone, FromRow)]
pub struct ReactionSummary {
    pub message_id: String,
    pub emoji: String,
    pub count: i64,
    pub reacted_by_viewer: i64,
}

/// Reaction counts per message and emoji, in order of first use.
pub async fn reactions(
    db: &Db,
    message_ids: &[String],
    viewer: &str,
) -> Result<HashMap<String, Vec<ReactionSummary>>, ProjectionError> {
    let mut by_message: HashMap<String, Vec<ReactionSummary>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(by_message);
    }
    let sql = format!(
        "SELECT message_id, emoji, COUNT(*) AS count, \
                SUM(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS reacted_by_viewer \
         FROM reactions WHERE message_id IN ({}) \
         GROUP BY message_id, emoji ORDER BY message_id, MIN(created_at), emoji",
        placeholders(2, message_ids.len())
    );
    let mut query = sqlx::query_as::<_, ReactionSummary>(&sql).bind(viewer);
    for id in message_ids {
        query = query.bind(id);
    }
    for row in query.fetch_all(&db.read).await? {
        by_message
            .entry(row.message_id.clone())
            .or_default()
            .push(row);
    }
    Ok(by_message)
}

/// Turns free text into an FTS5 query: every word must occur, and FTS5's own syntax in
/// the text is taken literally.
fn fts5_query(text: &str) -> String {
    text.split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

const SEARCH_COLUMNS: &str =
    "SELECT m.id, m.conversation_id, m.seq, m.author_id, m.body, m.format, m.created_at, \
     m.edited_at, m.deleted, m.reply_to_id, m.reply_count, m.mentions, m.attachment_ids, m.erased \
     FROM messages m";

/// Messages matching `query` in conversations the viewer may read (member, or public
/// channel), optionally in one conversation, newest first.
pub async fn search(
    db: &Db,
    viewer: &str,
    now_ms: i64,
    query: &str,
    conversation_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<MessageRow>, ProjectionError> {
    let (at, id, has_cursor) = crate::page::below(after)?;
    let (matching, text) = match db.backend {
        crate::Backend::Sqlite => (
            "m.id IN (SELECT k.message_id FROM messages_fts JOIN message_search_keys k \
             ON k.docid = messages_fts.rowid WHERE messages_fts MATCH $1)",
            fts5_query(query),
        ),
        crate::Backend::Postgres => (
            // The expression `messages_search` indexes.
            "to_tsvector('simple', coalesce(m.body, '')) @@ plainto_tsquery('simple', $1)",
            query.trim().to_owned(),
        ),
    };
    if text.is_empty() {
        return Ok(Page {
            items: Vec::new(),
            has_next: false,
            has_previous: after.is_some(),
        });
    }
    let rows = sqlx::query_as(&format!(
        "{SEARCH_COLUMNS} WHERE {matching} AND m.deleted = 0 \
           AND ($2 IS NULL OR m.conversation_id = $2) \
           AND {readable} \
           AND {keyset} \
         ORDER BY m.created_at DESC, m.id DESC LIMIT $7",
        readable = crate::access::full_access_sql("m.conversation_id", "$3", "$8"),
        keyset = crate::page::below_sql("m.created_at", "m.id", 4),
    ))
    .bind(&text)
    .bind(conversation_id)
    .bind(viewer)
    .bind(&at)
    .bind(&id)
    .bind(has_cursor)
    .bind(limit + 1)
    .bind(now_ms)
    .fetch_all(&db.read)
    .await?;
    Ok(Page::forward(
        rows,
        limit,
        after.is_some(),
        |row: &MessageRow| crate::page::pair(&row.created_at, &row.id),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fts5_queries_take_user_syntax_literally() {
        assert_eq!(super::fts5_query("hello  world"), "\"hello\" \"world\"");
        assert_eq!(super::fts5_query("a\"b OR c*"), "\"a\"\"b\" \"OR\" \"c*\"");
        assert_eq!(super::fts5_query("   "), "");
    }
}
