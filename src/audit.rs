//! Audit replay: a conversation's members, roles, bans, mutes and moderation actions as
//! of a moment, rebuilt from the event log alone — no read model is consulted, and the
//! conversation's state comes from the same pure `apply` the aggregate uses.

use std::collections::BTreeMap;

use cqrs_es::Aggregate as _;
use parley_aggregates::conversation::Conversation;
use parley_aggregates::event::Event;
use parley_aggregates::message::{Message, MessageEvent};
use parley_aggregates::moderation::ModerationAction;
use parley_aggregates::user::{User, UserEvent};
use parley_projections::ProjectionError;
use parley_store::{format_time, log, Db, StoredEvent};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AuditMember {
    pub user_id: String,
    /// Empty for an erased account.
    pub username: String,
    /// The account was erased: it keeps its id here, and nothing else of it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
    pub role: String,
    /// RFC 3339, `"indefinite"`, or absent when not muted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AuditBan {
    pub user_id: String,
    /// RFC 3339 or `"indefinite"`.
    pub until: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AuditAction {
    pub id: String,
    pub occurred_at: String,
    pub action: &'static str,
    pub actor_id: String,
    pub target_id: Option<String>,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub expires_at: Option<String>,
    pub correlation_id: Option<String>,
    pub position: String,
}

#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub conversation_id: String,
    pub as_of: String,
    pub exists: bool,
    pub members: Vec<AuditMember>,
    pub bans: Vec<AuditBan>,
    /// Oldest first.
    pub actions: Vec<AuditAction>,
}

fn until_text(until: Option<OffsetDateTime>) -> String {
    until.map_or_else(|| "indefinite".to_owned(), format_time)
}

/// A moderation action as the auditors' report shows it.
fn audited(event: &StoredEvent, action: ModerationAction<'_>) -> AuditAction {
    AuditAction {
        id: action
            .action_id
            .map_or_else(|| event.event_id.clone(), |id| id.to_string()),
        occurred_at: event.meta("occurred_at").unwrap_or_default().to_owned(),
        action: action.kind.as_str(),
        actor_id: action.actor_id.to_string(),
        target_id: Some(action.target_id.to_string()),
        message_id: action.message_id.map(|id| id.to_string()),
        reason: action.reason.map(str::to_owned),
        expires_at: action.until.map(until_text),
        correlation_id: event.meta("correlation_id").map(str::to_owned),
        position: event.position.to_cursor(),
    }
}

/// Rebuilds the conversation as of `as_of` (inclusive).
pub async fn replay(
    db: &Db,
    conversation_id: Uuid,
    as_of: OffsetDateTime,
) -> Result<AuditReport, ProjectionError> {
    let id = conversation_id.to_string();
    let in_time = |event: &StoredEvent| event.occurred_at().is_some_and(|at| at <= as_of);
    let mut conversation = Conversation::default();
    let mut actions = Vec::new();
    for event in log::stream(db, Conversation::TYPE, &id)
        .await?
        .into_iter()
        .filter(|e| in_time(e))
    {
        let Some(Event::Conversation(decoded)) = event.event()? else {
            continue;
        };
        actions.extend(
            decoded
                .moderation_action()
                .map(|action| audited(&event, action)),
        );
        conversation.apply(decoded.clone());
    }
    for event in log::of_type(db, Message::TYPE, MessageEvent::DELETED)
        .await?
        .into_iter()
        .filter(|e| in_time(e))
    {
        if let Some(Event::Message(decoded)) = event.event()? {
            actions.extend(
                decoded
                    .moderation_action()
                    .filter(|action| action.conversation_id == conversation_id)
                    .map(|action| audited(&event, action)),
            );
        }
    }
    // Stable order: by time, then by id, whichever stream an action came from.
    actions.sort_by(|a, b| {
        (a.occurred_at.as_str(), a.id.as_str()).cmp(&(b.occurred_at.as_str(), b.id.as_str()))
    });

    let in_force = |until: &Option<OffsetDateTime>| until.is_none_or(|until| until > as_of);
    let erased = log::erased_users(db).await?;
    let mut names = BTreeMap::new();
    for user_id in conversation.members.keys() {
        if !erased.contains(&user_id.to_string()) {
            names.insert(*user_id, username_in_log(db, *user_id).await?);
        }
    }
    let members = conversation
        .members
        .iter()
        .map(|(user_id, member)| AuditMember {
            user_id: user_id.to_string(),
            erased: erased.contains(&user_id.to_string()),
            username: names.remove(user_id).unwrap_or_default(),
            role: member.role.as_str().to_owned(),
            muted_until: conversation
                .mutes
                .get(user_id)
                .filter(|until| in_force(until))
                .map(|until| until_text(*until)),
        })
        .collect();
    let bans = conversation
        .bans
        .iter()
        .filter(|(_, until)| in_force(until))
        .map(|(user_id, until)| AuditBan {
            user_id: user_id.to_string(),
            until: until_text(*until),
        })
        .collect::<Vec<_>>();
    Ok(AuditReport {
        conversation_id: id,
        as_of: format_time(as_of),
        exists: conversation.id.is_some(),
        members,
        bans,
        actions,
    })
}

/// The username `user_id` registered with, from their own stream (conversations record
/// members by id alone); empty when the log has none.
async fn username_in_log(db: &Db, user_id: Uuid) -> Result<String, ProjectionError> {
    let registered =
        log::stream_of_types(db, User::TYPE, &user_id.to_string(), &["UserRegistered"]).await?;
    for event in registered {
        if let Some(Event::User(UserEvent::UserRegistered { username, .. })) = event.event()? {
            return Ok(username.as_str().to_owned());
        }
    }
    Ok(String::new())
}

/// The report as stable, diffable text: one line per fact, sorted within each section.
pub fn render_text(report: &AuditReport) -> String {
    let mut out = format!(
        "conversation {}\nas-of {}\n",
        report.conversation_id, report.as_of
    );
    if !report.exists {
        out.push_str("(no such conversation at that time)\n");
    }
    for member in &report.members {
        let name = if member.erased {
            "(erased)"
        } else {
            member.username.as_str()
        };
        out.push_str(&format!("member {} {name} {}", member.user_id, member.role));
        if let Some(until) = &member.muted_until {
            out.push_str(&format!(" muted-until={until}"));
        }
        out.push('\n');
    }
    for ban in &report.bans {
        out.push_str(&format!("ban {} until={}\n", ban.user_id, ban.until));
    }
    for action in &report.actions {
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        fields.insert("actor", action.actor_id.clone());
        if let Some(target) = &action.target_id {
            fields.insert("target", target.clone());
        }
        if let Some(message) = &action.message_id {
            fields.insert("message", message.clone());
        }
        if let Some(expires) = &action.expires_at {
            fields.insert("expires", expires.clone());
        }
        if let Some(correlation) = &action.correlation_id {
            fields.insert("correlation", correlation.clone());
        }
        let reason = serde_json::to_string(&action.reason).unwrap_or_default();
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(
            "action {} {} {} {} reason={reason}\n",
            action.occurred_at,
            action.action,
            action.id,
            fields.join(" ")
        ));
    }
    out
}
