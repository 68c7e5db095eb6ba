//! The `notifications` read model: mention, reply, reaction and invitation
//! notifications with read flags, honouring each member's notification level.

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::inbox::InboxEvent;
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::page::{pair, Page};
use crate::{format_time, placeholders, Db, ProjectionError, Projector, StoredEvent};

pub struct NotificationsProjector;

const NAMESPACE: Uuid = Uuid::from_u128(0x7061_726c_6579_2d6e_6f74_6966_7900_0001);

struct Notice<'a> {
    event: &'a StoredEvent,
    recipient: Uuid,
    kind: &'static str,
    conversation_id: Uuid,
    message_id: Option<Uuid>,
    invitation_id: Option<Uuid>,
    actor_id: Uuid,
    at: time::OffsetDateTime,
}

/// The recipient's level in the conversation (`ALL` when never set).
async fn level(
    conn: &mut AnyConnection,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<String, ProjectionError> {
    let level: Option<String> = sqlx::query_scalar(
        "SELECT level FROM notification_levels WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation_id.to_string())
    .bind(user_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(level.unwrap_or_else(|| "ALL".to_owned()))
}

async fn notify(conn: &mut AnyConnection, notice: Notice<'_>) -> Result<(), ProjectionError> {
    if notice.recipient == notice.actor_id {
        return Ok(());
    }
    let level = level(conn, notice.conversation_id, notice.recipient).await?;
    let wanted = match notice.kind {
        "INVITATION" => true,
        "REACTION" => level == "ALL",
        _ => level != "NONE",
    };
    if !wanted {
        return Ok(());
    }
    // Derived from the event and recipient, so a replay inserts the same row again.
    let id = Uuid::new_v5(
        &NAMESPACE,
        format!(
            "{}/{}/{}",
            notice.event.event_id, notice.recipient, notice.kind
        )
        .as_bytes(),
    );
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, conversation_id, message_id, invitation_id, actor_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(notice.recipient.to_string())
    .bind(notice.kind)
    .bind(notice.conversation_id.to_string())
    .bind(notice.message_id.map(|id| id.to_string()))
    .bind(notice.invitation_id.map(|id| id.to_string()))
    .bind(notice.actor_id.to_string())
    .bind(format_time(notice.at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projector for NotificationsProjector {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notifications", "notification_levels"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match event.event_of(&[
            EventKind::Conversation,
            EventKind::Message,
            EventKind::Member,
            EventKind::Inbox,
        ])? {
            Some(Event::Conversation(decoded)) => match decoded.clone() {
                ConversationEvent::MessagePosted {
                    conversation_id,
                    message_id,
                    author_id,
                    reply_to_author_id,
                    mentions,
                    posted_at,
                    ..
                } => {
                    for recipient in &mentions {
                        let notice = Notice {
                            event,
                            recipient: *recipient,
                            kind: "MENTION",
                            conversation_id,
                            message_id: Some(message_id),
                            invitation_id: None,
                            actor_id: author_id,
                            at: posted_at,
                        };
                        notify(conn, notice).await?;
                    }
                    if let Some(recipient) = reply_to_author_id.filter(|r| !mentions.contains(r)) {
                        let notice = Notice {
                            event,
                            recipient,
                            kind: "REPLY",
                            conversation_id,
                            message_id: Some(message_id),
                            invitation_id: None,
                            actor_id: author_id,
                            at: posted_at,
                        };
                        notify(conn, notice).await?;
                    }
                }
                ConversationEvent::InvitationSent {
                    conversation_id,
                    invitation_id,
                    inviter_id,
                    invitee_id,
                    sent_at,
                } => {
                    let notice = Notice {
                        event,
                        recipient: invitee_id,
                        kind: "INVITATION",
                        conversation_id,
                        message_id: None,
                        invitation_id: Some(invitation_id),
                        actor_id: inviter_id,
                        at: sent_at,
                    };
                    notify(conn, notice).await?;
                }
                ConversationEvent::MemberLeft {
                    conversation_id,
                    user_id,
                    ..
                } => {
                    sqlx::query("DELETE FROM notification_levels WHERE conversation_id = $1 AND user_id = $2")
                        .bind(conversation_id.to_string())
                        .bind(user_id.to_string())
                        .execute(&mut *conn)
                        .await?;
                }
                _ => {}
            },
            Some(Event::Message(decoded)) => match decoded.clone() {
                MessageEvent::MessageEdited {
                    conversation_id,
                    message_id,
                    author_id,
                    new_mentions,
                    edited_at,
                    ..
                } => {
                    for recipient in new_mentions {
                        let notice = Notice {
                            event,
                            recipient,
                            kind: "MENTION",
                            conversation_id,
                            message_id: Some(message_id),
                            invitation_id: None,
                            actor_id: author_id,
                            at: edited_at,
                        };
                        notify(conn, notice).await?;
                    }
                }
                MessageEvent::ReactionAdded {
                    conversation_id,
                    message_id,
                    message_author_id,
                    user_id,
                    reacted_at,
                    ..
                } => {
                    let notice = Notice {
                        event,
                        recipient: message_author_id,
                        kind: "REACTION",
                        conversation_id,
                        message_id: Some(message_id),
                        invitation_id: None,
                        actor_id: user_id,
                        at: reacted_at,
                    };
                    notify(conn, notice).await?;
                }
                _ => {}
            },
            Some(Event::Member(decoded)) => {
                if let MemberEvent::NotificationLevelSet {
                    conversation_id,
                    user_id,
                    level,
                    ..
                } = decoded.clone()
                {
                    sqlx::query(
                        "INSERT INTO notification_levels (conversation_id, user_id, level) VALUES ($1, $2, $3) \
                         ON CONFLICT (conversation_id, user_id) DO UPDATE SET level = excluded.level",
                    )
                    .bind(conversation_id.to_string())
                    .bind(user_id.to_string())
                    .bind(level.as_str())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Some(Event::Inbox(decoded)) => {
                match decoded.clone() {
                    InboxEvent::NotificationsRead {
                        user_id,
                        notification_ids,
                        ..
                    } => {
                        if !notification_ids.is_empty() {
                            let sql = format!(
                            "UPDATE notifications SET read = 1 WHERE user_id = $1 AND id IN ({})",
                            placeholders(2, notification_ids.len())
                        );
                            let mut query = sqlx::query(&sql).bind(user_id.to_string());
                            for id in notification_ids {
                                query = query.bind(id);
                            }
                            query.execute(&mut *conn).await?;
                        }
                    }
                    InboxEvent::AllNotificationsRead { user_id, at } => {
                        sqlx::query("UPDATE notifications SET read = 1 WHERE user_id = $1 AND created_at <= $2")
                        .bind(user_id.to_string())
                        .bind(format_time(at))
                        .execute(&mut *conn)
                        .await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub conversation_id: String,
    pub message_id: Option<String>,
    pub invitation_id: Option<String>,
    pub actor_id: String,
    pub created_at: String,
    pub read: i64,
}

/// The user's notifications, newest first.
pub async fn for_user(
    db: &Db,
    user_id: &str,
    unread_only: bool,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<NotificationRow>, ProjectionError> {
    let (at, id, has_cursor) = crate::page::below(after)?;
    let rows = sqlx::query_as(&format!(
        "SELECT id, user_id, kind, conversation_id, message_id, invitation_id, actor_id, created_at, read FROM notifications \
         WHERE user_id = $1 AND ($2 = 0 OR read = 0) \
           AND {keyset} \
         ORDER BY created_at DESC, id DESC LIMIT $6",
        keyset = crate::page::below_sql("created_at", "id", 3),
    ))
    .bind(user_id)
    .bind(i64::from(unread_only))
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
        |row: &NotificationRow| pair(&row.created_at, &row.id),
    ))
}

/// Those of `ids` that are the user's and unread.
pub async fn unread_among(
    db: &Db,
    user_id: &str,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id FROM notifications WHERE user_id = $1 AND read = 0 AND id IN ({})",
        placeholders(2, ids.len())
    );
    let mut query = sqlx::query_scalar(&sql).bind(user_id);
    for id in ids {
        query = query.bind(id.to_string());
    }
    let found: Vec<String> = query.fetch_all(&db.read).await?;
    // In the order the client gave them.
    Ok(ids
        .iter()
        .filter(|id| found.contains(&id.to_string()))
        .copied()
        .collect())
}

/// How many of the user's notifications are unread.
pub async fn count_unread(db: &Db, user_id: &str) -> Result<i64, ProjectionError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read = 0")
            .bind(user_id)
            .fetch_one(&db.read)
            .await?,
    )
}

/// The notifications `event` created for `user_id` (none when it created none).
pub async fn from_event(
    db: &Db,
    event_id: &str,
    user_id: Uuid,
) -> Result<Vec<NotificationRow>, ProjectionError> {
    // Notification ids derive from event, recipient and kind (see `notify`), so the
    // candidates are known without an index on the event.
    let ids: Vec<String> = ["MENTION", "REPLY", "REACTION", "INVITATION"]
        .iter()
        .map(|kind| {
            Uuid::new_v5(
                &NAMESPACE,
                format!("{event_id}/{user_id}/{kind}").as_bytes(),
            )
            .to_string()
        })
        .collect();
    let sql = format!(
        "SELECT id, user_id, kind, conversation_id, message_id, invitation_id, actor_id, created_at, read \
         FROM notifications WHERE id IN ({}) ORDER BY id",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as(&sql);
    for id in &ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&db.read).await?)
}
