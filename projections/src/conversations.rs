//! The `conversations` read model: conversations, their members (with role and
//! notification level), invitations, and the bans and mutes in force.

use std::collections::HashMap;

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::member::{MemberEvent, NotificationLevel};
use sqlx::{AnyConnection, FromRow};

use crate::page::{pair, split_pair, Page};
use crate::{format_time, rows_per_statement, Db, ProjectionError, Projector, StoredEvent};

pub struct ConversationsProjector;

#[async_trait::async_trait]
impl Projector for ConversationsProjector {
    fn name(&self) -> &'static str {
        "conversations"
    }

    /// 2: bans and mutes moved to `sanctions`, where they outlive leaving.
    fn version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["conversations", "members", "invitations", "sanctions"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match event.event_of(&[EventKind::Conversation, EventKind::Member])? {
            Some(Event::Conversation(decoded)) => apply_conversation(conn, decoded.clone()).await,
            Some(Event::Member(decoded)) => match decoded.clone() {
                MemberEvent::NotificationLevelSet {
                    conversation_id,
                    user_id,
                    level,
                    ..
                } => {
                    sqlx::query("UPDATE members SET notification_level = $3 WHERE conversation_id = $1 AND user_id = $2")
                        .bind(conversation_id.to_string())
                        .bind(user_id.to_string())
                        .bind(level.as_str())
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Runs of conversations created and members joining (most of this read model's
    /// events) are written in two multi-row statements; anything else is applied on
    /// its own, in order, after what came before it.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut run = Joins::default();
        for event in events {
            match event.event_of(&[EventKind::Conversation, EventKind::Member])? {
                Some(Event::Conversation(
                    created @ ConversationEvent::ConversationCreated { .. },
                )) => run.created(created),
                Some(Event::Conversation(ConversationEvent::MemberJoined {
                    conversation_id,
                    user_id,
                    role,
                    joined_at,
                    ..
                })) => run.member(
                    conversation_id.to_string(),
                    user_id.to_string(),
                    role.as_str(),
                    format_time(*joined_at),
                ),
                Some(Event::Conversation(sent @ ConversationEvent::InvitationSent { .. })) => {
                    if let Some(row) = InvitationRow::sent(sent) {
                        run.invitations.push([
                            row.id,
                            row.conversation_id,
                            row.inviter_id,
                            row.invitee_id,
                            row.created_at,
                        ]);
                    }
                }
                Some(Event::Conversation(
                    answer @ (ConversationEvent::InvitationAccepted { .. }
                    | ConversationEvent::InvitationDeclined { .. }
                    | ConversationEvent::InvitationRevoked { .. }),
                )) => {
                    if let Some((invitation, status, at)) = answer_of(answer) {
                        run.answer(invitation, status, at);
                    }
                }
                Some(Event::Conversation(ConversationEvent::ConversationUpdated {
                    conversation_id,
                    title,
                    description,
                    ..
                })) => {
                    let update = run.updates.entry(conversation_id.to_string()).or_default();
                    // A field an update leaves out keeps what came before it.
                    if title.is_some() {
                        update.0.clone_from(title);
                    }
                    if description.is_some() {
                        update.1.clone_from(description);
                    }
                }
                Some(Event::Member(MemberEvent::NotificationLevelSet {
                    conversation_id,
                    user_id,
                    level,
                    ..
                })) => {
                    run.levels.insert(
                        (conversation_id.to_string(), user_id.to_string()),
                        level.as_str(),
                    );
                }
                Some(Event::Conversation(ConversationEvent::MessagePosted { .. }))
                | Some(Event::Conversation(ConversationEvent::MessagesExpired { .. }))
                | Some(Event::Member(_))
                | None => {}
                Some(_) => {
                    run.write(conn).await?;
                    self.apply(conn, event).await?;
                }
            }
        }
        run.write(conn).await
    }
}

/// What a run of events does to conversations, members and invitations, written
/// together in this order: conversations, members, notification levels, invitations,
/// answers to them, conversation updates. Anything that removes a member or changes a
/// role or sanction ends the run, so within one the domain's own order (a member joins
/// before choosing a level, an invitation is sent before it is answered) is this one.
#[derive(Default)]
struct Joins {
    /// id, conversation, inviter, invitee, sent at.
    invitations: Vec<[String; 5]>,
    /// Each invitation's last answer: status and when.
    answers: HashMap<String, (&'static str, String)>,
    /// Each member's last notification level.
    levels: HashMap<(String, String), &'static str>,
    /// Each conversation's title and description as updated (`None`: unchanged).
    updates: HashMap<String, (Option<String>, Option<String>)>,
    /// id, kind, title, slug, description, visibility, creator, created at.
    conversations: Vec<[Option<String>; 8]>,
    /// The last role and join time of each (conversation, user) the run adds.
    members: HashMap<(String, String), (&'static str, String)>,
}

impl Joins {
    fn created(&mut self, event: &ConversationEvent) {
        let (Some(row), ConversationEvent::ConversationCreated { members, .. }) =
            (ConversationRow::created(event), event)
        else {
            return;
        };
        for member in members {
            self.member(
                row.id.clone(),
                member.user_id.to_string(),
                member.role.as_str(),
                row.created_at.clone(),
            );
        }
        self.conversations.push([
            Some(row.id),
            Some(row.kind),
            row.title,
            row.slug,
            row.description,
            Some(row.visibility),
            Some(row.creator_id),
            Some(row.created_at),
        ]);
    }

    fn answer(&mut self, invitation: &uuid::Uuid, status: &'static str, at: &time::OffsetDateTime) {
        self.answers
            .insert(invitation.to_string(), (status, format_time(*at)));
    }

    fn member(&mut self, conversation: String, user: String, role: &'static str, at: String) {
        self.members.insert((conversation, user), (role, at));
    }

    async fn write(&mut self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for chunk in self.conversations.chunks(rows_per_statement(conn, 8)) {
            let sql = format!(
                "INSERT INTO conversations (id, kind, title, slug, description, visibility, creator_id, created_at) \
                 VALUES {} ON CONFLICT (id) DO NOTHING",
                parley_store::values(chunk.len(), 8)
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                for value in row {
                    query = query.bind(value.as_deref());
                }
            }
            query.execute(&mut *conn).await?;
        }
        self.conversations.clear();
        let members: Vec<_> = self.members.drain().collect();
        for chunk in members.chunks(rows_per_statement(conn, 4)) {
            let sql = format!(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES {} \
                 ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role, joined_at = excluded.joined_at",
                parley_store::values(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for ((conversation, user), (role, at)) in chunk {
                query = query.bind(conversation).bind(user).bind(*role).bind(at);
            }
            query.execute(&mut *conn).await?;
        }
        let levels: Vec<_> = self.levels.drain().collect();
        for chunk in levels.chunks(rows_per_statement(conn, 3)) {
            let sql = format!(
                "WITH v (conversation_id, user_id, level) AS (VALUES {}) \
                 UPDATE members SET notification_level = v.level FROM v \
                 WHERE members.conversation_id = v.conversation_id AND members.user_id = v.user_id",
                parley_store::values(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for ((conversation, user), level) in chunk {
                query = query.bind(conversation).bind(user).bind(*level);
            }
            query.execute(&mut *conn).await?;
        }
        for chunk in self.invitations.chunks(rows_per_statement(conn, 6)) {
            let sql = format!(
                "INSERT INTO invitations (id, conversation_id, inviter_id, invitee_id, created_at, status) \
                 VALUES {} ON CONFLICT (id) DO NOTHING",
                parley_store::values(chunk.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                for value in row {
                    query = query.bind(value);
                }
                query = query.bind("PENDING");
            }
            query.execute(&mut *conn).await?;
        }
        self.invitations.clear();
        let answers: Vec<_> = self.answers.drain().collect();
        for chunk in answers.chunks(rows_per_statement(conn, 3)) {
            let sql = format!(
                "WITH v (id, status, answered_at) AS (VALUES {}) \
                 UPDATE invitations SET status = v.status, answered_at = v.answered_at FROM v \
                 WHERE invitations.id = v.id",
                parley_store::values(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for (id, (status, at)) in chunk {
                query = query.bind(id).bind(*status).bind(at);
            }
            query.execute(&mut *conn).await?;
        }
        let updates: Vec<_> = self.updates.drain().collect();
        for chunk in updates.chunks(rows_per_statement(conn, 3)) {
            let sql = format!(
                "WITH v (id, title, description) AS (VALUES {}) \
                 UPDATE conversations SET title = COALESCE(v.title, conversations.title), \
                     description = COALESCE(v.description, conversations.description) FROM v \
                 WHERE conversations.id = v.id",
                parley_store::values(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for (id, (title, description)) in chunk {
                query = query.bind(id).bind(title).bind(description);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

async fn insert_member(
    conn: &mut AnyConnection,
    conversation_id: &str,
    user_id: &str,
    role: &str,
    joined_at: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role, joined_at = excluded.joined_at",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(role)
    .bind(joined_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn answer_invitation(
    conn: &mut AnyConnection,
    id: uuid::Uuid,
    status: &str,
    at: time::OffsetDateTime,
) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE invitations SET status = $2, answered_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(status)
        .bind(format_time(at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn apply_conversation(
    conn: &mut AnyConnection,
    event: ConversationEvent,
) -> Result<(), ProjectionError> {
    match event {
        ConversationEvent::ConversationCreated { ref members, .. } => {
            let Some(row) = ConversationRow::created(&event) else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO conversations (id, kind, title, slug, description, visibility, creator_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&row.id)
            .bind(&row.kind)
            .bind(&row.title)
            .bind(&row.slug)
            .bind(&row.description)
            .bind(&row.visibility)
            .bind(&row.creator_id)
            .bind(&row.created_at)
            .execute(&mut *conn)
            .await?;
            for member in members {
                insert_member(
                    conn,
                    &row.id,
                    &member.user_id.to_string(),
                    member.role.as_str(),
                    &row.created_at,
                )
                .await?;
            }
        }
        ConversationEvent::MemberJoined {
            conversation_id,
            user_id,
            role,
            joined_at,
            ..
        } => {
            insert_member(
                conn,
                &conversation_id.to_string(),
                &user_id.to_string(),
                role.as_str(),
                &format_time(joined_at),
            )
            .await?;
        }
        ConversationEvent::ConversationUpdated {
            conversation_id,
            title,
            description,
            ..
        } => {
            sqlx::query(
                "UPDATE conversations SET title = COALESCE($2, title), description = COALESCE($3, description) WHERE id = $1",
            )
            .bind(conversation_id.to_string())
            .bind(title)
            .bind(description)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::RetentionSet {
            conversation_id,
            days,
            ..
        } => {
            sqlx::query("UPDATE conversations SET retention_days = $2 WHERE id = $1")
                .bind(conversation_id.to_string())
                .bind(days.map(i64::from))
                .execute(&mut *conn)
                .await?;
        }
        ConversationEvent::InvitationSent { .. } => {
            let Some(row) = InvitationRow::sent(&event) else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO invitations (id, conversation_id, inviter_id, invitee_id, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(row.id)
            .bind(row.conversation_id)
            .bind(row.inviter_id)
            .bind(row.invitee_id)
            .bind(row.status)
            .bind(row.created_at)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::InvitationAccepted { .. }
        | ConversationEvent::InvitationDeclined { .. }
        | ConversationEvent::InvitationRevoked { .. } => {
            if let Some((invitation, status, at)) = answer_of(&event) {
                answer_invitation(conn, *invitation, status, *at).await?;
            }
        }
        ConversationEvent::MemberRoleChanged {
            conversation_id,
            user_id,
            to,
            ..
        } => {
            set_role(conn, conversation_id, user_id, to.as_str()).await?;
        }
        ConversationEvent::OwnershipTransferred {
            conversation_id,
            actor_id,
            user_id,
            ..
        } => {
            set_role(conn, conversation_id, actor_id, "ADMIN").await?;
            set_role(conn, conversation_id, user_id, "OWNER").await?;
        }
        ConversationEvent::MemberLeft {
            conversation_id,
            user_id,
            ..
        }
        | ConversationEvent::MemberKicked {
            conversation_id,
            user_id,
            ..
        } => remove_member(conn, conversation_id, user_id).await?,
        ConversationEvent::MemberBanned {
            conversation_id,
            user_id,
            until,
            ..
        } => {
            remove_member(conn, conversation_id, user_id).await?;
            sanction(conn, conversation_id, user_id, BAN, Some(until)).await?;
        }
        ConversationEvent::MemberUnbanned {
            conversation_id,
            user_id,
            ..
        } => sanction(conn, conversation_id, user_id, BAN, None).await?,
        ConversationEvent::MemberMuted {
            conversation_id,
            user_id,
            until,
            ..
        } => sanction(conn, conversation_id, user_id, MUTE, Some(until)).await?,
        ConversationEvent::MemberUnmuted {
            conversation_id,
            user_id,
            ..
        } => sanction(conn, conversation_id, user_id, MUTE, None).await?,
        ConversationEvent::MessagePosted { .. } | ConversationEvent::MessagesExpired { .. } => {}
    }
    Ok(())
}

const BAN: &str = "BAN";
const MUTE: &str = "MUTE";

async fn remove_member(
    conn: &mut AnyConnection,
    conversation_id: uuid::Uuid,
    user_id: uuid::Uuid,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2")
        .bind(conversation_id.to_string())
        .bind(user_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a ban or mute until `until` (`Some(None)`: indefinitely), or lifts it (`None`).
async fn sanction(
    conn: &mut AnyConnection,
    conversation_id: uuid::Uuid,
    user_id: uuid::Uuid,
    kind: &str,
    until: Option<Option<time::OffsetDateTime>>,
) -> Result<(), ProjectionError> {
    let query = match until {
        Some(until) => sqlx::query(
            "INSERT INTO sanctions (conversation_id, user_id, kind, until_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (conversation_id, user_id, kind) DO UPDATE SET until_ms = excluded.until_ms",
        )
        .bind(conversation_id.to_string())
        .bind(user_id.to_string())
        .bind(kind)
        .bind(until.map(crate::access::unix_ms)),
        None => sqlx::query(
            "DELETE FROM sanctions WHERE conversation_id = $1 AND user_id = $2 AND kind = $3",
        )
        .bind(conversation_id.to_string())
        .bind(user_id.to_string())
        .bind(kind),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

async fn set_role(
    conn: &mut AnyConnection,
    conversation_id: uuid::Uuid,
    user_id: uuid::Uuid,
    role: &str,
) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2")
        .bind(conversation_id.to_string())
        .bind(user_id.to_string())
        .bind(role)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct ConversationRow {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub slug: Option<String>,
    pub description: Option<String>,
    pub visibility: String,
    pub creator_id: String,
    pub created_at: String,
    pub last_activity_at: String,
    pub last_message_id: Option<String>,
    /// Its own retention window in days; `None`: the server's default.
    pub retention_days: Option<i64>,
}

impl ConversationRow {
    /// The row a creation makes, exactly as this projector first writes it: a mutation
    /// that creates a conversation answers with it when the read models have not caught
    /// up with its write.
    pub fn created(event: &ConversationEvent) -> Option<Self> {
        let ConversationEvent::ConversationCreated {
            conversation_id,
            kind,
            title,
            slug,
            description,
            visibility,
            creator_id,
            created_at,
            ..
        } = event
        else {
            return None;
        };
        let at = format_time(*created_at);
        Some(Self {
            id: conversation_id.to_string(),
            kind: kind.as_str().to_owned(),
            title: title.clone(),
            slug: slug.clone(),
            description: description.clone(),
            visibility: visibility.as_str().to_owned(),
            creator_id: creator_id.to_string(),
            created_at: at.clone(),
            last_activity_at: at,
            last_message_id: None,
            retention_days: None,
        })
    }
}

const SELECT_CONVERSATION: &str = "SELECT c.id, c.kind, c.title, c.slug, c.description, c.visibility, c.creator_id, c.created_at, \
     COALESCE(a.last_activity_at, c.created_at) AS last_activity_at, a.last_message_id, c.retention_days \
     FROM conversations c LEFT JOIN conversation_activity a ON a.conversation_id = c.id";

/// Every conversation that keeps messages for a limited time, with its window in days:
/// its own, else `default_days`.
pub async fn with_retention(
    db: &Db,
    default_days: Option<i64>,
) -> Result<Vec<(String, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT id, COALESCE(retention_days, $1) FROM conversations \
         WHERE COALESCE(retention_days, $1) IS NOT NULL",
    )
    .bind(default_days)
    .fetch_all(&db.read)
    .await?)
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<ConversationRow>, ProjectionError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_CONVERSATION} WHERE c.id = $1"))
            .bind(id)
            .fetch_optional(&db.read)
            .await?,
    )
}

pub async fn by_ids(db: &Db, ids: &[String]) -> Result<Vec<ConversationRow>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{SELECT_CONVERSATION} WHERE c.id IN ({})",
        crate::placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as(&sql);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&db.read).await?)
}

pub async fn by_slug(db: &Db, slug: &str) -> Result<Option<ConversationRow>, ProjectionError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_CONVERSATION} WHERE c.slug = $1"))
            .bind(slug)
            .fetch_optional(&db.read)
            .await?,
    )
}

fn activity_cursor(row: &ConversationRow) -> String {
    pair(&row.last_activity_at, &row.id)
}

/// The user's conversations, most recent activity first.
pub async fn for_user(
    db: &Db,
    user_id: &str,
    kind: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<ConversationRow>, ProjectionError> {
    let (at, id, has_cursor) = crate::page::below(after)?;
    let rows = sqlx::query_as(&format!(
        "{SELECT_CONVERSATION} JOIN members m ON m.conversation_id = c.id AND m.user_id = $1 \
         WHERE ($2 IS NULL OR c.kind = $2) \
           AND {keyset_activity} \
         ORDER BY COALESCE(a.last_activity_at, c.created_at) DESC, c.id DESC LIMIT $6",
        keyset_activity =
            crate::page::below_sql("COALESCE(a.last_activity_at, c.created_at)", "c.id", 3),
    ))
    .bind(user_id)
    .bind(kind)
    .bind(&at)
    .bind(&id)
    .bind(has_cursor)
    .bind(limit + 1)
    .fetch_all(&db.read)
    .await?;
    Ok(Page::forward(rows, limit, after.is_some(), activity_cursor))
}

/// Public channels the user may read (not those they are banned from), newest first.
pub async fn public_channels(
    db: &Db,
    user_id: &str,
    now_ms: i64,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<ConversationRow>, ProjectionError> {
    let (at, id, has_cursor) = crate::page::below(after)?;
    let rows = sqlx::query_as(&format!(
        "{SELECT_CONVERSATION} WHERE c.kind = 'CHANNEL' AND c.visibility = 'PUBLIC' AND {readable} \
           AND {keyset} \
         ORDER BY c.created_at DESC, c.id DESC LIMIT $4",
        readable = crate::access::full_access_sql("c.id", "$5", "$6"),
        keyset = crate::page::below_sql("c.created_at", "c.id", 1),
    ))
    .bind(&at)
    .bind(&id)
    .bind(has_cursor)
    .bind(limit + 1)
    .bind(user_id)
    .bind(now_ms)
    .fetch_all(&db.read)
    .await?;
    Ok(Page::forward(
        rows,
        limit,
        after.is_some(),
        |row: &ConversationRow| pair(&row.created_at, &row.id),
    ))
}

/// Conversations whose title or slug contains `query` among those the user may read:
/// their own and public channels they are not banned from.
pub async fn search(
    db: &Db,
    user_id: &str,
    now_ms: i64,
    query: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<ConversationRow>, ProjectionError> {
    let pattern = format!("%{}%", escape_like(&query.to_lowercase()));
    let (at, id, has_cursor) = crate::page::below(after)?;
    let rows = sqlx::query_as(&format!(
        "{SELECT_CONVERSATION} \
         WHERE (LOWER(COALESCE(c.title, '')) LIKE $2 ESCAPE '\\' OR COALESCE(c.slug, '') LIKE $2 ESCAPE '\\') \
           AND {readable} \
           AND {keyset} \
         ORDER BY c.created_at DESC, c.id DESC LIMIT $6",
        readable = crate::access::full_access_sql("c.id", "$1", "$7"),
        keyset = crate::page::below_sql("c.created_at", "c.id", 3),
    ))
    .bind(user_id)
    .bind(&pattern)
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
        |row: &ConversationRow| pair(&row.created_at, &row.id),
    ))
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub conversation_id: String,
    pub user_id: String,
    pub role: String,
    pub joined_at: String,
    pub notification_level: String,
    /// 1 when a mute is recorded (in force or expired; see `muted_at`).
    pub muted: i64,
    /// Unix milliseconds; null for an indefinite mute.
    pub muted_until_ms: Option<i64>,
}

impl MemberRow {
    /// Whether a mute is in force at `now`: indefinite, or until later.
    pub fn muted_at(&self, now: time::OffsetDateTime) -> bool {
        let now = crate::access::unix_ms(now);
        self.muted != 0 && self.muted_until_ms.is_none_or(|until| until > now)
    }
}

/// A conversation as its creation made it: its row and its first members, exactly as
/// this projector first writes them. A mutation that creates a conversation (and
/// `myEvents`, telling its members) answers from it when the read models have not
/// caught up with the creation.
#[derive(Debug, Clone)]
pub struct Founding {
    pub conversation: ConversationRow,
    /// In joining order, as [`members`] pages them.
    pub members: Vec<MemberRow>,
}

impl Founding {
    pub fn of(event: &ConversationEvent) -> Option<Self> {
        let conversation = ConversationRow::created(event)?;
        let ConversationEvent::ConversationCreated { members, .. } = event else {
            return None;
        };
        let mut members: Vec<MemberRow> = members
            .iter()
            .map(|member| MemberRow {
                conversation_id: conversation.id.clone(),
                user_id: member.user_id.to_string(),
                role: member.role.as_str().to_owned(),
                joined_at: conversation.created_at.clone(),
                notification_level: NotificationLevel::All.as_str().to_owned(),
                muted: 0,
                muted_until_ms: None,
            })
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Some(Self {
            conversation,
            members,
        })
    }
}

/// A page of `members` (in joining order) as [`members`] pages the read model's.
pub fn members_page(
    members: &[MemberRow],
    after: Option<&str>,
    limit: i64,
) -> Result<Page<MemberRow>, ProjectionError> {
    let after_key = after.map(split_pair).transpose()?;
    let rows = members
        .iter()
        .filter(|row| {
            after_key.as_ref().is_none_or(|(at, id)| {
                (row.joined_at.as_str(), row.user_id.as_str()) > (at.as_str(), id.as_str())
            })
        })
        .take(usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX))
        .cloned()
        .collect();
    Ok(Page::forward(rows, limit, after.is_some(), member_cursor))
}

fn member_cursor(row: &MemberRow) -> String {
    pair(&row.joined_at, &row.user_id)
}

/// Members with their mute, which lives apart so that it outlives leaving.
const SELECT_MEMBER: &str = "SELECT m.conversation_id, m.user_id, m.role, m.joined_at, m.notification_level, \
     CAST(CASE WHEN s.kind IS NULL THEN 0 ELSE 1 END AS BIGINT) AS muted, s.until_ms AS muted_until_ms \
     FROM members m LEFT JOIN sanctions s ON s.conversation_id = m.conversation_id \
     AND s.user_id = m.user_id AND s.kind = 'MUTE'";

pub async fn member(
    db: &Db,
    conversation_id: &str,
    user_id: &str,
) -> Result<Option<MemberRow>, ProjectionError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT_MEMBER} WHERE m.conversation_id = $1 AND m.user_id = $2"
    ))
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(&db.read)
    .await?)
}

/// The ids of every conversation the user is a member of.
pub async fn ids_of_member(db: &Db, user_id: &str) -> Result<Vec<String>, ProjectionError> {
    Ok(
        sqlx::query_scalar("SELECT conversation_id FROM members WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&db.read)
            .await?,
    )
}

/// One user's memberships among `conversation_ids`.
pub async fn memberships(
    db: &Db,
    user_id: &str,
    conversation_ids: &[String],
) -> Result<Vec<MemberRow>, ProjectionError> {
    if conversation_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = crate::placeholders(2, conversation_ids.len());
    let sql =
        format!("{SELECT_MEMBER} WHERE m.user_id = $1 AND m.conversation_id IN ({placeholders})");
    let mut query = sqlx::query_as(&sql).bind(user_id);
    for id in conversation_ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&db.read).await?)
}

/// Members in joining order.
pub async fn members(
    db: &Db,
    conversation_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<MemberRow>, ProjectionError> {
    let (at, id) = match after {
        Some(cursor) => split_pair(cursor)?,
        None => (String::new(), String::new()),
    };
    let rows = sqlx::query_as(&format!(
        "{SELECT_MEMBER} WHERE m.conversation_id = $1 AND (m.joined_at > $2 OR (m.joined_at = $2 AND m.user_id > $3)) \
         ORDER BY m.joined_at, m.user_id LIMIT $4"
    ))
    .bind(conversation_id)
    .bind(&at)
    .bind(&id)
    .bind(limit + 1)
    .fetch_all(&db.read)
    .await?;
    Ok(Page::forward(rows, limit, after.is_some(), member_cursor))
}

#[derive(Debug, Clone, FromRow)]
pub struct InvitationRow {
    pub id: String,
    pub conversation_id: String,
    pub inviter_id: String,
    pub invitee_id: String,
    pub status: String,
    pub created_at: String,
}

impl InvitationRow {
    /// The row an invitation makes, exactly as this projector first writes it:
    /// `inviteMember` answers with it when the read models have not caught up with its
    /// write.
    pub fn sent(event: &ConversationEvent) -> Option<Self> {
        let ConversationEvent::InvitationSent {
            conversation_id,
            invitation_id,
            inviter_id,
            invitee_id,
            sent_at,
        } = event
        else {
            return None;
        };
        Some(Self {
            id: invitation_id.to_string(),
            conversation_id: conversation_id.to_string(),
            inviter_id: inviter_id.to_string(),
            invitee_id: invitee_id.to_string(),
            status: "PENDING".to_owned(),
            created_at: format_time(*sent_at),
        })
    }

    /// The row as `event`, an answer to this invitation, leaves it (unchanged by any
    /// other event): a declined or revoked invitation is answered with its new status
    /// when the read models have not caught up with the answer.
    pub fn answered(mut self, event: &ConversationEvent) -> Self {
        if let Some((invitation, status, _)) = answer_of(event) {
            if invitation.to_string() == self.id {
                self.status = status.to_owned();
            }
        }
        self
    }
}

/// An answer to an invitation: which one, the status it leaves, and when.
fn answer_of(
    event: &ConversationEvent,
) -> Option<(&uuid::Uuid, &'static str, &time::OffsetDateTime)> {
    match event {
        ConversationEvent::InvitationAccepted {
            invitation_id,
            accepted_at,
            ..
        } => Some((invitation_id, "ACCEPTED", accepted_at)),
        ConversationEvent::InvitationDeclined {
            invitation_id,
            declined_at,
            ..
        } => Some((invitation_id, "DECLINED", declined_at)),
        ConversationEvent::InvitationRevoked {
            invitation_id,
            revoked_at,
            ..
        } => Some((invitation_id, "REVOKED", revoked_at)),
        _ => None,
    }
}

const SELECT_INVITATION: &str =
    "SELECT id, conversation_id, inviter_id, invitee_id, status, created_at FROM invitations";

pub async fn invitation(db: &Db, id: &str) -> Result<Option<InvitationRow>, ProjectionError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_INVITATION} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&db.read)
            .await?,
    )
}

/// Invitations addressed to the user, newest first.
pub async fn invitations_for(
    db: &Db,
    user_id: &str,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<InvitationRow>, ProjectionError> {
    let (at, id, has_cursor) = crate::page::below(after)?;
    let rows = sqlx::query_as(&format!(
        "{SELECT_INVITATION} WHERE invitee_id = $1 AND ($2 IS NULL OR status = $2) \
           AND {keyset} \
         ORDER BY created_at DESC, id DESC LIMIT $6",
        keyset = crate::page::below_sql("created_at", "id", 3),
    ))
    .bind(user_id)
    .bind(status)
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
        |row: &InvitationRow| pair(&row.created_at, &row.id),
    ))
}
