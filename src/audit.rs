//! Audit replay: a conversation's members, roles, bans, mutes and moderation actions as
//! of a moment, rebuilt from the event log alone — no read model is consulted, and the
//! conversation's state comes from the same pure `apply` the aggregate uses.

use std::collections::BTreeMap;

use cqrs_es::Aggregate as _;
use parley_aggregates::conversation::{Conversation, ConversationEvent};
use parley_aggregates::message::MessageEvent;
use parley_projections::{format_time, log, Db, ProjectionError, StoredEvent};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AuditMember {
    pub user_id: String,
    pub username: String,
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

fn occurred_at(event: &StoredEvent) -> Option<OffsetDateTime> {
    event.meta("occurred_at").and_then(|at| {
        OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
    })
}

fn until_text(until: Option<OffsetDateTime>) -> String {
    until.map_or_else(|| "indefinite".to_owned(), format_time)
}

/// Rebuilds the conversation as of `as_of` (inclusive).
pub async fn replay(
    db: &Db,
    conversation_id: Uuid,
    as_of: OffsetDateTime,
) -> Result<AuditReport, ProjectionError> {
    let id = conversation_id.to_string();
    let in_time = |event: &StoredEvent| occurred_at(event).is_some_and(|at| at <= as_of);
    let mut conversation = Conversation::default();
    let mut actions = Vec::new();
    for event in log::stream(db, "Conversation", &id)
        .await?
        .into_iter()
        .filter(|e| in_time(e))
    {
        let decoded: ConversationEvent = event.decode()?;
        let action = |action,
                      actor: Uuid,
                      target: Uuid,
                      reason: Option<&String>,
                      expires: Option<Option<OffsetDateTime>>,
                      action_id: Uuid| AuditAction {
            id: action_id.to_string(),
            occurred_at: event.meta("occurred_at").unwrap_or_default().to_owned(),
            action,
            actor_id: actor.to_string(),
            target_id: Some(target.to_string()),
            message_id: None,
            reason: reason.cloned(),
            expires_at: expires.map(until_text),
            correlation_id: event.meta("correlation_id").map(str::to_owned),
            position: event.position.to_cursor(),
        };
        let recorded = match &decoded {
            ConversationEvent::MemberRoleChanged {
                action_id,
                actor_id,
                user_id,
                reason,
                ..
            } => Some(action(
                "ROLE_CHANGE",
                *actor_id,
                *user_id,
                reason.as_ref(),
                None,
                *action_id,
            )),
            ConversationEvent::OwnershipTransferred {
                action_id,
                actor_id,
                user_id,
                reason,
                ..
            } => Some(action(
                "OWNERSHIP_TRANSFER",
                *actor_id,
                *user_id,
                reason.as_ref(),
                None,
                *action_id,
            )),
            ConversationEvent::MemberKicked {
                action_id,
                actor_id,
                user_id,
                reason,
                ..
            } => Some(action(
                "KICK",
                *actor_id,
                *user_id,
                Some(reason),
                None,
                *action_id,
            )),
            ConversationEvent::MemberBanned {
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                ..
            } => Some(action(
                "BAN",
                *actor_id,
                *user_id,
                Some(reason),
                Some(*until),
                *action_id,
            )),
            ConversationEvent::MemberUnbanned {
                action_id,
                actor_id,
                user_id,
                reason,
                ..
            } => Some(action(
                "UNBAN",
                *actor_id,
                *user_id,
                reason.as_ref(),
                None,
                *action_id,
            )),
            ConversationEvent::MemberMuted {
                action_id,
                actor_id,
                user_id,
                reason,
                until,
                ..
            } => Some(action(
                "MUTE",
                *actor_id,
                *user_id,
                Some(reason),
                Some(*until),
                *action_id,
            )),
            ConversationEvent::MemberUnmuted {
                action_id,
                actor_id,
                user_id,
                reason,
                ..
            } => Some(action(
                "UNMUTE",
                *actor_id,
                *user_id,
                reason.as_ref(),
                None,
                *action_id,
            )),
            _ => None,
        };
        actions.extend(recorded);
        conversation.apply(decoded);
    }
    for event in log::of_type(db, "Message", "MessageDeleted")
        .await?
        .into_iter()
        .filter(|e| in_time(e))
    {
        if let MessageEvent::MessageDeleted {
            message_id,
            conversation_id: of,
            author_id,
            deleted_by,
            reason,
            ..
        } = event.decode()?
        {
            if of == conversation_id && deleted_by != author_id {
                actions.push(AuditAction {
                    id: event.event_id.clone(),
                    occurred_at: event.meta("occurred_at").unwrap_or_default().to_owned(),
                    action: "DELETE_MESSAGE",
                    actor_id: deleted_by.to_string(),
                    target_id: Some(author_id.to_string()),
                    message_id: Some(message_id.to_string()),
                    reason,
                    expires_at: None,
                    correlation_id: event.meta("correlation_id").map(str::to_owned),
                    position: event.position.to_cursor(),
                });
            }
        }
    }
    // Stable order: by time, then by id, whichever stream an action came from.
    actions.sort_by(|a, b| {
        (a.occurred_at.as_str(), a.id.as_str()).cmp(&(b.occurred_at.as_str(), b.id.as_str()))
    });

    let in_force = |until: &Option<OffsetDateTime>| until.is_none_or(|until| until > as_of);
    let members = conversation
        .members
        .iter()
        .map(|(user_id, member)| AuditMember {
            user_id: user_id.to_string(),
            username: member.username.as_str().to_owned(),
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
        out.push_str(&format!(
            "member {} {} {}",
            member.user_id, member.username, member.role
        ));
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
