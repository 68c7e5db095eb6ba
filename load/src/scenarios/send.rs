//! `send`: many users each posting into a group of their own, the write path alone.
//!
//! Closed loop by default: each sender posts its next message when the previous
//! `sendMessage` returns, so throughput is what the server sustains at that
//! concurrency. With `--rate` it is open loop: each sender's messages fall due on a
//! fixed schedule and latency counts from when a message was due, not when it went
//! out, so a stalled server shows as latency rather than as fewer, faster samples
//! (coordinated omission). A sender still has one request in flight at a time, as an
//! app would, so a sender behind schedule sends its overdue messages back to back; at
//! the end it stops, and what was due but never sent is reported as `not_sent`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;

use super::{begin_phases, run_prefix, Common, Tally, Timing};
use crate::ceiling;
use crate::client::{Api, Session};
use crate::report::{redacted, Figures, Report};
use crate::stats::{self, Recorder};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: Timing,
    /// Users sending, each into a group of its own.
    #[arg(long, default_value_t = 32)]
    pub senders: usize,
    /// Open loop at this many messages per second in total, spread evenly over the
    /// senders. Without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Registrations in flight at once while setting up (each is a slow password hash).
    #[arg(long, default_value_t = 8)]
    pub register_concurrency: usize,
    /// Before the load, measure the raw single-row INSERT ceiling on this database
    /// (the server's: postgres://… or sqlite://PATH) and report figures against it.
    #[arg(long)]
    #[serde(serialize_with = "redacted")]
    pub ceiling_db: Option<String>,
    /// How long the ceiling is measured.
    #[arg(long, default_value_t = 5)]
    pub ceiling_secs: u64,
}

/// When each sender's messages fall due.
#[derive(Clone, Copy)]
struct Schedule {
    measure_from: Instant,
    end: Instant,
    /// Open loop: the first due time and the interval; closed loop: none.
    pace: Option<(Instant, Duration)>,
}

struct Sender {
    api: Arc<Api>,
    session: Session,
    group: String,
    name: String,
    recorder: Arc<Mutex<Recorder>>,
    errors: Arc<Tally>,
    /// Open loop: messages that fell due but were not sent before the end.
    backlog: Arc<AtomicU64>,
}

impl Sender {
    async fn run(self, schedule: Schedule) {
        for n in 0_u32.. {
            let due = match schedule.pace {
                Some((first, interval)) => {
                    let due = first + interval * n;
                    tokio::time::sleep_until(due.into()).await;
                    due
                }
                None => Instant::now(),
            };
            if due >= schedule.end {
                return;
            }
            if let Some((_, interval)) = schedule.pace {
                if Instant::now() >= schedule.end {
                    // Due but never sent: how far behind the server left this sender.
                    let left = (schedule.end - due).as_secs_f64() / interval.as_secs_f64();
                    self.backlog
                        .fetch_add(left.ceil() as u64, Ordering::Relaxed);
                    return;
                }
            }
            let body = format!("load message {n}");
            let client_id = format!("{}-{n}", self.name);
            let result = self
                .api
                .send_message(&self.session.token, &self.group, &body, &client_id)
                .await;
            let done = Instant::now();
            match result {
                Ok(()) if due >= schedule.measure_from => {
                    if let Ok(mut recorder) = self.recorder.lock() {
                        recorder.record(done, done - due);
                    }
                }
                Ok(()) => {}
                Err(error) => self.errors.add(error.kind()),
            }
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let api = Arc::new(Api::new(&args.common.url)?);
    let monitor = args.common.rss_monitor()?;
    let senders = args.senders.max(1);
    let mut figures = Figures::default();
    let mut config = serde_json::to_value(&args)?;
    if let Some(url) = &args.ceiling_db {
        eprintln!(
            "measuring the database ceiling for {} s…",
            args.ceiling_secs
        );
        let ceiling = ceiling::measure(url, senders, args.ceiling_secs).await?;
        ceiling.add_figures(&mut figures);
        config["ceiling"] = ceiling.details;
    }

    let prefix = run_prefix();
    eprintln!("registering {senders} senders…");
    let sessions = api
        .register_many(&format!("{prefix}s"), senders, args.register_concurrency)
        .await?;
    let title = format!("{prefix} load");
    let groups: Vec<String> = futures::stream::iter(&sessions)
        .map(|session| api.create_group(&session.token, &title))
        .buffered(8)
        .try_collect()
        .await?;

    let mut phases = begin_phases(monitor)?;
    eprintln!(
        "sending for {} s ({} s warm-up)…",
        args.timing.duration + args.timing.warmup,
        args.timing.warmup
    );
    let start = Instant::now();
    let measure_from = start + args.timing.warmup();
    let end = measure_from + args.timing.duration();
    let recorder = Arc::new(Mutex::new(Recorder::new(
        measure_from,
        args.timing.duration().as_secs(),
    )));
    let errors = Arc::new(Tally::default());
    let backlog = Arc::new(AtomicU64::new(0));
    let interval = args
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(senders as f64 / rate));
    let tasks: Vec<_> = sessions
        .into_iter()
        .zip(groups)
        .enumerate()
        .map(|(i, (session, group))| {
            // Staggered, so the senders' due times interleave instead of coinciding.
            let pace =
                interval.map(|interval| (start + interval * i as u32 / senders as u32, interval));
            let sender = Sender {
                api: api.clone(),
                session,
                group,
                name: format!("{prefix}-{i}"),
                recorder: recorder.clone(),
                errors: errors.clone(),
                backlog: backlog.clone(),
            };
            tokio::spawn(sender.run(Schedule {
                measure_from,
                end,
                pace,
            }))
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    if let Some(phases) = &mut phases {
        phases.end()?;
    }

    let recorder = stats::take(&recorder)?;
    let seconds = args.timing.duration().as_secs_f64();
    if let Some(rate) = args.rate {
        figures.add("target_rate", rate, "msg/s");
    }
    // Completed within the measured seconds: in open loop, messages that fell due then
    // may complete later, or never be sent.
    figures.add_ratio(
        "throughput",
        recorder.in_window() as f64 / seconds,
        "msg/s",
        "ceiling_tx_per_s",
    );
    figures.add("messages", recorder.overall().len() as f64, "count");
    if args.rate.is_some() {
        figures.add("not_sent", backlog.load(Ordering::Relaxed) as f64, "count");
    }
    figures.add("errors", errors.total() as f64, "count");
    let ceiling = args.ceiling_db.as_ref().map(|_| "ceiling_commit");
    figures.add_percentiles("send", recorder.overall(), ceiling);
    let rss = match phases {
        Some(phases) => phases.finish(args.common.idle(), &mut figures).await?,
        None => Vec::new(),
    };
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} msg/s"),
        None => "closed loop".to_owned(),
    };
    Ok(Report {
        scenario: "send",
        description: format!(
            "{senders} senders, {mode}, {} s measured after {} s warm-up",
            args.timing.duration, args.timing.warmup
        ),
        config,
        figures,
        errors: errors.take(),
        rss,
        timeline: recorder.timeline(),
    })
}
