//! Per-request dataloaders: every field that looks something up goes through one, so a
//! page of 50 messages costs one query per kind of lookup, not one per message.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, Loader};
use parley_aggregates::policy::{self, ReadAccess};
use parley_projections::conversations::{ConversationRow, MemberRow};
use parley_projections::messages::{EditRow, MessageRow, ReactionSummary};
use parley_projections::unread::Counts;
use parley_projections::users::UserRow;
use parley_projections::{access, conversations, messages, unread, users, ProjectionError};
use parley_store::presence::PresenceRow;
use parley_store::{presence, Db};
use uuid::Uuid;

use crate::clock::Clock;

type LoadResult<V> = Result<HashMap<String, V>, Arc<ProjectionError>>;

macro_rules! loader {
    ($(#[$doc:meta])* $name:ident => $value:ty, |$db:ident, $viewer:ident, $keys:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name {
            db: Db,
            viewer: String,
        }

        impl Loader<String> for $name {
            type Value = $value;
            type Error = Arc<ProjectionError>;

            async fn load(&self, keys: &[String]) -> LoadResult<$value> {
                let $db = &self.db;
                let $viewer = self.viewer.as_str();
                let $keys = keys;
                let _ = $viewer;
                $body.map_err(|error| Arc::new(ProjectionError::from(error)))
            }
        }
    };
}

loader!(
    /// Users by id.
    UserLoader => UserRow, |db, viewer, keys| {
        users::by_ids(db, keys).await.map(|rows| rows.into_iter().map(|r| (r.id.clone(), r)).collect())
    }
);

loader!(
    /// Conversations by id.
    ConversationLoader => ConversationRow, |db, viewer, keys| {
        conversations::by_ids(db, keys).await.map(|rows| rows.into_iter().map(|r| (r.id.clone(), r)).collect())
    }
);

loader!(
    /// Messages by id.
    MessageLoader => MessageRow, |db, viewer, keys| {
        messages::by_ids(db, keys).await.map(|rows| rows.into_iter().map(|r| (r.id.clone(), r)).collect())
    }
);

loader!(
    /// The viewer's membership, by conversation id.
    MembershipLoader => MemberRow, |db, viewer, keys| {
        conversations::memberships(db, viewer, keys).await.map(|rows| rows.into_iter().map(|r| (r.conversation_id.clone(), r)).collect())
    }
);

loader!(
    /// The viewer's unread and mention counts, by conversation id.
    CountsLoader => Counts, |db, viewer, keys| { unread::counts(db, viewer, keys).await }
);

loader!(
    /// Reaction summaries as the viewer sees them, by message id.
    ReactionsLoader => Vec<ReactionSummary>, |db, viewer, keys| { messages::reactions(db, keys, viewer).await }
);

loader!(
    /// How many other members read each message.
    ReadCountLoader => i64, |db, viewer, keys| { unread::read_counts(db, keys).await }
);

loader!(
    /// Earlier bodies of edited messages.
    EditsLoader => Vec<EditRow>, |db, viewer, keys| { messages::edits(db, keys).await }
);

loader!(
    /// Presence as last announced, by user id.
    PresenceLoader => PresenceRow, |db, viewer, keys| { presence::by_ids(db, keys).await }
);

/// The viewer's access to conversations by the one read rule, judged at load time (a
/// WebSocket session keeps its loaders for hours; none of them caches).
pub struct AccessLoader {
    db: Db,
    viewer: String,
    clock: Arc<dyn Clock>,
}

impl Loader<String> for AccessLoader {
    type Value = ReadAccess;
    type Error = Arc<ProjectionError>;

    async fn load(&self, keys: &[String]) -> LoadResult<ReadAccess> {
        let now = access::unix_ms(self.clock.now());
        let standings = access::standings(&self.db, &self.viewer, keys, now)
            .await
            .map_err(Arc::new)?;
        Ok(standings
            .into_iter()
            .map(|(id, standing)| (id, policy::read_access(standing)))
            .collect())
    }
}

/// The loaders of one request or socket, made when a field first needs one. A socket
/// holds its loaders for its whole life, and one whose subscriptions are rendered for
/// all their subscribers at once ([`super::shared`]) never uses them: made up front,
/// they were a tenth of what such a socket holds.
pub struct Loaders {
    db: Db,
    viewer: Option<Uuid>,
    clock: Arc<dyn Clock>,
    made: OnceLock<LoaderSet>,
}

impl Loaders {
    pub fn new(db: &Db, viewer: Option<Uuid>, clock: Arc<dyn Clock>) -> Self {
        Self {
            db: db.clone(),
            viewer,
            clock,
            made: OnceLock::new(),
        }
    }
}

impl std::ops::Deref for Loaders {
    type Target = LoaderSet;

    fn deref(&self) -> &LoaderSet {
        self.made
            .get_or_init(|| LoaderSet::new(&self.db, self.viewer, self.clock.clone()))
    }
}

/// One dataloader per kind of lookup.
pub struct LoaderSet {
    pub access: DataLoader<AccessLoader>,
    pub users: DataLoader<UserLoader>,
    pub conversations: DataLoader<ConversationLoader>,
    pub messages: DataLoader<MessageLoader>,
    pub memberships: DataLoader<MembershipLoader>,
    pub counts: DataLoader<CountsLoader>,
    pub reactions: DataLoader<ReactionsLoader>,
    pub read_counts: DataLoader<ReadCountLoader>,
    pub edits: DataLoader<EditsLoader>,
    pub presence: DataLoader<PresenceLoader>,
}

impl LoaderSet {
    fn new(db: &Db, viewer: Option<Uuid>, clock: Arc<dyn Clock>) -> Self {
        let viewer = viewer.map(|id| id.to_string()).unwrap_or_default();
        macro_rules! make {
            ($loader:ident) => {
                DataLoader::new(
                    $loader {
                        db: db.clone(),
                        viewer: viewer.clone(),
                    },
                    tokio::spawn,
                )
            };
        }
        Self {
            access: DataLoader::new(
                AccessLoader {
                    db: db.clone(),
                    viewer: viewer.clone(),
                    clock,
                },
                tokio::spawn,
            ),
            users: make!(UserLoader),
            conversations: make!(ConversationLoader),
            messages: make!(MessageLoader),
            memberships: make!(MembershipLoader),
            counts: make!(CountsLoader),
            reactions: make!(ReactionsLoader),
            read_counts: make!(ReadCountLoader),
            edits: make!(EditsLoader),
            presence: make!(PresenceLoader),
        }
    }
}
