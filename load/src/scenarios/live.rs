//! Live delivery, shared by `fanout` and `deliveries`: public channels, each with one
//! sender and many graphql-transport-ws sockets subscribed to its `conversationEvents`.
//!
//! Sockets belong to a few listener users (a registration is a slow password hash, a
//! socket is cheap), one subscription per socket, since the server's cost is per
//! subscription. Every socket has its own reader task, which stamps a frame with
//! `Instant::now()` before parsing it. A message's body carries when its `sendMessage`
//! request went out, on this process's clock, so delivery latency is arrival minus
//! that moment, with no table of sends to look up. Readers keep counters, not frames.
//!
//! A subscription without a cursor starts at whatever is newest once the server has
//! set it up, which a client cannot observe, so warm-up messages are posted until every
//! socket has received one; only then does the load start.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::Tally;
use crate::client::{interpret, Api, Incoming, Session, Socket};
use crate::report::Figures;
use crate::stats::{self, Recorder};

/// Handshakes in flight at once; all at once would overflow the server's listen backlog.
const CONNECT_CONCURRENCY: usize = 32;
/// The server closes a graphql-transport-ws client that has sent nothing for 60 s, even
/// while it is receiving events.
const PING_EVERY: Duration = Duration::from_secs(20);
const LIVE_ATTEMPTS: usize = 30;
/// How long a warm-up message may go without a new socket receiving it before another
/// is posted.
const LIVE_IDLE: Duration = Duration::from_secs(2);
/// After the last send, how long deliveries may stall before the rest count as missed.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors needed besides the sockets: HTTP pool, runtime, stdio.
const FD_MARGIN: u64 = 64;

/// What a load message's body says: whether it is measured, its number among the
/// measured messages of its conversation, and when its request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    measured: bool,
    seq: u64,
    /// Microseconds since the fleet's clock started.
    issued_us: u64,
}

impl Stamp {
    fn body(self) -> String {
        let tag = if self.measured { "m" } else { "w" };
        format!("load {tag} {} {}", self.seq, self.issued_us)
    }

    fn parse(body: &str) -> Option<Self> {
        let mut words = body.strip_prefix("load ")?.split(' ');
        let measured = match words.next()? {
            "m" => true,
            "w" => false,
            _ => return None,
        };
        Some(Self {
            measured,
            seq: words.next()?.parse().ok()?,
            issued_us: words.next()?.parse().ok()?,
        })
    }
}

/// One channel and the user posting into it.
pub struct Conversation {
    pub id: String,
    pub sender: Session,
}

/// Registers one sender per conversation and `listeners` listeners; each sender creates
/// a public channel and every listener joins every channel.
pub async fn setup(
    api: &Api,
    prefix: &str,
    conversations: usize,
    listeners: usize,
    register_concurrency: usize,
) -> anyhow::Result<(Vec<Conversation>, Vec<Session>)> {
    eprintln!("registering {conversations} sender(s) and {listeners} listener(s)…",);
    let senders = api
        .register_many(&format!("{prefix}s"), conversations, register_concurrency)
        .await?;
    let listeners = api
        .register_many(
            &format!("{prefix}l"),
            listeners.max(1),
            register_concurrency,
        )
        .await?;
    let mut channels = Vec::with_capacity(conversations);
    for (index, sender) in senders.into_iter().enumerate() {
        let id = api
            .create_channel(&sender.token, &format!("{prefix}-{index}"))
            .await?;
        channels.push(Conversation { id, sender });
    }
    let joins = channels
        .iter()
        .flat_map(|channel| listeners.iter().map(move |listener| (channel, listener)));
    futures::stream::iter(joins)
        .map(|(channel, listener)| api.join_channel(&listener.token, &channel.id))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok((channels, listeners))
}

/// What the readers of one fleet share.
struct Shared {
    clock: Instant,
    /// Measured deliveries.
    recorder: Mutex<Recorder>,
    /// Sockets that have received at least one message.
    live: AtomicUsize,
    received: AtomicU64,
    /// Measured messages that arrived after a later one (or twice).
    reordered: AtomicU64,
    failures: Tally,
}

impl Shared {
    fn micros_since_clock(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.clock).as_micros()).unwrap_or(u64::MAX)
    }
}

