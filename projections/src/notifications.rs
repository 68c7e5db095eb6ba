//! The `notifications` read model: mention, reply, reaction and invitation
//! notifications with read flags, honouring each member's notification level.

use std::collections::{HashMap, HashSet};

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::inbox::InboxEvent;
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::page::{pair, Page};
use crate::sink::{Arg, Sink};
use crate::{format_time, placeholders, Db, ProjectionError, Projector, StoredEvent};

pub struct NotificationsProjector;

const NAMESPACE: Uuid = Uuid::from_u128(0x7061_726c_6579_2d6e_6f74_6966_7900_0001);

/// A notification an event asks for, before the recipient's level is consulted.
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

impl Notice<'_> {
    /// Whether a recipient at `level` (`ALL` when never set) gets it.
    fn wanted(&self, level: Option<&str>) -> bool {
        let level = level.unwrap_or("ALL");
        match self.kind {
            "INVITATION" => true,
            "REACTION" => level == "ALL",
            _ => level != "NONE",
        }
    }

    /// Derived from the event and recipient, so a replay inserts the same row again.
    fn id(&self) -> Uuid {
        Uuid::new_v5(
            &NAMESPACE,
            format!("{}/{}/{}", self.event.event_id, self.recipient, self.kind).as_bytes(),
        )
    }
}

/// The notifications `event` asks for, whoever's levels say otherwise; nobody is told
/// of what they did themselves.
fn notices(event: &StoredEvent) -> Result<Vec<Notice<'_>>, ProjectionError> {
    let mut notices = Vec::new();
    match event.event_of(&[EventKind::Conversation, EventKind::Message])? {
        Some(Event::Conversation(ConversationEvent::MessagePosted {
            conversation_id,
            message_id,
            author_id,
            reply_to_author_id,
            mentions,
            posted_at,
            ..
        })) => {
            let about = |recipient: Uuid, kind| Notice {
                event,
                recipient,
                kind,
                conversation_id: *conversation_id,
                message_id: Some(*message_id),
                invitation_id: None,
                actor_id: *author_id,
                at: *posted_at,
            };
            notices.extend(mentions.iter().map(|user| about(*user, "MENTION")));
            if let Some(recipient) = reply_to_author_id.filter(|r| !mentions.contains(r)) {
                notices.push(about(recipient, "REPLY"));
            }
        }
        Some(Event::Conversation(ConversationEvent::InvitationSent {
            conversation_id,
            invitation_id,
            inviter_id,
            invitee_id,
            sent_at,
        })) => notices.push(Notice {
            event,
            recipient: *invitee_id,
            kind: "INVITATION",
            conversation_id: *conversation_id,
            message_id: None,
            invitation_id: Some(*invitation_id),
            actor_id: *inviter_id,
            at: *sent_at,
        }),
        Some(Event::Message(MessageEvent::MessageEdited {
            conversation_id,
            message_id,
            author_id,
            new_mentions,
            edited_at,
            ..
        })) => notices.extend(new_mentions.iter().map(|recipient| Notice {
            event,
            recipient: *recipient,
            kind: "MENTION",
            conversation_id: *conversation_id,
            message_id: Some(*message_id),
            invitation_id: None,
            actor_id: *author_id,
            at: *edited_at,
        })),
        Some(Event::Message(MessageEvent::ReactionAdded {
            conversation_id,
            message_id,
            message_author_id,
            user_id,
            reacted_at,
            ..
        })) => notices.push(Notice {
            event,
            recipient: *message_author_id,
            kind: "REACTION",
            conversation_id: *conversation_id,
            message_id: Some(*message_id),
            invitation_id: None,
            actor_id: *user_id,
            at: *reacted_at,
        }),
        _ => {}
    }
    notices.retain(|notice| notice.recipient != notice.actor_id);
    Ok(notices)
}

/// A (conversation, user) pair, the key of a notification level.
type Pair = (Uuid, Uuid);

/// What a batch writes, folded in log order: notification levels set or dropped, and
/// the notifications the levels in force at each event let through.
#[derive(Default)]
struct Batch<'a> {
    /// Levels as they stand at the event being folded (`None`: never set, so `ALL`),
    /// for every pair a notice of the batch asks about.
    levels: HashMap<Pair, Option<String>>,
    /// Levels the batch changed and has not written yet.
    changed: HashMap<Pair, Option<String>>,
    rows: Vec<Notice<'a>>,
}

