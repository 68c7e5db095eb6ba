//! `fanout`: one public channel, one sender posting every `--interval-ms`, and
//! `--subscribers` sockets receiving each message. Reports delivery latency over every
//! (socket, message) pair and the server's memory per subscribed socket; with
//! `--compare-baseline`, first the same load with one subscriber, and the figures as
//! ratios to it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::live::{setup, Fleet, Pace};
use super::{begin_phases, run_prefix, Common, Timing};
use crate::client::Api;
use crate::report::{Figures, Report};
use crate::rss::Phases;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: Timing,
    /// Subscribed sockets, one subscription each.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Users the sockets are spread over; the server must allow
    /// subscribers / users connections per user (--max-connections-per-user).
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Milliseconds between two messages.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// First run the same load with one subscriber, and report delivery latency as a
    /// ratio to it.
    #[arg(long)]
    pub compare_baseline: bool,
    /// Registrations in flight at once while setting up.
    #[arg(long, default_value_t = 8)]
    pub register_concurrency: usize,
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let api = Arc::new(Api::new(&args.common.url)?);
    let monitor = args.common.rss_monitor()?;
    let subscribers = args.subscribers.max(1);
    let pace = Pace::Every(Duration::from_millis(args.interval_ms.max(1)));
    let warmup = args.timing.warmup();
    let duration = args.timing.duration();
    let (conversations, listeners) = setup(
        &api,
        &run_prefix(),
        1,
        args.users.min(subscribers),
        args.register_concurrency,
    )
    .await?;
    let mut figures = Figures::default();
    figures.add("subscribers", subscribers as f64, "count");
    let mut errors = std::collections::BTreeMap::new();

    let baseline = if args.compare_baseline {
        eprintln!("baseline: one subscriber…");
        let fleet = Fleet::open(&api, &conversations, &listeners, 1).await?;
        fleet.until_live(&api, &conversations).await?;
        let outcome = fleet
            .load(&api, &conversations, pace, warmup, duration)
            .await?;
        for (kind, count) in fleet.take_failures().into_iter().chain(outcome.send_errors) {
            *errors.entry(format!("baseline {kind}")).or_default() += count;
        }
        fleet.close().await;
        figures.add_percentiles("baseline_delivery", outcome.deliveries.overall(), None);
        Some("baseline_delivery")
    } else {
        None
    };

    let mut phases = begin_phases(monitor)?;
    // Memory per socket is the growth from a fifth of the sockets to all of them, not
    // from none: the server's RSS before any socket also holds what the set-up freed
    // and its allocator has not returned yet, which it returns (or not) while sockets
    // open, and which would count for or against them.
    let first = if subscribers >= 5 { subscribers / 5 } else { 0 };
    let mut fleet = Fleet::open(&api, &conversations, &listeners, first).await?;
    let mut part = None;
    if first > 0 {
        fleet.until_live(&api, &conversations).await?;
        part = phases.as_ref().map(Phases::mark).transpose()?;
    }
    fleet
        .grow(&api, &conversations, &listeners, subscribers - first)
        .await?;
    fleet.until_live(&api, &conversations).await?;
    if let Some(phases) = &phases {
        let subscribed = phases.mark()?;
        let before = phases.before();
        figures.add("rss_before_sockets", before.kib as f64 / 1024.0, "MiB");
        figures.add("rss_subscribed", subscribed.kib as f64 / 1024.0, "MiB");
        let (from, opened) = match part {
            Some(part) => (part, subscribers - first),
            None => (before, subscribers),
        };
        let growth = subscribed.kib.saturating_sub(from.kib) as f64;
        figures.add("memory_per_socket", growth / opened as f64, "KiB");
    }
    eprintln!(
        "all {subscribers} subscribed; sending for {} s ({} s warm-up)…",
        args.timing.duration + args.timing.warmup,
        args.timing.warmup
    );
    let outcome = fleet
        .load(&api, &conversations, pace, warmup, duration)
        .await?;
    if let Some(phases) = &mut phases {
        phases.end()?;
    }
    errors.extend(fleet.take_failures());
    fleet.close().await;
    outcome.add_figures(&mut figures, baseline);
    errors.extend(outcome.send_errors);
    let rss = match phases {
        Some(phases) => phases.finish(args.common.idle(), &mut figures).await?,
        None => Vec::new(),
    };
    Ok(Report {
        scenario: "fanout",
        description: format!(
            "{subscribers} subscribers over {} users, one message every {} ms, {} s measured",
            listeners.len(),
            args.interval_ms,
            args.timing.duration
        ),
        config: serde_json::to_value(&args)?,
        figures,
        errors,
        rss,
        timeline: outcome.deliveries.timeline(),
    })
}