/// How a conversation's sender paces its messages.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// One message every interval, or as soon as the previous one returned if that
    /// took longer.
    Every(Duration),
    /// The next message as soon as the previous one returned.
    ClosedLoop,
}

/// What one measured load produced.
pub struct Outcome {
    pub deliveries: Recorder,
    pub sends: Recorder,
    pub seconds: f64,
    /// Measured messages the server accepted.
    pub messages: u64,
    pub expected: u64,
    pub received: u64,
    pub reordered: u64,
    pub socket_failures: u64,
    /// Failed `sendMessage` calls by kind.
    pub send_errors: std::collections::BTreeMap<String, u64>,
}

impl Outcome {
    /// The delivery figures; with `baseline`, delivery percentiles as ratios to
    /// `{baseline}_p50` etc.
    pub fn add_figures(&self, figures: &mut Figures, baseline: Option<&str>) {
        figures.add("messages", self.messages as f64, "count");
        figures.add(
            "messages_per_s",
            self.messages as f64 / self.seconds,
            "msg/s",
        );
        figures.add(
            "deliveries_per_s",
            self.deliveries.in_window() as f64 / self.seconds,
            "1/s",
        );
        figures.add("deliveries", self.received as f64, "count");
        figures.add(
            "missed_deliveries",
            self.expected.saturating_sub(self.received) as f64,
            "count",
        );
        figures.add("reordered_deliveries", self.reordered as f64, "count");
        figures.add("socket_failures", self.socket_failures as f64, "count");
        let send_errors: u64 = self.send_errors.values().sum();
        figures.add("send_errors", send_errors as f64, "count");
        figures.add_percentiles("delivery", self.deliveries.overall(), baseline);
        figures.add_percentiles("send", self.sends.overall(), None);
    }
}

/// Every socket's reader, and how to stop them.
pub struct Fleet {
    /// Makes this fleet's `clientMessageId`s unique: the server answers a repeated one
    /// with the first message and posts nothing.
    nonce: String,
    shared: Arc<Shared>,
    size: usize,
    readers: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Opens `per_conversation` subscribed sockets on each conversation, spread over
    /// the listeners in turn.
    pub async fn open(
        api: &Api,
        conversations: &[Conversation],
        listeners: &[Session],
        per_conversation: usize,
    ) -> anyhow::Result<Self> {
        let clock = Instant::now();
        let shared = Arc::new(Shared {
            clock,
            recorder: Mutex::new(Recorder::new(clock, 0)),
            live: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            failures: Tally::default(),
        });
        let mut fleet = Self {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            shared,
            size: 0,
            readers: Vec::new(),
            stop: watch::channel(false).0,
        };
        fleet
            .grow(api, conversations, listeners, per_conversation)
            .await?;
        Ok(fleet)
    }

