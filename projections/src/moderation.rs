//! The `moderation` read model: every moderation action per conversation, newest first,
//! including moderators' deletions of others' messages (by id, never the body).

use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::moderation::ModerationAction;
use sqlx::{AnyConnection, FromRow};

use crate::page::{pair, Page};
use crate::{format_time, Db, ProjectionError, Projector, StoredEvent};

pub struct ModerationProjector;

async fn record(conn: &mut AnyConnection, row: ModerationRow) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO moderation_log (id, conversation_id, action, actor_id, target_id, message_id, reason, expires_at, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(row.id)
    .bind(row.conversation_id)
    .bind(row.action)
    .bind(row.actor_id)
    .bind(row.target_id)
    .bind(row.message_id)
    .bind(row.reason)
    .bind(row.expires_at)
    .bind(row.occurred_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projector for ModerationProjector {
    fn name(&self) -> &'static str {
        "moderation"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["moderation_log"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let action = match event.event_of(&[EventKind::Conversation, EventKind::Message])? {
            Some(Event::Conversation(event)) => event.moderation_action(),
            Some(Event::Message(event)) => event.moderation_action(),
            _ => None,
        };
        let Some(action) = action else {
            return Ok(());
        };
        record(conn, ModerationRow::of(&action, &event.event_id)).await
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct ModerationRow {
    pub id: String,
    pub conversation_id: String,
    pub action: String,
    pub actor_id: String,
    pub target_id: Option<String>,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub expires_at: Option<String>,
    pub occurred_at: String,
}

impl ModerationRow {
    /// The row an action makes, exactly as this projector writes it: a moderation
    /// mutation answers with it when the read models have not caught up with its write.
    /// `event_id` names a deletion, which has no action id of its own.
    pub fn of(action: &ModerationAction<'_>, event_id: &str) -> Self {
        Self {
            id: action
                .action_id
                .map_or_else(|| event_id.to_owned(), |id| id.to_string()),
            conversation_id: action.conversation_id.to_string(),
            action: action.kind.as_str().to_owned(),
            actor_id: action.actor_id.to_string(),
            target_id: Some(action.target_id.to_string()),
            message_id: action.message_id.map(|id| id.to_string()),
            reason: action.reason.map(str::to_owned),
            expires_at: action.until.flatten().map(format_time),
            occurred_at: format_time(action.at),
        }
    }
}

const SELECT: &str = "SELECT id, conversation_id, action, actor_id, target_id, message_id, reason, expires_at, occurred_at FROM moderation_log";

pub async fn by_id(db: &Db, id: &str) -> Result<Option<ModerationRow>, ProjectionError> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.read)
        .await?)
}

/// A conversation's moderation history, newest first.
pub async fn log(
    db: &Db,
    conversation_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<ModerationRow>, ProjectionError> {
    let (at, id, has_cursor) = crate::page::below(after)?;
    let rows = sqlx::query_as(&format!(
        "{SELECT} WHERE conversation_id = $1 AND {keyset} \
         ORDER BY occurred_at DESC, id DESC LIMIT $5",
        keyset = crate::page::below_sql("occurred_at", "id", 2),
    ))
    .bind(conversation_id)
    .bind(&at)
    .bind(&id)
    .bind(has_cursor)
    .bind(limit + 1)
    .fetch_all(&db.read)
    .await?;
    Ok(Page::forward(
        rows,
        limit,
        after.is_some(),
        |row: &ModerationRow| pair(&row.occurred_at, &row.id),
    ))
}
