//! The `moderation` read model: every moderation action per conversation, newest first,
//! including moderators' deletions of others' messages (by id, never the body).

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::message::MessageEvent;
use sqlx::{AnyConnection, FromRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::page::{pair, Page};
use crate::{format_time, Db, ProjectionError, Projector, StoredEvent};

pub struct ModerationProjector;

struct Action<'a> {
    id: String,
    conversation_id: Uuid,
    action: &'static str,
    actor_id: Uuid,
    target_id: Option<Uuid>,
    message_id: Option<Uuid>,
    reason: Option<&'a str>,
    expires_at: Option<OffsetDateTime>,
    occurred_at: OffsetDateTime,
}

async fn record(conn: &mut AnyConnection, action: Action<'_>) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO moderation_log (id, conversation_id, action, actor_id, target_id, message_id, reason, expires_at, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(action.id)
    .bind(action.conversation_id.to_string())
    .bind(action.action)
    .bind(action.actor_id.to_string())
    .bind(action.target_id.map(|id| id.to_string()))
    .bind(action.message_id.map(|id| id.to_string()))
    .bind(action.reason)
    .bind(action.expires_at.map(format_time))
    .bind(format_time(action.occurred_at))
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
        let action = match event.aggregate_type.as_str() {
            "Conversation" => {
                let person = |action,
                              action_id: Uuid,
                              conversation_id,
                              actor_id,
                              user_id,
                              reason,
                              expires_at,
                              occurred_at| Action {
                    id: action_id.to_string(),
                    conversation_id,
                    action,
                    actor_id,
                    target_id: Some(user_id),
                    message_id: None,
                    reason,
                    expires_at,
                    occurred_at,
                };
                match event.decode()? {
                    ConversationEvent::MemberRoleChanged {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        changed_at,
                        ..
                    } => {
                        return record(
                            conn,
                            person(
                                "ROLE_CHANGE",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                reason.as_deref(),
                                None,
                                changed_at,
                            ),
                        )
                        .await;
                    }
                    ConversationEvent::OwnershipTransferred {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        transferred_at,
                    } => {
                        return record(
                            conn,
                            person(
                                "OWNERSHIP_TRANSFER",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                reason.as_deref(),
                                None,
                                transferred_at,
                            ),
                        )
                        .await;
                    }
                    ConversationEvent::MemberKicked {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        kicked_at,
                    } => {
                        return record(
                            conn,
                            person(
                                "KICK",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                Some(&reason),
                                None,
                                kicked_at,
                            ),
                        )
                        .await;
                    }
                    ConversationEvent::MemberBanned {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        until,
                        banned_at,
                    } => {
                        return record(
                            conn,
                            person(
                                "BAN",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                Some(&reason),
                                until,
                                banned_at,
                            ),
                        )
                        .await;
                    }
                    ConversationEvent::MemberUnbanned {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        unbanned_at,
                    } => {
                        return record(
                            conn,
                            person(
                                "UNBAN",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                reason.as_deref(),
                                None,
                                unbanned_at,
                            ),
                        )
                        .await;
                    }
                    ConversationEvent::MemberMuted {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        until,
                        muted_at,
                    } => {
                        return record(
                            conn,
                            person(
                                "MUTE",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                Some(&reason),
                                until,
                                muted_at,
                            ),
                        )
                        .await;
                    }
                    ConversationEvent::MemberUnmuted {
                        conversation_id,
                        action_id,
                        actor_id,
                        user_id,
                        reason,
                        unmuted_at,
                    } => {
                        return record(
                            conn,
                            person(
                                "UNMUTE",
                                action_id,
                                conversation_id,
                                actor_id,
                                user_id,
                                reason.as_deref(),
                                None,
                                unmuted_at,
                            ),
                        )
                        .await;
                    }
                    _ => None,
                }
            }
            "Message" => match event.decode()? {
                MessageEvent::MessageDeleted {
                    message_id,
                    conversation_id,
                    author_id,
                    deleted_by,
                    reason,
                    deleted_at,
                    ..
                } if deleted_by != author_id => Some((
                    message_id,
                    conversation_id,
                    author_id,
                    deleted_by,
                    reason,
                    deleted_at,
                )),
                _ => None,
            },
            _ => None,
        };
        if let Some((message_id, conversation_id, author_id, deleted_by, reason, deleted_at)) =
            action
        {
            record(
                conn,
                Action {
                    id: event.event_id.clone(),
                    conversation_id,
                    action: "DELETE_MESSAGE",
                    actor_id: deleted_by,
                    target_id: Some(author_id),
                    message_id: Some(message_id),
                    reason: reason.as_deref(),
                    expires_at: None,
                    occurred_at: deleted_at,
                },
            )
            .await?;
        }
        Ok(())
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
        "{SELECT} WHERE conversation_id = $1 AND (occurred_at < $2 OR (occurred_at = $2 AND id < $3) OR $4 = 0) \
         ORDER BY occurred_at DESC, id DESC LIMIT $5"
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
