//! `deliveries`: the most deliveries per second one node sustains. `--conversations`
//! public channels, each with `--subscribers` sockets and one sender posting closed
//! loop; deliveries per second are the frames received per second over all sockets.
//! A node that cannot keep up shows as latency growing over the timeline, and as
//! subscriptions ended with `RESUME_REQUIRED` (socket failures).

use std::sync::Arc;

use serde::Serialize;

use super::live::{setup, Fleet, Pace};
use super::{begin_phases, run_prefix, Common, Timing};
use crate::client::Api;
use crate::report::{Figures, Report};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: Timing,
    /// Channels, each with a sender of its own.
    #[arg(long, default_value_t = 10)]
    pub conversations: usize,
    /// Subscribed sockets per channel.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Users the sockets are spread over; the server must allow
    /// conversations × subscribers / users connections per user.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Registrations in flight at once while setting up.
    #[arg(long, default_value_t = 8)]
    pub register_concurrency: usize,
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let api = Arc::new(Api::new(&args.common.url)?);
    let monitor = args.common.rss_monitor()?;
    let conversations = args.conversations.max(1);
    let subscribers = args.subscribers.max(1);
    let (channels, listeners) = setup(
        &api,
        &run_prefix(),
        conversations,
        args.users.min(conversations * subscribers),
        args.register_concurrency,
    )
    .await?;
    let mut phases = begin_phases(monitor)?;
    let fleet = Fleet::open(&api, &channels, &listeners, subscribers).await?;
    fleet.until_live(&api, &channels).await?;
    eprintln!(
        "all {} subscribed; sending for {} s ({} s warm-up)…",
        conversations * subscribers,
        args.timing.duration + args.timing.warmup,
        args.timing.warmup
    );
    let outcome = fleet
        .load(
            &api,
            &channels,
            Pace::ClosedLoop,
            args.timing.warmup(),
            args.timing.duration(),
        )
        .await?;
    if let Some(phases) = &mut phases {
        phases.end()?;
    }
    let mut errors = fleet.take_failures();
    fleet.close().await;

    let mut figures = Figures::default();
    figures.add("conversations", conversations as f64, "count");
    figures.add("sockets", (conversations * subscribers) as f64, "count");
    outcome.add_figures(&mut figures, None);
    errors.extend(outcome.send_errors);
    let rss = match phases {
        Some(phases) => phases.finish(args.common.idle(), &mut figures).await?,
        None => Vec::new(),
    };
    Ok(Report {
        scenario: "deliveries",
        description: format!(
            "{conversations} channels × {subscribers} sockets over {} users, closed-loop senders, {} s measured",
            listeners.len(),
            args.timing.duration
        ),
        config: serde_json::to_value(&args)?,
        figures,
        errors,
        rss,
        timeline: outcome.deliveries.timeline(),
    })
}