    /// Opens `per_conversation` more subscribed sockets on each conversation, spread
    /// over the listeners in turn after those already open.
    pub async fn grow(
        &mut self,
        api: &Api,
        conversations: &[Conversation],
        listeners: &[Session],
        per_conversation: usize,
    ) -> anyhow::Result<()> {
        let more = conversations.len() * per_conversation;
        let size = self.size + more;
        let needed = size as u64 + FD_MARGIN;
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).context("getrlimit")?;
        if soft < needed {
            bail!("{size} sockets need about {needed} open files and the limit is {soft}: raise the hard limit (ulimit -Hn)");
        }
        eprintln!("opening {more} subscribed sockets…");
        let plan = conversations.iter().flat_map(|conversation| {
            (0..per_conversation).map(move |socket| (conversation, socket))
        });
        let first = self.size;
        let mut sockets = futures::stream::iter(plan.enumerate())
            .map(|(index, (conversation, _))| {
                let listener = &listeners[(first + index) % listeners.len()];
                api.subscribe(&listener.token, &conversation.id)
            })
            .buffer_unordered(CONNECT_CONCURRENCY);
        self.readers.reserve(more);
        while let Some(socket) = sockets.next().await {
            let socket = socket.map_err(|error| {
                let hint = if format!("{error:#}").contains("4429") {
                    ": the server allows fewer sockets per user; start it with a higher \
                     --max-connections-per-user, or pass more --users"
                } else {
                    ""
                };
                error.context(format!("socket {} of {size}{hint}", self.readers.len() + 1))
            })?;
            let reader = read(socket, self.shared.clone(), self.stop.subscribe());
            self.readers.push(tokio::spawn(reader));
        }
        self.size = size;
        Ok(())
    }

    /// Posts warm-up messages into every conversation until every socket has received
    /// one; fails if a socket fails meanwhile or too many attempts pass.
    pub async fn until_live(
        &self,
        api: &Api,
        conversations: &[Conversation],
    ) -> anyhow::Result<()> {
        for attempt in 0..LIVE_ATTEMPTS {
            // Named by the fleet's size too: a fleet that grew warms up again, and a
            // repeated id with another body is refused.
            let client_message_id = format!("{}-live-{}-{attempt}", self.nonce, self.size);
            futures::future::try_join_all(conversations.iter().map(|conversation| {
                let client_message_id = &client_message_id;
                async move {
                    let stamp = Stamp {
                        measured: false,
                        seq: attempt as u64,
                        issued_us: self.shared.micros_since_clock(Instant::now()),
                    };
                    api.send_message(
                        &conversation.sender.token,
                        &conversation.id,
                        &stamp.body(),
                        client_message_id,
                    )
                    .await
                }
            }))
            .await
            .context("warm-up message")?;
            let mut seen = self.shared.live.load(Ordering::Relaxed);
            let mut last_progress = Instant::now();
            while last_progress.elapsed() < LIVE_IDLE {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let failures = self.shared.failures.total();
                if failures > 0 {
                    bail!(
                        "{failures} socket(s) failed before all were live: {:?}",
                        self.shared.failures.take()
                    );
                }
                let live = self.shared.live.load(Ordering::Relaxed);
                if live == self.size {
                    return Ok(());
                }
                if live > seen {
                    seen = live;
                    last_progress = Instant::now();
                }
            }
        }
        bail!(
            "after {LIVE_ATTEMPTS} warm-up messages only {} of {} subscriptions were live",
            self.shared.live.load(Ordering::Relaxed),
            self.size
        )
    }

    /// Sends into every conversation at `pace` for `warmup`, then measures for
    /// `duration`, then waits for the deliveries still on their way.
    pub async fn load(
        &self,
        api: &Arc<Api>,
        conversations: &[Conversation],
        pace: Pace,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + duration;
        let seconds = duration.as_secs();
        *self
            .shared
            .recorder
            .lock()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))? =
            Recorder::new(measure_from, seconds);
        let sends = Arc::new(Mutex::new(Recorder::new(measure_from, seconds)));
        let messages = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Tally::default());
        let senders: Vec<_> = conversations
            .iter()
            .enumerate()
            .map(|(index, conversation)| {
                let sender = Sender {
                    api: api.clone(),
                    token: conversation.sender.token.clone(),
                    conversation: conversation.id.clone(),
                    name: format!("{}-c{index}", self.nonce),
                    shared: self.shared.clone(),
                    sends: sends.clone(),
                    messages: messages.clone(),
                    errors: errors.clone(),
                };
                tokio::spawn(sender.run(pace, start, measure_from, end))
            })
            .collect();
        for sender in senders {
            sender.await.context("sender")?;
        }
        let messages = messages.load(Ordering::Relaxed);
        let per_conversation = (self.size / conversations.len().max(1)) as u64;
        let expected = messages * per_conversation;
        self.drain(expected).await;
        Ok(Outcome {
            deliveries: stats::take(&self.shared.recorder)?,
            sends: stats::take(&sends)?,
            seconds: duration.as_secs_f64(),
            messages,
            expected,
            received: self.shared.received.load(Ordering::Relaxed),
            reordered: self.shared.reordered.load(Ordering::Relaxed),
            socket_failures: self.shared.failures.total(),
            send_errors: errors.take(),
        })
    }

    /// Waits until `expected` deliveries arrived, or they stop arriving.
    async fn drain(&self, expected: u64) {
        let mut received = self.shared.received.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        while received < expected && last_progress.elapsed() < DRAIN_QUIET {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.shared.received.load(Ordering::Relaxed);
            if now > received {
                received = now;
                last_progress = Instant::now();
            }
        }
    }

    /// Socket failures by reason, so far.
    pub fn take_failures(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.failures.take()
    }

    /// Closes every socket with a close frame, as a client going away does, and waits
    /// a while for the readers to finish.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        for reader in self.readers {
            let abort = reader.abort_handle();
            if tokio::time::timeout_at(deadline, reader).await.is_err() {
                abort.abort();
            }
        }
    }
}

