//! `parley seed`: a realistic chat history — users; direct conversations, groups and
//! channels; messages with replies in threads, @mentions, reactions, edits, deletions
//! and read markers — written through the domain. Every command is decided by the
//! aggregates and appended by the same command buses the API uses, so every event is
//! one the API could have written; then the read models catch up.
//!
//! What it writes is a function of the seed: the same `--seed` (and counts) gives the
//! same users, conversations, bodies and the same events in each conversation. Ids and
//! times are not: they come from UUIDv7s and the clock, as in the API.
//!
//! It is fast where the API is careful: commands do not wait for the read models
//! (read-your-writes), conversations are written by a bounded set of concurrent tasks
//! (each conversation by one task, so its commands never race each other), and every
//! seeded user shares one argon2 hash of [`PASSWORD`], computed once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cqrs_es::{Aggregate as _, AggregateError};
use parley_aggregates::claim::{slug_claim, NameClaim, NameCommand, NameError, UsernameClaims};
use parley_aggregates::conversation::mentions::{mentioned_names, Named};
use parley_aggregates::conversation::{
    direct_conversation_id, Conversation, ConversationCommand, ConversationEvent,
    ConversationServices, MemberRef, ReplyTarget, Visibility,
};
use parley_aggregates::member::{member_state_id, MemberCommand, MemberState, NotificationLevel};
use parley_aggregates::message::{Actor, Message, MessageCommand, PostedMessage};
use parley_aggregates::user::{PasswordHasher, User, UserCommand, UserServices};
use parley_aggregates::values::{Slug, Username};
use parley_projections::Projections;
use parley_store::{log, CommandBus, CommandMeta, Db};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use uuid::Uuid;

use crate::auth::Argon2Hasher;
use crate::clock::{Clock, SystemClock};
use crate::progress::Meter;

/// The password of every seeded user.
pub const PASSWORD: &str = "parley-seed";
/// Most users one run registers: usernames stay within 32 characters.
pub const MAX_USERS: u32 = 1_000_000;
/// Most conversations one run creates: the plan is held in memory.
pub const MAX_CONVERSATIONS: u32 = 1_000_000;
/// Conversations written at once, each task holding one conversation's state. On
/// SQLite every append goes through one writer connection, and each of its statements
/// costs a hand-off between threads: the more appends wait together for a group commit,
/// the fewer hand-offs (and syncs) each costs. On two cores 64 writers made about
/// 1,000 messages/s, 256 about 2,400 and 512 about 2,800, and 1,024 no more. PostgreSQL
/// is bound by its pool's connections and commits either way.
const WRITERS: usize = 512;
/// Posted messages a conversation's writer remembers, to reply to, react to, edit or
/// delete: people act on what is still on their screen.
const RECENT: usize = 40;

/// What to seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub users: u32,
    pub conversations: u32,
    pub messages: u64,
    pub seed: u64,
}

/// Why a seed cannot be planned; each message names the flag to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--users must be at least 1")]
    NoUsers,
    #[error("--users may be at most {MAX_USERS}")]
    TooManyUsers,
    #[error("--conversations may be at most {MAX_CONVERSATIONS}")]
    TooManyConversations,
    #[error("--messages {0} need at least one conversation (--conversations)")]
    NowhereToPost(u64),
    #[error(
        "--users {users} is too few for --conversations {conversations}: a {kind} conversation needs at least {needed} users"
    )]
    TooFewUsers {
        users: u32,
        conversations: u32,
        kind: &'static str,
        needed: u32,
    },
}

/// A seeded user, before registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPlan {
    pub username: String,
    pub display_name: String,
}

/// What a conversation is, with users as indices into the plan's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Direct {
        a: usize,
        b: usize,
    },
    Group {
        creator: usize,
        members: Vec<usize>,
        title: String,
        /// Invited by the creator once the group exists.
        late: Option<usize>,
    },
    Channel {
        creator: usize,
        name: String,
        slug: String,
        description: Option<String>,
        public: bool,
        /// Join a public channel, or are invited to a private one.
        others: Vec<usize>,
    },
}

impl Shape {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Direct { .. } => "direct",
            Self::Group { .. } => "group",
            Self::Channel { .. } => "channel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPlan {
    pub shape: Shape,
    pub messages: u64,
    /// Seeds the conversation's own script, so its content does not depend on which
    /// task writes it or when.
    pub seed: u64,
}

/// Everything a seed writes, decided before anything is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub options: Options,
    pub users: Vec<UserPlan>,
    pub conversations: Vec<ConversationPlan>,
}

/// The seed in base 36: short enough for usernames and slugs.
fn tag(seed: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rest = seed;
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(rest % 36) as usize]);
        rest /= 36;
        if rest == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// User `index` (from 0) of the seed `seed`: `<name><n>_s<seed in base 36>`.
pub fn username(seed: u64, index: usize) -> String {
    let first = text::FIRST_NAMES[index % text::FIRST_NAMES.len()];
    format!("{first}{}_s{}", index + 1, tag(seed))
}