impl<'a> Batch<'a> {
    /// Reads in one go the stored levels of every recipient the batch may notify.
    async fn load_levels(
        &mut self,
        sink: &mut Sink<'_>,
        asked: &[Vec<Notice<'a>>],
    ) -> Result<(), ProjectionError> {
        let pairs: HashSet<Pair> = asked
            .iter()
            .flatten()
            .map(|notice| (notice.conversation_id, notice.recipient))
            .collect();
        let pairs: Vec<Pair> = pairs.into_iter().collect();
        for chunk in pairs.chunks(sink.rows_per_statement(2)) {
            let sql = format!(
                "SELECT conversation_id, user_id, level FROM notification_levels \
                 WHERE (conversation_id, user_id) IN (VALUES {})",
                parley_store::values(chunk.len(), 2)
            );
            let ids = pair_ids(chunk.iter());
            let levels: Vec<(String, String, String)> =
                sink.fetch_all(&sql, &pair_args(&ids)).await?;
            for (conversation, user, level) in levels {
                if let (Ok(conversation), Ok(user)) = (conversation.parse(), user.parse()) {
                    self.levels.insert((conversation, user), Some(level));
                }
            }
            for pair in chunk {
                self.levels.entry(*pair).or_insert(None);
            }
        }
        Ok(())
    }

    fn set_level(&mut self, pair: Pair, level: Option<String>) {
        self.levels.insert(pair, level.clone());
        self.changed.insert(pair, level);
    }

    /// Folds `event` in with the notices it asks for; false when it must be applied on
    /// its own, after what came before it is written.
    fn add(
        &mut self,
        event: &'a StoredEvent,
        asked: Vec<Notice<'a>>,
    ) -> Result<bool, ProjectionError> {
        match event.event_of(&[EventKind::Conversation, EventKind::Member, EventKind::Inbox])? {
            Some(Event::Member(MemberEvent::NotificationLevelSet {
                conversation_id,
                user_id,
                level,
                ..
            })) => {
                self.set_level(
                    (*conversation_id, *user_id),
                    Some(level.as_str().to_owned()),
                );
                return Ok(true);
            }
            Some(Event::Conversation(ConversationEvent::MemberLeft {
                conversation_id,
                user_id,
                ..
            })) => {
                self.set_level((*conversation_id, *user_id), None);
                return Ok(true);
            }
            // Marking read updates rows earlier events may have added, and so does an
            // expiry.
            Some(Event::Inbox(_))
            | Some(Event::Conversation(ConversationEvent::MessagesExpired { .. })) => {
                return Ok(false)
            }
            _ => {}
        }
        for notice in asked {
            let level = self
                .levels
                .get(&(notice.conversation_id, notice.recipient))
                .and_then(Option::as_deref);
            if notice.wanted(level) {
                self.rows.push(notice);
            }
        }
        Ok(true)
    }

    async fn write(&mut self, sink: &mut Sink<'_>) -> Result<(), ProjectionError> {
        let (set, dropped): (Vec<_>, Vec<_>) =
            self.changed.drain().partition(|(_, level)| level.is_some());
        for chunk in dropped.chunks(sink.rows_per_statement(2)) {
            let sql = format!(
                "DELETE FROM notification_levels WHERE (conversation_id, user_id) IN (VALUES {})",
                parley_store::values(chunk.len(), 2)
            );
            let ids = pair_ids(chunk.iter().map(|(pair, _)| pair));
            sink.execute(&sql, &pair_args(&ids)).await?;
        }
        for chunk in set.chunks(sink.rows_per_statement(3)) {
            let sql = format!(
                "INSERT INTO notification_levels (conversation_id, user_id, level) VALUES {} \
                 ON CONFLICT (conversation_id, user_id) DO UPDATE SET level = excluded.level",
                parley_store::values(chunk.len(), 3)
            );
            let ids = pair_ids(chunk.iter().map(|(pair, _)| pair));
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for ([conversation, user], (_, level)) in ids.iter().zip(chunk) {
                args.extend([
                    Arg::from(conversation),
                    Arg::from(user),
                    Arg::from(level.as_deref()),
                ]);
            }
            sink.execute(&sql, &args).await?;
        }
        // Ids are derived from the event, so one event's notices to one recipient (a
        // mention that is also a reply) are one row.
        let mut seen = HashSet::new();
        let rows: Vec<[Option<String>; 8]> = self
            .rows
            .drain(..)
            .map(|notice| (notice.id(), notice))
            .filter(|(id, _)| seen.insert(*id))
            .map(|(id, notice)| {
                [
                    Some(id.to_string()),
                    Some(notice.recipient.to_string()),
                    Some(notice.kind.to_owned()),
                    Some(notice.conversation_id.to_string()),
                    notice.message_id.map(|id| id.to_string()),
                    notice.invitation_id.map(|id| id.to_string()),
                    Some(notice.actor_id.to_string()),
                    Some(format_time(notice.at)),
                ]
            })
            .collect();
        let args: Vec<Arg> = rows
            .iter()
            .flatten()
            .map(|value| Arg::from(value.as_deref()))
            .collect();
        sink.insert_new(
            "notifications",
            &[
                "id",
                "user_id",
                "kind",
                "conversation_id",
                "message_id",
                "invitation_id",
                "actor_id",
                "created_at",
            ],
            "id",
            &args,
        )
        .await
    }
}

/// A chunk of (conversation, user) pairs as text, for binding.
fn pair_ids<'p>(pairs: impl Iterator<Item = &'p Pair>) -> Vec<[String; 2]> {
    pairs
        .map(|(conversation, user)| [conversation.to_string(), user.to_string()])
        .collect()
}

