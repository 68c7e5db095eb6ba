//! `myEvents`: what happens to one user across conversations (notifications, unread
//! counts, conversations added and removed, invitations), resumable by cursor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_graphql::{SimpleObject, Union, ID};
use parley_aggregates::conversation::ConversationEvent as Domain;
use parley_aggregates::event::{Event, EventKind};
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use parley_projections::conversations::{Founding, InvitationRow};
use parley_projections::unread::Counts;
use parley_projections::{conversations, notifications, unread};
use parley_store::{Db, LogPosition, StoredEvent};
use uuid::Uuid;

use super::error::ApiError;
use super::follow::{Flow, Follower};
use super::types::{Conversation, Invitation, Notification};
use crate::live::LiveEvent;

#[derive(SimpleObject)]
pub struct NotificationCreated {
    pub cursor: String,
    pub notification: Notification,
}

#[derive(SimpleObject)]
pub struct UnreadCountChanged {
    pub cursor: String,
    pub conversation_id: ID,
    pub unread_count: i32,
    pub mention_count: i32,
}

#[derive(SimpleObject)]
pub struct ConversationAdded {
    pub cursor: String,
    pub conversation: Conversation,
}

#[derive(SimpleObject)]
pub struct ConversationRemoved {
    pub cursor: String,
    pub conversation_id: ID,
}

#[derive(SimpleObject)]
pub struct InvitationReceived {
    pub cursor: String,
    pub invitation: Invitation,
}

/// Something that happened to the subscriber.
#[derive(Union)]
pub enum UserEvent {
    NotificationCreated(NotificationCreated),
    UnreadCountChanged(UnreadCountChanged),
    ConversationAdded(ConversationAdded),
    ConversationRemoved(ConversationRemoved),
    InvitationReceived(InvitationReceived),
}

/// What one stored event means to the subscriber.
enum Step {
    Added(Uuid),
    Removed(Uuid),
    Invited(Uuid),
    /// The subscriber's counts in this conversation may have changed.
    Counts(Uuid),
    /// The event may have notified the subscriber.
    Notified,
}

pub struct UserFeed {
    db: Db,
    viewer: Uuid,
    /// Replaying missed events: counts are collected and sent once, at the end.
    replaying: bool,
    member_of: HashSet<Uuid>,
    /// Counts last sent per conversation, so unchanged counts are not repeated.
    sent: HashMap<Uuid, Counts>,
    changed: BTreeSet<Uuid>,
}

fn steps(
    viewer: Uuid,
    member_of: &HashSet<Uuid>,
    event: &StoredEvent,
) -> Result<Vec<Step>, ApiError> {
    let mut steps = Vec::new();
    match event.event_of(&[
        EventKind::Conversation,
        EventKind::Message,
        EventKind::Member,
    ])? {
        Some(Event::Conversation(decoded)) => match decoded.clone() {
            Domain::ConversationCreated {
                conversation_id,
                members,
                ..
            } if members.iter().any(|m| m.user_id == viewer) => {
                steps.push(Step::Added(conversation_id));
            }
            Domain::MemberJoined {
                conversation_id,
                user_id,
                ..
            } if user_id == viewer => steps.push(Step::Added(conversation_id)),
            Domain::MemberLeft {
                conversation_id,
                user_id,
                ..
            }
            | Domain::MemberKicked {
                conversation_id,
                user_id,
                ..
            }
            | Domain::MemberBanned {
                conversation_id,
                user_id,
                ..
            } if user_id == viewer => steps.push(Step::Removed(conversation_id)),
            Domain::InvitationSent {
                invitation_id,
                invitee_id,
                ..
            } if invitee_id == viewer => {
                steps.push(Step::Invited(invitation_id));
                steps.push(Step::Notified);
            }
            Domain::MessagePosted {
                conversation_id,
                reply_to_author_id,
                mentions,
                ..
            } => {
                if member_of.contains(&conversation_id) {
                    steps.push(Step::Counts(conversation_id));
                }
                if mentions.contains(&viewer) || reply_to_author_id == Some(viewer) {
                    steps.push(Step::Notified);
                }
            }
            _ => {}
        },
        Some(Event::Message(decoded)) => match decoded.clone() {
            MessageEvent::MessageEdited {
                conversation_id,
                new_mentions,
                ..
            } if new_mentions.contains(&viewer) => {
                steps.push(Step::Counts(conversation_id));
                steps.push(Step::Notified);
            }
            MessageEvent::MessageDeleted {
                conversation_id, ..
            } if member_of.contains(&conversation_id) => {
                steps.push(Step::Counts(conversation_id));
            }
            MessageEvent::ReactionAdded {
                message_author_id, ..
            } if message_author_id == viewer => steps.push(Step::Notified),
            _ => {}
        },
        Some(Event::Member(decoded)) => match decoded.clone() {
            MemberEvent::ReadMarkerMoved {
                conversation_id,
                user_id,
                ..
            }
            | MemberEvent::MarkedUnread {
                conversation_id,
                user_id,
                ..
            } if user_id == viewer => steps.push(Step::Counts(conversation_id)),
            _ => {}
        },
        _ => {}
    }
    Ok(steps)
}