impl Plan {
    pub fn new(options: Options) -> Result<Self, PlanError> {
        let Options {
            users,
            conversations,
            messages,
            seed,
        } = options;
        if users == 0 {
            return Err(PlanError::NoUsers);
        }
        if users > MAX_USERS {
            return Err(PlanError::TooManyUsers);
        }
        if conversations > MAX_CONVERSATIONS {
            return Err(PlanError::TooManyConversations);
        }
        if messages > 0 && conversations == 0 {
            return Err(PlanError::NowhereToPost(messages));
        }
        // The first conversations are a direct one, a group and a channel, so that
        // every seed of two or more conversations has each kind.
        let too_few = |kind, needed| PlanError::TooFewUsers {
            users,
            conversations,
            kind,
            needed,
        };
        if conversations >= 1 && users < 2 {
            return Err(too_few("direct", 2));
        }
        if conversations >= 2 && users < 3 {
            return Err(too_few("group", 3));
        }

        let mut rng = StdRng::seed_from_u64(seed);
        let n = users as usize;
        let people = (0..n)
            .map(|index| UserPlan {
                username: username(seed, index),
                display_name: format!(
                    "{} {}",
                    text::capitalized(text::FIRST_NAMES[index % text::FIRST_NAMES.len()]),
                    text::SURNAMES.choose(&mut rng).copied().unwrap_or("Smith")
                ),
            })
            .collect();

        // Each pair of users has one direct conversation; sampling stops at half of
        // the pairs so that finding an unused one stays quick.
        let pairs = (n as u128) * (n as u128 - 1) / 2;
        let max_direct = (pairs / 2).max(pairs.min(1));
        let mut used_pairs: HashSet<(usize, usize)> = HashSet::new();
        let slug_tag = tag(seed);
        let mut plans = Vec::with_capacity(conversations as usize);
        for index in 0..conversations as usize {
            let roll: f64 = rng.random();
            let wanted = match index {
                0 => "direct",
                1 => "group",
                2 => "channel",
                _ if roll < 0.45 => "direct",
                _ if roll < 0.80 => "group",
                _ => "channel",
            };
            let direct_ok = n >= 2 && (used_pairs.len() as u128) < max_direct;
            let kind = match wanted {
                "direct" if direct_ok => "direct",
                "direct" | "group" if n >= 3 => "group",
                _ => "channel",
            };
            let shape = match kind {
                "direct" => loop {
                    let a = rng.random_range(0..n);
                    let b = rng.random_range(0..n);
                    if a != b && used_pairs.insert((a.min(b), a.max(b))) {
                        break Shape::Direct { a, b };
                    }
                },
                "group" => {
                    let size = rng.random_range(3..=n.min(12));
                    let extra = usize::from(n > size && rng.random_bool(0.3));
                    let chosen = rand::seq::index::sample(&mut rng, n, size + extra).into_vec();
                    let late = (extra == 1).then(|| chosen[size]);
                    Shape::Group {
                        creator: chosen[0],
                        members: chosen[1..size].to_vec(),
                        title: text::group_title(&mut rng),
                        late,
                    }
                }
                _ => {
                    let others = rng.random_range(0..=(n - 1).min(40));
                    let chosen = rand::seq::index::sample(&mut rng, n, others + 1).into_vec();
                    let topic = text::CHANNEL_TOPICS
                        .choose(&mut rng)
                        .copied()
                        .unwrap_or("general");
                    let number = index + 1;
                    Shape::Channel {
                        creator: chosen[0],
                        name: format!("{} {number}", text::capitalized(topic)),
                        slug: format!("{topic}-{number}-s{slug_tag}"),
                        description: rng.random_bool(0.6).then(|| format!("All things {topic}.")),
                        public: rng.random_bool(0.75),
                        others: chosen[1..].to_vec(),
                    }
                }
            };
            plans.push(ConversationPlan {
                shape,
                messages: 0,
                seed: rng.random(),
            });
        }

        // Some conversations are far busier than others, as in any workspace.
        let weights: Vec<f64> = plans
            .iter()
            .map(|_| (rng.random::<f64>() * 4.0).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut given = 0;
        for (plan, weight) in plans.iter_mut().zip(&weights) {
            plan.messages = (messages as f64 * weight / total).floor() as u64;
            given += plan.messages;
        }
        // What rounding left over, one more each, so the counts add up to `messages`.
        let count = plans.len().max(1) as u64;
        for (i, plan) in plans.iter_mut().enumerate() {
            let rest = messages.saturating_sub(given);
            plan.messages += rest / count + u64::from((i as u64) < rest % count);
        }
        Ok(Self {
            options,
            users: people,
            conversations: plans,
        })
    }
}

/// Hands every seeded user the one hash of [`PASSWORD`] computed up front: registering
/// still goes through the `User` aggregate, without an argon2 run per user.
struct SharedHash {
    hash: String,
    hasher: Argon2Hasher,
}

#[async_trait::async_trait]
impl PasswordHasher for SharedHash {
    async fn hash(&self, password: &str) -> Result<String, String> {
        if password == PASSWORD {
            Ok(self.hash.clone())
        } else {
            Err("seeded users all have the seed password".to_owned())
        }
    }

    async fn verify(&self, password: &str, hash: &str) -> bool {
        self.hasher.verify(password, hash).await
    }
}

/// How far a seed got.
#[derive(Debug, Default)]
struct Tally {
    users: AtomicU64,
    messages: AtomicU64,
    events: AtomicU64,
}

/// What a seed wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub users: u64,
    pub direct: u64,
    pub groups: u64,
    pub channels: u64,
    pub messages: u64,
    pub events: u64,
    pub written_in: Duration,
    pub projected_in: Duration,
}

struct Seeder {
    plan: Plan,
    /// The plan's users as conversations record them, ids chosen up front.
    people: Vec<MemberRef>,
    /// Their usernames, in the same order.
    usernames: Vec<Username>,
    /// The same by name and by id: the directory `@mentions` are resolved with (the
    /// read model it stands in for is built after seeding).
    directory: Named,
    username_of: HashMap<Uuid, Username>,
    users: CommandBus<User>,
    names: CommandBus<NameClaim>,
    conversations: CommandBus<Conversation>,
    messages: CommandBus<Message>,
    members: CommandBus<MemberState>,
    services: ConversationServices,
    /// Digests usernames for their claims.
    keys: Arc<parley_store::Keyring>,
    clock: SystemClock,
    tally: Tally,
}