struct Sender {
    api: Arc<Api>,
    token: String,
    conversation: String,
    name: String,
    shared: Arc<Shared>,
    sends: Arc<Mutex<Recorder>>,
    messages: Arc<AtomicU64>,
    errors: Arc<Tally>,
}

impl Sender {
    async fn run(self, pace: Pace, start: Instant, measure_from: Instant, end: Instant) {
        let mut ticks = match pace {
            Pace::Every(interval) => {
                let mut ticks = tokio::time::interval_at(start.into(), interval);
                // A send slower than the interval delays the next one; a burst of
                // overdue messages would measure the burst, not the fan-out.
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(ticks)
            }
            Pace::ClosedLoop => None,
        };
        let mut seq = 0;
        for n in 0_u32.. {
            if let Some(ticks) = &mut ticks {
                ticks.tick().await;
            }
            let issued = Instant::now();
            if issued >= end {
                return;
            }
            let measured = issued >= measure_from;
            let stamp = Stamp {
                measured,
                seq: if measured { seq } else { u64::from(n) },
                issued_us: self.shared.micros_since_clock(issued),
            };
            let result = self
                .api
                .send_message(
                    &self.token,
                    &self.conversation,
                    &stamp.body(),
                    &format!("{}-{n}", self.name),
                )
                .await;
            let done = Instant::now();
            match result {
                Ok(()) if measured => {
                    self.messages.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut sends) = self.sends.lock() {
                        sends.record(done, done - issued);
                    }
                }
                Ok(()) => {}
                Err(error) => self.errors.add(format!("send: {}", error.kind())),
            }
            if measured {
                seq += 1;
            }
        }
    }
}

/// Reads one socket until told to stop or the server ends it.
async fn read(mut socket: Socket, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut live = false;
    let mut last_seq = None;
    let fail = |reason: String| shared.failures.add(format!("socket: {reason}"));
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = ping.tick() => {
                if let Err(error) = socket.send(Message::text(r#"{"type":"ping"}"#)).await {
                    return fail(format!("ping failed: {error}"));
                }
                continue;
            }
            _ = stop.changed() => {
                let _ = socket.close(None).await;
                return;
            }
        };
        // Before parsing: the figure is the server's and the network's, not ours.
        let at = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                let reason = close.map_or_else(
                    || "no code".to_owned(),
                    |close| format!("{} {}", u16::from(close.code), close.reason.as_str()),
                );
                return fail(format!("closed by the server: {reason}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return fail(error.to_string()),
            None => return fail("ended without a close frame".to_owned()),
        };
        match interpret(text.as_str()) {
            Incoming::Posted(body) => {
                let Some(stamp) = Stamp::parse(&body) else {
                    continue;
                };
                if !std::mem::replace(&mut live, true) {
                    shared.live.fetch_add(1, Ordering::Relaxed);
                }
                if !stamp.measured {
                    continue;
                }
                let issued = shared.clock + Duration::from_micros(stamp.issued_us);
                if let Ok(mut recorder) = shared.recorder.lock() {
                    recorder.record(at, at.saturating_duration_since(issued));
                }
                shared.received.fetch_add(1, Ordering::Relaxed);
                if last_seq.is_some_and(|last| stamp.seq <= last) {
                    shared.reordered.fetch_add(1, Ordering::Relaxed);
                }
                last_seq = Some(stamp.seq);
            }
            Incoming::Ping => {
                if let Err(error) = socket.send(Message::text(r#"{"type":"pong"}"#)).await {
                    return fail(format!("pong failed: {error}"));
                }
            }
            Incoming::Other => {}
            Incoming::Ended(reason) => return fail(reason),
        }
    }
}