fn pair_args(ids: &[[String; 2]]) -> Vec<Arg<'_>> {
    ids.iter().flatten().map(Arg::from).collect()
}

/// Marks notifications read.
async fn mark_read(sink: &mut Sink<'_>, event: &InboxEvent) -> Result<(), ProjectionError> {
    match event {
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
                let user_id = user_id.to_string();
                let mut args = vec![Arg::from(&user_id)];
                args.extend(notification_ids.iter().map(Arg::from));
                sink.execute(&sql, &args).await?;
            }
        }
        InboxEvent::AllNotificationsRead { user_id, at } => {
            sink.execute(
                "UPDATE notifications SET read = 1 WHERE user_id = $1 AND created_at <= $2",
                &[
                    Arg::from(&user_id.to_string()),
                    Arg::from(&format_time(*at)),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// The levels a batch needs are read in one query and kept in step in memory as its
/// events set them, and its notifications and level changes are written in a few
/// multi-row statements; only marking read (rare, and about rows the batch may have
/// added) is applied on its own, in order.
async fn apply_to(sink: &mut Sink<'_>, events: &[&StoredEvent]) -> Result<(), ProjectionError> {
    let mut batch = Batch::default();
    // What each event asks for, worked out once for both passes.
    let asked = events
        .iter()
        .map(|event| notices(event))
        .collect::<Result<Vec<_>, _>>()?;
    batch.load_levels(sink, &asked).await?;
    for (event, asked) in events.iter().zip(asked) {
        if !batch.add(event, asked)? {
            batch.write(sink).await?;
            match event.event_of(&[EventKind::Inbox, EventKind::Conversation])? {
                Some(Event::Inbox(read)) => mark_read(sink, read).await?,
                Some(Event::Conversation(ConversationEvent::MessagesExpired {
                    conversation_id,
                    before,
                    ..
                })) => {
                    // Notices about expired messages go with them.
                    sink.execute(
                        "DELETE FROM notifications WHERE conversation_id = $1 \
                         AND message_id IS NOT NULL AND created_at < $2",
                        &[
                            Arg::from(&conversation_id.to_string()),
                            Arg::from(&format_time(*before)),
                        ],
                    )
                    .await?;
                }
                _ => {}
            }
        }
    }
    batch.write(sink).await
}

#[async_trait::async_trait]
impl Projector for NotificationsProjector {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notifications", "notification_levels"]
    }

    /// Marking everything read finds the user's notifications.
    fn write_indexes(&self) -> &'static [&'static str] {
        &["notifications_by_user"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[event]).await
    }

    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        apply_to(&mut Sink::Any(conn), events).await
    }

    /// Messages mention and answer: notifications are a large share of a rebuild's rows.
    fn loads(&self) -> bool {
        true
    }

    async fn load_all(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        apply_to(&mut Sink::Load(conn), events).await
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