/// Seeds `db` as `plan` says, then brings the read models up to date.
pub async fn seed(db: &Db, services: ConversationServices, plan: Plan) -> anyhow::Result<Summary> {
    let seed = plan.options.seed;
    let usernames = plan
        .users
        .iter()
        .map(|user| Username::parse(&user.username, "username"))
        .collect::<Result<Vec<_>, parley_aggregates::InputError>>()
        .context("a planned username is not valid")?;
    let people: Vec<MemberRef> = usernames
        .iter()
        .map(|_| MemberRef {
            user_id: Uuid::now_v7(),
        })
        .collect();
    let username_of: HashMap<Uuid, Username> = people
        .iter()
        .map(|person| person.user_id)
        .zip(usernames.iter().cloned())
        .collect();
    let directory: Named = username_of
        .iter()
        .map(|(id, name)| (name.as_str().to_owned(), *id))
        .collect();
    let names: CommandBus<NameClaim> = CommandBus::new(db, ());
    if let Some(first) = usernames.first() {
        let claims = UsernameClaims::new(first.as_str(), db.keys.name_digest(first.as_str()));
        for claim in std::iter::once(&claims.current).chain(&claims.legacy) {
            if names.load(claim).await?.owner.is_some() {
                anyhow::bail!("{}", taken(seed));
            }
        }
    }
    let hasher = Argon2Hasher::new()?;
    let hash = hasher
        .hash(PASSWORD)
        .await
        .map_err(|error| anyhow::anyhow!("cannot hash the seed password: {error}"))?;
    let shared = SharedHash { hash, hasher };
    let seeder = Arc::new(Seeder {
        people,
        usernames,
        directory,
        username_of,
        users: CommandBus::new(db, UserServices::new(Arc::new(shared))),
        names,
        conversations: CommandBus::new(db, services.clone()),
        messages: CommandBus::new(db, ()),
        members: CommandBus::new(db, ()),
        services,
        keys: db.keys.clone(),
        clock: SystemClock,
        tally: Tally::default(),
        plan,
    });

    let started = Instant::now();
    let users = seeder.plan.users.len();
    with_meter(
        in_parallel(&seeder, users, |seeder, index| async move {
            seeder.register(index).await
        }),
        users as u64,
        "users registered",
        || seeder.tally.users.load(Ordering::Relaxed),
    )
    .await?;

    // Longest first, so that one busy conversation does not finish alone at the end.
    let mut order: Vec<usize> = (0..seeder.plan.conversations.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seeder.plan.conversations[i].messages));
    let order = Arc::new(order);
    with_meter(
        in_parallel(&seeder, order.len(), move |seeder, at| {
            let index = order[at];
            async move { seeder.converse(index).await }
        }),
        seeder.plan.options.messages,
        "messages posted",
        || seeder.tally.messages.load(Ordering::Relaxed),
    )
    .await?;
    let written_in = started.elapsed();

    let projecting = Instant::now();
    catch_up(db).await?;

    let count = |kind: &str| {
        seeder
            .plan
            .conversations
            .iter()
            .filter(|plan| plan.shape.kind() == kind)
            .count() as u64
    };
    Ok(Summary {
        users: seeder.tally.users.load(Ordering::Relaxed),
        direct: count("direct"),
        groups: count("group"),
        channels: count("channel"),
        messages: seeder.tally.messages.load(Ordering::Relaxed),
        events: seeder.tally.events.load(Ordering::Relaxed),
        written_in,
        projected_in: projecting.elapsed(),
    })
}

fn taken(seed: u64) -> String {
    format!(
        "the users of seed {seed} already exist in this database (usernames end in _s{}); pass another --seed",
        tag(seed)
    )
}

/// Runs `work(seeder, i)` for every `i` below `count` on at most [`WRITERS`] tasks; the
/// first error stops them all.
async fn in_parallel<F, Fut>(seeder: &Arc<Seeder>, count: usize, work: F) -> anyhow::Result<()>
where
    F: Fn(Arc<Seeder>, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::<anyhow::Result<()>>::new();
    for _ in 0..WRITERS.min(count) {
        let (seeder, next, work) = (seeder.clone(), next.clone(), work.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok(());
                }
                work(seeder.clone(), i).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        // Returning drops the set, which aborts the other tasks.
        done.context("a seeding task failed")??;
    }
    Ok(())
}

/// Awaits `work` while a meter shows `done()` out of `total`.
async fn with_meter<T>(
    work: impl Future<Output = T>,
    total: u64,
    unit: &'static str,
    done: impl Fn() -> u64,
) -> T {
    let mut meter = Meter::new("seed", unit, total);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                meter.set(done(), String::new);
            }
        }
    };
    meter.finish();
    out
}

