//! `myEvents`: what happens to one user across conversations (notifications, unread
//! counts, conversations added and removed, invitations), resumable by cursor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_graphql::{SimpleObject, Union, ID};
use parley_aggregates::conversation::ConversationEvent as Domain;
use parley_aggregates::member::MemberEvent;
use parley_aggregates::message::MessageEvent;
use parley_projections::unread::Counts;
use parley_projections::{
    conversations, log, notifications, unread, Db, LogPosition, Projections, StoredEvent,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::ApiError;
use super::subscription::{resume_required, REPLAY_WAIT};
use super::types::{Conversation, Invitation, Notification};

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

type Item = Result<UserEvent, async_graphql::Error>;

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
    projections: Arc<Projections>,
    viewer: Uuid,
    /// The last event handled; anything at or before it is a duplicate.
    last: LogPosition,
    /// Replaying missed events: counts are collected and sent once, at the end.
    replaying: bool,
    member_of: HashSet<Uuid>,
    /// Counts last sent per conversation, so unchanged counts are not repeated.
    sent: HashMap<Uuid, Counts>,
    changed: BTreeSet<Uuid>,
    out: mpsc::Sender<Item>,
}

fn steps(
    viewer: Uuid,
    member_of: &HashSet<Uuid>,
    event: &StoredEvent,
) -> Result<Vec<Step>, ApiError> {
    let mut steps = Vec::new();
    match event.aggregate_type.as_str() {
        "Conversation" => match event.decode::<Domain>()? {
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
        "Message" => match event.decode::<MessageEvent>()? {
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
        "MemberState" => match event.decode::<MemberEvent>()? {
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
    /// A feed from `after` (replaying what was missed), or from now.
    pub async fn new(
        db: Db,
        projections: Arc<Projections>,
        viewer: Uuid,
        after: Option<LogPosition>,
        out: mpsc::Sender<Item>,
    ) -> Result<Self, ApiError> {
        let member_of = conversations::ids_of_member(&db, &viewer.to_string())
            .await?
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let last = match after {
            Some(cursor) => cursor,
            None => log::head(&db).await?,
        };
        Ok(Self {
            db,
            projections,
            viewer,
            last,
            replaying: after.is_some(),
            member_of,
            sent: HashMap::new(),
            changed: BTreeSet::new(),
            out,
        })
    }

    async fn send(&self, event: UserEvent) -> bool {
        self.out.send(Ok(event)).await.is_ok()
    }

    /// Sends the conversation's counts if they differ from those last sent.
    async fn send_counts(&mut self, conversation: Uuid, cursor: &str) -> Result<bool, ApiError> {
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
            return Ok(true);
        }
        self.sent.insert(conversation, counts);
        Ok(self
            .send(UserEvent::UnreadCountChanged(UnreadCountChanged {
                cursor: cursor.to_owned(),
                conversation_id: ID(id),
                unread_count: count(counts.unread),
                mention_count: count(counts.mentions),
            }))
            .await)
    }

    /// Handles one event; `Ok(false)` once the subscriber is gone.
    async fn deliver(&mut self, event: &StoredEvent) -> Result<bool, ApiError> {
        if event.position <= self.last {
            return Ok(true);
        }
        self.last = event.position;
        let cursor = event.position.to_cursor();
        for step in steps(self.viewer, &self.member_of, event)? {
            let sent = match step {
                Step::Added(id) => {
                    self.member_of.insert(id);
                    match conversations::by_id(&self.db, &id.to_string()).await? {
                        Some(row) => {
                            self.send(UserEvent::ConversationAdded(ConversationAdded {
                                cursor: cursor.clone(),
                                conversation: Conversation(row),
                            }))
                            .await
                        }
                        None => true,
                    }
                }
                Step::Removed(id) => {
                    self.member_of.remove(&id);
                    self.sent.remove(&id);
                    self.changed.remove(&id);
                    self.send(UserEvent::ConversationRemoved(ConversationRemoved {
                        cursor: cursor.clone(),
                        conversation_id: ID(id.to_string()),
                    }))
                    .await
                }
                Step::Invited(id) => {
                    match conversations::invitation(&self.db, &id.to_string()).await? {
                        Some(row) => {
                            self.send(UserEvent::InvitationReceived(InvitationReceived {
                                cursor: cursor.clone(),
                                invitation: Invitation(row),
                            }))
                            .await
                        }
                        None => true,
                    }
                }
                Step::Notified => {
                    let mut open = true;
                    for row in
                        notifications::from_event(&self.db, &event.event_id, self.viewer).await?
                    {
                        open = open
                            && self
                                .send(UserEvent::NotificationCreated(NotificationCreated {
                                    cursor: cursor.clone(),
                                    notification: Notification(row),
                                }))
                                .await;
                    }
                    open
                }
                Step::Counts(id) if self.replaying => {
                    self.changed.insert(id);
                    true
                }
                Step::Counts(id) => self.send_counts(id, &cursor).await?,
            };
            if !sent {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Replays what was missed, sends the counts of conversations that changed
    /// meanwhile, then follows the live tail; no gap and no duplicate at the seam, since
    /// the live subscription is taken before the replay starts.
    async fn follow(&mut self, live: &mut crate::live::LiveReceiver) -> Result<(), ApiError> {
        loop {
            let batch = log::read_after(&self.db, self.last, 500).await?;
            let Some(newest) = batch.last() else { break };
            self.projections
                .wait_for(newest.position, REPLAY_WAIT)
                .await;
            for event in &batch {
                if !self.deliver(event).await? {
                    return Ok(());
                }
            }
        }
        if self.replaying {
            self.replaying = false;
            let cursor = self.last.to_cursor();
            for id in std::mem::take(&mut self.changed) {
                if self.member_of.contains(&id) && !self.send_counts(id, &cursor).await? {
                    return Ok(());
                }
            }
        }
        loop {
            let out = self.out.clone();
            let event = tokio::select! {
                event = live.recv() => event,
                () = out.closed() => return Ok(()),
            };
            match event {
                Ok(event) => {
                    if !self.deliver(&event).await? {
                        return Ok(());
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let _ = self.out.send(Err(resume_required(self.last))).await;
                    return Ok(());
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }

    pub async fn run(mut self, mut live: crate::live::LiveReceiver) {
        if let Err(error) = self.follow(&mut live).await {
            let _ = self.out.send(Err(error.into())).await;
        }
    }
}