fn count(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl UserFeed {
    /// A feed for `viewer`; `resuming` when it starts from a cursor.
    pub async fn new(db: Db, viewer: Uuid, resuming: bool) -> Result<Self, ApiError> {
        let member_of = conversations::ids_of_member(&db, &viewer.to_string())
            .await?
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        Ok(Self {
            db,
            viewer,
            replaying: resuming,
            member_of,
            sent: HashMap::new(),
            changed: BTreeSet::new(),
        })
    }

    /// Sends the conversation's counts if they differ from those last sent.
    async fn send_counts(
        &mut self,
        conversation: Uuid,
        cursor: &str,
        out: &Out,
    ) -> Result<Flow, ApiError> {
        let id = conversation.to_string();
        let counts = unread::counts(
            &self.db,
            &self.viewer.to_string(),
            std::slice::from_ref(&id),
        )
        .await?
        .remove(&id)
        .unwrap_or_default();
        if self.sent.get(&conversation) == Some(&counts) {
            return Ok(Flow::Continue);
        }
        self.sent.insert(conversation, counts);
        let changed = UserEvent::UnreadCountChanged(UnreadCountChanged {
            cursor: cursor.to_owned(),
            conversation_id: ID(id),
            unread_count: count(counts.unread),
            mention_count: count(counts.mentions),
        });
        Ok(out.send(changed).await)
    }

    /// What one step sends.
    async fn step(
        &mut self,
        step: Step,
        event: &LiveEvent,
        cursor: &str,
        out: &Out,
    ) -> Result<Flow, ApiError> {
        let cursor = cursor.to_owned();
        Ok(match step {
            // A row the read model does not show yet (it lagged past the tail's wait, or
            // failed) is the one the event makes: the event stands.
            Step::Added(id) => {
                self.member_of.insert(id);
                let stored = conversations::by_id(&self.db, &id.to_string()).await?;
                match stored
                    .map(Conversation::from)
                    .or_else(|| made(event, Founding::of).map(Conversation::from))
                {
                    Some(conversation) => {
                        let added = ConversationAdded {
                            cursor,
                            conversation,
                        };
                        out.send(UserEvent::ConversationAdded(added)).await
                    }
                    None => Flow::Continue,
                }
            }
            Step::Removed(id) => {
                self.member_of.remove(&id);
                self.sent.remove(&id);
                self.changed.remove(&id);
                let removed = ConversationRemoved {
                    cursor,
                    conversation_id: ID(id.to_string()),
                };
                out.send(UserEvent::ConversationRemoved(removed)).await
            }
            Step::Invited(id) => {
                match conversations::invitation(&self.db, &id.to_string())
                    .await?
                    .or_else(|| made(event, InvitationRow::sent))
                {
                    Some(row) => {
                        let invitation = Invitation(row);
                        let received = InvitationReceived { cursor, invitation };
                        out.send(UserEvent::InvitationReceived(received)).await
                    }
                    None => Flow::Continue,
                }
            }
            Step::Notified => {
                for row in notifications::from_event(&self.db, &event.event_id, self.viewer).await?
                {
                    let created = NotificationCreated {
                        cursor: cursor.clone(),
                        notification: Notification(row),
                    };
                    if let Flow::Stop = out.send(UserEvent::NotificationCreated(created)).await {
                        return Ok(Flow::Stop);
                    }
                }
                Flow::Continue
            }
            Step::Counts(id) if self.replaying => {
                self.changed.insert(id);
                Flow::Continue
            }
            Step::Counts(id) => self.send_counts(id, &cursor, out).await?,
        })
    }
}

/// What `event`, a conversation's, makes in the read model by `row`: what a step
/// answers with when the read model does not show it yet (it lagged past the tail's
/// wait, or failed). Worked out only then, not for every subscriber of every event.
fn made<Row>(event: &LiveEvent, row: impl Fn(&Domain) -> Option<Row>) -> Option<Row> {
    match event.event() {
        Ok(Some(Event::Conversation(decoded))) => row(decoded),
        _ => None,
    }
}

type Out = super::follow::Out<UserEvent>;

#[async_trait::async_trait]
impl Follower for UserFeed {
    type Item = UserEvent;

    async fn event(&mut self, event: &Arc<LiveEvent>, out: &Out) -> Result<Flow, ApiError> {
        let cursor = event.position.to_cursor();
        // The feed spans every conversation, so an event no code can read (the projectors
        // stop on it and report it) most likely concerns someone else, and is not the
        // subscriber's to fix either way: it is passed over, not sent as an error.
        let steps = steps(self.viewer, &self.member_of, event).unwrap_or_else(|error| {
            tracing::warn!(position = %event.position, ?error, "myEvents passed over an event it cannot read");
            Vec::new()
        });
        for step in steps {
            if let Flow::Stop = self.step(step, event, &cursor, out).await? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// After a replay, the current counts of every conversation that changed meanwhile.
    async fn caught_up(&mut self, at: LogPosition, out: &Out) -> Result<Flow, ApiError> {
        if !self.replaying {
            return Ok(Flow::Continue);
        }
        self.replaying = false;
        let cursor = at.to_cursor();
        for id in std::mem::take(&mut self.changed) {
            if self.member_of.contains(&id) {
                if let Flow::Stop = self.send_counts(id, &cursor, out).await? {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    }
}