/// Runs every projector until it has applied the whole log, as a server would.
async fn catch_up(db: &Db) -> anyhow::Result<()> {
    let head = log::head(db).await?;
    let projections = Projections::start(db.clone(), crate::startup::projectors());
    let mut meter = Meter::new(
        "seed: read models",
        "log positions applied",
        u64::try_from(head.pos).unwrap_or_default(),
    );
    let result = loop {
        let positions = projections.positions();
        if let Some((name, failure)) = positions
            .iter()
            .find_map(|(name, progress)| Some((name, progress.failure.as_ref()?)))
        {
            break Err(anyhow::anyhow!(
                "projector {name} failed: {failure} (see `parley projections status`)"
            ));
        }
        let behind = positions
            .iter()
            .map(|(_, progress)| progress.position)
            .min()
            .unwrap_or(head);
        let at = u64::try_from(behind.pos).unwrap_or_default();
        meter.set(at, String::new);
        if behind >= head {
            break Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    meter.finish();
    projections.stop();
    result
}

impl Seeder {
    fn meta(&self, actor: Uuid) -> CommandMeta {
        CommandMeta::new(Some(actor), self.clock.now())
    }

    /// The accounts `body`'s `@names` belong to, as the directory would answer.
    fn named(&self, body: &str) -> Named {
        mentioned_names(body)
            .into_iter()
            .filter_map(|name| Some((name.clone(), *self.directory.get(&name)?)))
            .collect()
    }

    fn counted(&self, events: usize) {
        self.tally
            .events
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Claims user `index`'s name and registers the account, as `register` does but
    /// without opening a session.
    async fn register(&self, index: usize) -> anyhow::Result<()> {
        let person = &self.people[index];
        let username = &self.usernames[index];
        let plan = &self.plan.users[index];
        let meta = CommandMeta::new(None, self.clock.now());
        let claims =
            UsernameClaims::new(username.as_str(), self.keys.name_digest(username.as_str()));
        let claimed = self
            .names
            .execute(
                &claims.current,
                NameCommand::Claim {
                    name: claims.key,
                    owner_id: person.user_id,
                    abandoned_by: None,
                    at: meta.at,
                },
                &meta,
            )
            .await;
        match claimed {
            Ok(committed) => self.counted(committed.events.len()),
            Err(AggregateError::UserError(NameError::Taken)) => {
                anyhow::bail!("{}", taken(self.plan.options.seed))
            }
            Err(error) => return Err(error).with_context(|| format!("cannot claim {username}")),
        }
        let meta = CommandMeta {
            actor_id: Some(person.user_id),
            ..meta
        };
        let registered = self
            .users
            .execute(
                &person.user_id.to_string(),
                UserCommand::Register {
                    user_id: person.user_id,
                    username: username.as_str().to_owned(),
                    password: PASSWORD.to_owned(),
                    display_name: plan.display_name.clone(),
                    session: None,
                    at: meta.at,
                },
                &meta,
            )
            .await
            .with_context(|| format!("cannot register {username}"))?;
        self.counted(registered.events.len());
        self.tally.users.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Creates conversation `index` and writes its history.
    async fn converse(&self, index: usize) -> anyhow::Result<()> {
        let plan = &self.plan.conversations[index];
        let mut writer = Writer {
            seeder: self,
            id: Uuid::now_v7(),
            state: Conversation::default(),
            rng: StdRng::seed_from_u64(plan.seed),
            recent: VecDeque::with_capacity(RECENT),
            read: BTreeMap::new(),
            owner: None,
        };
        writer.create(&plan.shape).await?;
        writer.settle_in().await?;
        writer.talk(plan.messages).await
    }
}

/// A message still on screen.
struct Recent {
    posted: PostedMessage,
    /// The body now (after edits).
    body: String,
    /// The thread it belongs to: the message replied to by every reply in it.
    root: ReplyTarget,
    deleted: bool,
}

/// One conversation being written, by one task.
struct Writer<'a> {
    seeder: &'a Seeder,
    id: Uuid,
    /// The conversation as its events left it: only this writer appends to it.
    state: Conversation,
    rng: StdRng,
    recent: VecDeque<Recent>,
    /// Each member's read marker, as the read model will hold it.
    read: BTreeMap<Uuid, u64>,
    /// Who moderates a group or channel.
    owner: Option<Uuid>,
}

impl Writer<'_> {
    fn person(&self, index: usize) -> MemberRef {
        self.seeder.people[index].clone()
    }

    async fn conversation(
        &mut self,
        meta: &CommandMeta,
        command: ConversationCommand,
    ) -> anyhow::Result<Vec<ConversationEvent>> {
        let committed = self
            .seeder
            .conversations
            .execute(&self.id.to_string(), (self.id, command), meta)
            .await
            .with_context(|| format!("conversation {}", self.id))?;
        self.seeder.counted(committed.events.len());
        let events: Vec<ConversationEvent> = committed
            .events
            .into_iter()
            .map(|envelope| envelope.payload)
            .collect();
        for event in &events {
            self.state.apply(event.clone());
        }
        Ok(events)
    }

    async fn message(&self, meta: &CommandMeta, command: MessageCommand) -> anyhow::Result<()> {
        let message_id = match &command {
            MessageCommand::Edit { posted, .. }
            | MessageCommand::Delete { posted, .. }
            | MessageCommand::AddReaction { posted, .. }
            | MessageCommand::RemoveReaction { posted, .. } => posted.message_id,
        };
        let committed = self
            .seeder
            .messages
            .execute(&message_id.to_string(), command, meta)
            .await
            .with_context(|| format!("message {message_id}"))?;
        self.seeder.counted(committed.events.len());
        Ok(())
    }

    async fn member(
        &self,
        meta: &CommandMeta,
        user_id: Uuid,
        command: MemberCommand,
    ) -> anyhow::Result<()> {
        let committed = self
            .seeder
            .members
            .execute(&member_state_id(self.id, user_id), command, meta)
            .await
            .with_context(|| format!("member {user_id} of {}", self.id))?;
        self.seeder.counted(committed.events.len());
        Ok(())
    }

    async fn create(&mut self, shape: &Shape) -> anyhow::Result<()> {
        match shape {
            Shape::Direct { a, b } => {
                let (creator, other) = (self.person(*a), self.person(*b));
                self.id = direct_conversation_id(creator.user_id, other.user_id);
                let meta = self.seeder.meta(creator.user_id);
                let at = meta.at;
                self.conversation(
                    &meta,
                    ConversationCommand::CreateDirect { creator, other, at },
                )
                .await?;
            }
            Shape::Group {
                creator,
                members,
                title,
                late,
            } => {
                let creator = self.person(*creator);
                self.owner = Some(creator.user_id);
                let meta = self.seeder.meta(creator.user_id);
                let command = ConversationCommand::CreateGroup {
                    creator: creator.clone(),
                    title: title.clone(),
                    members: members.iter().map(|&i| self.person(i)).collect(),
                    at: meta.at,
                };
                self.conversation(&meta, command).await?;
                if self.rng.random_bool(0.3) {
                    let meta = self.seeder.meta(creator.user_id);
                    let command = ConversationCommand::Update {
                        actor_id: creator.user_id,
                        title: None,
                        description: Some(text::sentence(&mut self.rng)),
                        at: meta.at,
                    };
                    self.conversation(&meta, command).await?;
                }
                if let Some(late) = late {
                    let late = self.person(*late);
                    self.invite(creator.user_id, late, true).await?;
                }
            }
            Shape::Channel {
                creator,
                name,
                slug,
                description,
                public,
                others,
            } => {
                let creator = self.person(*creator);
                self.owner = Some(creator.user_id);
                let slug = Slug::parse(slug, "slug")?;
                let meta = self.seeder.meta(creator.user_id);
                let claim = self
                    .seeder
                    .names
                    .execute(
                        &slug_claim(slug.as_str()),
                        NameCommand::Claim {
                            name: slug.as_str().to_owned(),
                            owner_id: self.id,
                            abandoned_by: None,
                            at: meta.at,
                        },
                        &meta,
                    )
                    .await;
                match claim {
                    Ok(committed) => self.seeder.counted(committed.events.len()),
                    Err(AggregateError::UserError(NameError::Taken)) => anyhow::bail!(
                        "the channel slug {slug:?} is taken: {}",
                        taken(self.seeder.plan.options.seed)
                    ),
                    Err(error) => return Err(error).context("cannot claim a channel slug"),
                }
                let visibility = if *public {
                    Visibility::Public
                } else {
                    Visibility::Private
                };
                let command = ConversationCommand::CreateChannel {
                    creator: creator.clone(),
                    name: name.clone(),
                    slug,
                    description: description.clone(),
                    visibility,
                    at: meta.at,
                };
                self.conversation(&meta, command).await?;
                for &other in others {
                    let user = self.person(other);
                    if *public {
                        let meta = self.seeder.meta(user.user_id);
                        let at = meta.at;
                        self.conversation(&meta, ConversationCommand::Join { user, at })
                            .await?;
                    } else {
                        // Now and then an invitation is turned down.
                        let accept = self.rng.random_bool(0.9);
                        self.invite(creator.user_id, user, accept).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn invite(
        &mut self,
        inviter: Uuid,
        invitee: MemberRef,
        accept: bool,
    ) -> anyhow::Result<()> {
        let meta = self.seeder.meta(inviter);
        let invitation_id = Uuid::now_v7();
        let command = ConversationCommand::Invite {
            invitation_id,
            inviter_id: inviter,
            invitee: invitee.clone(),
            at: meta.at,
        };
        self.conversation(&meta, command).await?;
        let meta = self.seeder.meta(invitee.user_id);
        let command = if accept {
            ConversationCommand::AcceptInvitation {
                invitation_id,
                user: invitee,
                at: meta.at,
            }
        } else {
            ConversationCommand::DeclineInvitation {
                invitation_id,
                user_id: invitee.user_id,
                at: meta.at,
            }
        };
        self.conversation(&meta, command).await?;
        Ok(())
    }

    /// Some members turn notifications down.
    async fn settle_in(&mut self) -> anyhow::Result<()> {
        let members: Vec<Uuid> = self.state.members.keys().copied().collect();
        for user_id in members {
            if !self.rng.random_bool(0.15) {
                continue;
            }
            let level = if self.rng.random_bool(0.7) {
                NotificationLevel::Mentions
            } else {
                NotificationLevel::None
            };
            let meta = self.seeder.meta(user_id);
            let command = MemberCommand::SetNotificationLevel {
                conversation_id: self.id,
                user_id,
                level,
                at: meta.at,
            };
            self.member(&meta, user_id, command).await?;
        }
        Ok(())
    }

    /// A recent message that is not deleted, among the last `within`.
    fn pick_recent(&mut self, within: usize) -> Option<usize> {
        let len = self.recent.len();
        let candidates: Vec<usize> = (len.saturating_sub(within)..len)
            .filter(|&i| !self.recent[i].deleted)
            .collect();
        candidates.choose(&mut self.rng).copied()
    }

    fn actor(&self, user_id: Uuid, posted: &PostedMessage, at: time::OffsetDateTime) -> Actor {
        Actor::in_conversation(&self.state, user_id, posted.author_id, at)
    }

    /// Posts `count` messages, with what people do around them.
    async fn talk(&mut self, count: u64) -> anyhow::Result<()> {
        let members: Vec<Uuid> = self.state.members.keys().copied().collect();
        if members.is_empty() {
            return Ok(());
        }
        let max_chars = self.seeder.services.max_body_chars;
        for _ in 0..count {
            // A few members do most of the talking.
            let skewed = self.rng.random::<f64>().powf(1.6);
            let author = members[((skewed * members.len() as f64) as usize).min(members.len() - 1)];
            let reply_to = if self.rng.random_bool(0.15) {
                self.pick_recent(10).map(|i| self.recent[i].root.clone())
            } else {
                None
            };
            let others: Vec<Uuid> = members.iter().copied().filter(|&m| m != author).collect();
            let mention = match others.choose(&mut self.rng) {
                Some(other) if self.rng.random_bool(0.12) => self
                    .seeder
                    .username_of
                    .get(other)
                    .map(|name| name.as_str().to_owned()),
                _ => None,
            };
            let body = text::message(&mut self.rng, mention.as_deref(), reply_to.is_some());
            let body: String = body.chars().take(max_chars).collect();
            let meta = self.seeder.meta(author);
            let message_id = Uuid::now_v7();
            let named = self.seeder.named(&body);
            let command = ConversationCommand::PostMessage {
                message_id,
                author_id: author,
                body,
                reply_to: reply_to.clone(),
                client_message_id: None,
                attachment_ids: Vec::new(),
                named,
                at: meta.at,
            };
            let events = self.conversation(&meta, command).await?;
            let Some((seq, body, mentions)) = events.into_iter().find_map(|event| match event {
                ConversationEvent::MessagePosted {
                    seq,
                    body,
                    mentions,
                    ..
                } => Some((seq, body, mentions)),
                _ => None,
            }) else {
                anyhow::bail!("posting to {} recorded no message", self.id);
            };
            self.seeder.tally.messages.fetch_add(1, Ordering::Relaxed);
            // Posting moves the author's own read marker.
            self.read.insert(author, seq);
            let posted = PostedMessage {
                message_id,
                conversation_id: self.id,
                author_id: author,
                seq,
                body: body.clone(),
                mentions: mentions.into_iter().collect(),
                posted_at: Some(meta.at),
            };
            let root = reply_to.unwrap_or(ReplyTarget {
                message_id,
                conversation_id: self.id,
                author_id: author,
            });
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(Recent {
                posted,
                body,
                root,
                deleted: false,
            });
            self.around(&members, author, seq).await?;
        }
        Ok(())
    }

    /// What happens after a post: reactions, an edit or deletion, reading.
    async fn around(&mut self, members: &[Uuid], author: Uuid, seq: u64) -> anyhow::Result<()> {
        let newest = self.recent.len() - 1;
        if members.len() > 1 && self.rng.random_bool(0.25) {
            let target = if self.rng.random_bool(0.7) {
                Some(newest)
            } else {
                self.pick_recent(RECENT)
            };
            if let Some(target) = target {
                let reactors = self.rng.random_range(1..=members.len().min(4) - 1);
                for _ in 0..reactors {
                    self.react(members, target).await?;
                }
            }
        }
        if self.rng.random_bool(0.06) {
            self.edit(newest).await?;
        }
        if self.rng.random_bool(0.03) {
            self.delete(newest, author).await?;
        } else if let Some(owner) = self.owner {
            // Now and then a moderator removes someone else's message.
            if author != owner && self.rng.random_bool(0.005) {
                self.delete(newest, owner).await?;
            }
        }
        if members.len() > 1 && self.rng.random_bool(0.3) {
            let reader = *members.choose(&mut self.rng).unwrap_or(&author);
            let current = self.read.get(&reader).copied().unwrap_or_default();
            let message_id = self.recent[newest].posted.message_id;
            let meta = self.seeder.meta(reader);
            let command = MemberCommand::MarkRead {
                conversation_id: self.id,
                user_id: reader,
                message_id,
                seq,
                current_seq: current,
                at: meta.at,
            };
            self.member(&meta, reader, command).await?;
            self.read.insert(reader, current.max(seq));
        }
        if self.rng.random_bool(0.01) {
            if let Some(target) = self.pick_recent(RECENT) {
                let reader = *members.choose(&mut self.rng).unwrap_or(&author);
                let posted = &self.recent[target].posted;
                let (message_id, target_seq) = (posted.message_id, posted.seq);
                let meta = self.seeder.meta(reader);
                let command = MemberCommand::MarkUnread {
                    conversation_id: self.id,
                    user_id: reader,
                    message_id,
                    seq: target_seq,
                    at: meta.at,
                };
                self.member(&meta, reader, command).await?;
                self.read.insert(reader, target_seq.saturating_sub(1));
            }
        }
        Ok(())
    }

    async fn react(&mut self, members: &[Uuid], target: usize) -> anyhow::Result<()> {
        let posted = self.recent[target].posted.clone();
        let Some(&reactor) = members.choose(&mut self.rng) else {
            return Ok(());
        };
        let emoji = text::EMOJI.choose(&mut self.rng).copied().unwrap_or("👍");
        let meta = self.seeder.meta(reactor);
        let command = MessageCommand::AddReaction {
            posted: posted.clone(),
            actor: self.actor(reactor, &posted, meta.at),
            emoji: emoji.to_owned(),
            at: meta.at,
        };
        self.message(&meta, command).await?;
        // Second thoughts.
        if self.rng.random_bool(0.05) {
            let meta = self.seeder.meta(reactor);
            let command = MessageCommand::RemoveReaction {
                actor: self.actor(reactor, &posted, meta.at),
                posted,
                emoji: emoji.to_owned(),
                at: meta.at,
            };
            self.message(&meta, command).await?;
        }
        Ok(())
    }

    /// The author fixes or adds to their message.
    async fn edit(&mut self, target: usize) -> anyhow::Result<()> {
        let posted = self.recent[target].posted.clone();
        let mention = if self.rng.random_bool(0.2) {
            let others: Vec<String> = self
                .state
                .members
                .keys()
                .filter(|id| **id != posted.author_id)
                .filter_map(|id| self.seeder.username_of.get(id))
                .map(|name| name.as_str().to_owned())
                .collect();
            others.choose(&mut self.rng).cloned()
        } else {
            None
        };
        let addition = text::addendum(&mut self.rng, mention.as_deref());
        let body: String = format!("{} {addition}", self.recent[target].body)
            .chars()
            .take(self.seeder.services.max_body_chars)
            .collect();
        let meta = self.seeder.meta(posted.author_id);
        let command = MessageCommand::Edit {
            actor: self.actor(posted.author_id, &posted, meta.at),
            posted,
            body: body.clone(),
            max_body_chars: self.seeder.services.max_body_chars,
            named: self.seeder.named(&body),
            at: meta.at,
        };
        self.message(&meta, command).await?;
        self.recent[target].body = body;
        Ok(())
    }

    /// The author, or a moderator with a reason, deletes a message.
    async fn delete(&mut self, target: usize, by: Uuid) -> anyhow::Result<()> {
        let posted = self.recent[target].posted.clone();
        let reason = (by != posted.author_id).then(|| "off-topic".to_owned());
        let meta = self.seeder.meta(by);
        let command = MessageCommand::Delete {
            actor: self.actor(by, &posted, meta.at),
            posted,
            reason,
            at: meta.at,
        };
        self.message(&meta, command).await?;
        self.recent[target].deleted = true;
        Ok(())
    }
}

/// Words for names and messages.
mod text {
    use rand::rngs::StdRng;
    use rand::seq::IndexedRandom as _;
    use rand::Rng as _;

    /// At most eight letters each, so usernames fit in 32 characters.
    pub const FIRST_NAMES: &[&str] = &[
        "ada", "alan", "grace", "linus", "barbara", "dennis", "margaret", "ken", "radia", "edsger",
        "frances", "donald", "hedy", "tim", "annie", "john", "katie", "guido", "sophie", "bjarne",
        "carol", "james", "joan", "niklaus", "adele", "leslie", "mary", "brian", "evelyn", "robin",
        "jean", "peter", "lynn", "yukihiro", "shafi", "whit", "sally", "ivan", "lois", "rob",
    ];
    pub const SURNAMES: &[&str] = &[
        "Lovelace",
        "Turing",
        "Hopper",
        "Torvalds",
        "Liskov",
        "Ritchie",
        "Hamilton",
        "Thompson",
        "Perlman",
        "Dijkstra",
        "Allen",
        "Knuth",
        "Lamarr",
        "Berners-Lee",
        "Easley",
        "McCarthy",
        "Bouman",
        "van Rossum",
        "Wilson",
        "Stroustrup",
        "Shaw",
        "Gosling",
        "Clarke",
        "Wirth",
        "Goldberg",
        "Lamport",
        "Keller",
        "Kernighan",
    ];
    pub const CHANNEL_TOPICS: &[&str] = &[
        "general",
        "random",
        "engineering",
        "design",
        "announcements",
        "help",
        "music",
        "pets",
        "books",
        "travel",
        "food",
        "releases",
        "support",
        "ops",
        "hiring",
    ];
    const GROUP_WORDS: (&[&str], &[&str]) = (
        &[
            "Weekend", "Project", "Friday", "Morning", "Secret", "Tiny", "Quiet", "Late",
            "Rooftop", "Garden",
        ],
        &[
            "Hikers",
            "Falcon",
            "Book Club",
            "Lunch Crew",
            "Planning",
            "Band",
            "Runners",
            "Gamers",
            "Trip",
            "Standup",
        ],
    );
    const TOPICS: &[&str] = &[
        "the release",
        "the new onboarding flow",
        "Friday's demo",
        "the offsite",
        "the budget",
        "lunch",
        "the migration",
        "the quarterly report",
        "the search bug",
        "the design review",
        "the roadmap",
        "the hiring plan",
        "the coffee machine",
        "the weekend",
        "the conference talk",
        "the API docs",
        "the flaky test",
        "the dashboard",
        "the invoice",
        "the playlist",
    ];
    const DAYS: &[&str] = &[
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "tomorrow",
        "next week",
        "after lunch",
        "tonight",
    ];
    const OPENERS: &[&str] = &[
        "",
        "",
        "",
        "Hey all,",
        "Quick question:",
        "FYI",
        "Morning!",
        "Heads up:",
        "So",
        "Honestly,",
        "Update:",
        "Hmm,",
    ];
    const SENTENCES: &[&str] = &[
        "has anyone looked at {t} yet?",
        "I pushed a fix for {t}, can someone review?",
        "let's talk about {t} on {d}.",
        "I think {t} needs another {n} days.",
        "{t} is done 🎉",
        "can we move {t} to {d}?",
        "who owns {t}?",
        "I left some notes on {t}.",
        "I'll take care of {t}.",
        "not sure about {t}, let's discuss {d}.",
        "{t} looks great so far.",
        "running {n} minutes late, sorry!",
        "does {d} work for everyone?",
        "I can't make it {d}.",
        "reminder: {t} is due {d}.",
        "who's in for {t}?",
        "just saw the numbers for {t} 👀",
        "I'm out {d}, ping me if {t} breaks.",
    ];
    const REPLIES: &[&str] = &[
        "+1, agreed.",
        "sounds good to me.",
        "thanks! that helps a lot.",
        "good point.",
        "on it.",
        "done ✅",
        "I can help with that.",
        "same here.",
        "lol",
        "makes sense.",
        "let me check and get back to you.",
        "works for me.",
    ];
    pub const EMOJI: &[&str] = &[
        "👍", "❤️", "😂", "🎉", "👀", "🙏", "🔥", "✅", "😮", ":shipit:", ":+1:",
    ];

    pub fn capitalized(word: &str) -> String {
        let mut chars = word.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    fn pick(rng: &mut StdRng, words: &[&'static str]) -> &'static str {
        words.choose(rng).copied().unwrap_or_default()
    }

    /// A sentence as it reads after an opener such as "Heads up:".
    fn clause(rng: &mut StdRng) -> String {
        pick(rng, SENTENCES)
            .replace("{t}", pick(rng, TOPICS))
            .replace("{d}", pick(rng, DAYS))
            .replace("{n}", &rng.random_range(2..=30).to_string())
    }

    pub fn sentence(rng: &mut StdRng) -> String {
        capitalized(&clause(rng))
    }

    pub fn group_title(rng: &mut StdRng) -> String {
        format!("{} {}", pick(rng, GROUP_WORDS.0), pick(rng, GROUP_WORDS.1))
    }

    /// A message body: a reply is usually short; anything may mention someone.
    pub fn message(rng: &mut StdRng, mention: Option<&str>, reply: bool) -> String {
        let mut body = if reply && rng.random_bool(0.6) {
            capitalized(pick(rng, REPLIES))
        } else {
            let opener = pick(rng, OPENERS);
            let mut text = if opener.is_empty() || opener.ends_with('!') {
                format!("{opener} {}", sentence(rng))
            } else {
                format!("{opener} {}", clause(rng))
            };
            if rng.random_bool(0.25) {
                text = format!("{text} {}", sentence(rng));
            }
            text.trim_start().to_owned()
        };
        if let Some(name) = mention {
            body = if rng.random_bool(0.5) {
                format!("@{name} {body}")
            } else {
                format!("{body} cc @{name}")
            };
        }
        body
    }

    /// What an edit adds to a message.
    pub fn addendum(rng: &mut StdRng, mention: Option<&str>) -> String {
        let text = match rng.random_range(0..3) {
            0 => "(edit: typo)".to_owned(),
            1 => format!("Edit: {}", sentence(rng)),
            _ => "(updated)".to_owned(),
        };
        match mention {
            Some(name) => format!("{text} cc @{name}"),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(users: u32, conversations: u32, messages: u64) -> Options {
        Options {
            users,
            conversations,
            messages,
            seed: 7,
        }
    }

    #[test]
    fn the_same_seed_plans_the_same_history() {
        let first = Plan::new(options(50, 40, 5_000)).expect("plan");
        assert_eq!(first, Plan::new(options(50, 40, 5_000)).expect("plan"));
        let other = Plan::new(Options {
            seed: 8,
            ..options(50, 40, 5_000)
        })
        .expect("plan");
        assert_ne!(first, other);
    }

    #[test]
    fn messages_add_up_and_every_kind_is_there() {
        for (users, conversations, messages) in
            [(5, 4, 200), (3, 2, 1), (1_000, 2_000, 200_000), (4, 7, 0)]
        {
            let plan = Plan::new(options(users, conversations, messages)).expect("plan");
            assert_eq!(plan.conversations.len(), conversations as usize);
            let total: u64 = plan.conversations.iter().map(|c| c.messages).sum();
            assert_eq!(total, messages);
        }
        let plan = Plan::new(options(5, 4, 200)).expect("plan");
        let kinds: HashSet<&str> = plan.conversations.iter().map(|c| c.shape.kind()).collect();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
    }

    #[test]
    fn direct_conversations_never_repeat_a_pair_and_groups_need_three() {
        let plan = Plan::new(options(4, 300, 0)).expect("plan");
        let mut pairs = HashSet::new();
        for conversation in &plan.conversations {
            match &conversation.shape {
                Shape::Direct { a, b } => {
                    assert_ne!(a, b);
                    assert!(pairs.insert((*a.min(b), *a.max(b))));
                }
                Shape::Group {
                    creator,
                    members,
                    late,
                    ..
                } => {
                    assert!(members.len() >= 2);
                    assert!(!members.contains(creator));
                    assert!(late.is_none_or(|late| late != *creator && !members.contains(&late)));
                }
                Shape::Channel {
                    creator,
                    others,
                    slug,
                    ..
                } => {
                    assert!(!others.contains(creator));
                    assert!(Slug::parse(slug, "slug").is_ok(), "{slug}");
                }
            }
        }
    }

    #[test]
    fn usernames_are_valid_unique_and_name_the_seed() {
        let longest = username(u64::MAX, MAX_USERS as usize - 1);
        assert!(Username::parse(&longest, "username").is_ok(), "{longest}");
        assert_eq!(username(7, 0), "ada1_s7");
        let plan = Plan::new(options(200, 1, 0)).expect("plan");
        let names: HashSet<&str> = plan.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names.len(), 200);
        for user in &plan.users {
            assert!(Username::parse(&user.username, "username").is_ok());
        }
    }

    #[test]
    fn impossible_requests_are_refused() {
        assert_eq!(Plan::new(options(0, 1, 1)), Err(PlanError::NoUsers));
        assert_eq!(
            Plan::new(options(1, 0, 5)),
            Err(PlanError::NowhereToPost(5))
        );
        assert!(matches!(
            Plan::new(options(1, 1, 0)),
            Err(PlanError::TooFewUsers { needed: 2, .. })
        ));
        assert!(matches!(
            Plan::new(options(2, 2, 0)),
            Err(PlanError::TooFewUsers { needed: 3, .. })
        ));
        assert!(Plan::new(options(MAX_USERS + 1, 1, 0)).is_err());
        assert!(Plan::new(options(3, 2, 10)).is_ok());
        assert!(Plan::new(options(1, 0, 0)).is_ok());
    }
}
